// libvirt's domain XML: the disks livecopy reads, the snapshot it asks for, and the
// persistent definition it corrects.

import FoundationXML
import Foundation
import LivecopyBackend

/// A disk as libvirt's domain XML records it.
struct LibvirtDisk: Sendable, Equatable {
    /// The target (`vda`): libvirt's name for the disk in its block APIs.
    let target: String
    /// The device alias (`ua-vda`, `virtio-disk0`): QEMU's id for the guest device.
    let alias: String?
    /// `disk`, `cdrom`, `floppy`, `lun`.
    let device: String
    /// `file`, `block`, `network`, `volume`, `dir`, `nvme`, `vhostuser`.
    let sourceType: String
    /// The active image's path (`file` sources), the device (`block`), nil otherwise.
    let source: String?
    /// The active image's format (`<driver type=…>`).
    let format: String?
    /// The backing chain below the active image, top first, as libvirt records it.
    let backing: [String]

    /// Why livecopy cannot copy this disk, or nil when it can: the recipe puts a qcow2
    /// file on top of a file image and later renames or deletes that file.
    var notCopyable: String? {
        switch sourceType {
        case "file":
            return source == nil ? "libvirt disk \(target) has no source file (no medium)" : nil
        case "block":
            return "libvirt disk \(target) is a block device (\(source ?? "?")); livecopy copies file-backed disks only, and would never rename or delete a device node"
        default:
            return "libvirt disk \(target) is a '\(sourceType)' disk; livecopy copies file-backed disks only"
        }
    }
}

enum LibvirtDomainXML {
    /// Every `<disk>` of a domain's XML.
    static func disks(_ xml: String) throws -> [LibvirtDisk] {
        let document = try XMLDocument(xmlString: xml)
        return try document.nodes(forXPath: "/domain/devices/disk").compactMap { node in
            guard let disk = node as? XMLElement, let target = disk.firstChild("target")?.value(of: "dev") else { return nil }
            let type = disk.value(of: "type") ?? "file"
            var backing: [String] = []
            var store = disk.firstChild("backingStore")
            while let current = store, let file = current.firstChild("source").flatMap({ $0.value(of: "file") ?? $0.value(of: "dev") }) {
                backing.append(file)
                store = current.firstChild("backingStore")
            }
            let source = disk.firstChild("source")
            return LibvirtDisk(
                target: target, alias: disk.firstChild("alias")?.value(of: "name"), device: disk.value(of: "device") ?? "disk",
                sourceType: type, source: source?.value(of: "file") ?? source?.value(of: "dev"),
                format: disk.firstChild("driver")?.value(of: "type"), backing: backing)
        }
    }

    /// The snapshot that puts each overlay (target → file) on its disk and leaves every
    /// other disk alone: a disk left out of the XML would be snapshotted anyway, under a
    /// generated name.
    static func snapshot(overlays: [String: String], disks: [LibvirtDisk]) -> String {
        let root = XMLElement(name: "domainsnapshot")
        let list = XMLElement(name: "disks")
        for disk in disks {
            let element = XMLElement(name: "disk")
            element.setAttribute("name", disk.target)
            if let file = overlays[disk.target] {
                element.setAttribute("snapshot", "external")
                element.setAttribute("type", "file")
                let driver = XMLElement(name: "driver")
                driver.setAttribute("type", "qcow2")
                let source = XMLElement(name: "source")
                source.setAttribute("file", file)
                element.addChild(driver)
                element.addChild(source)
            } else {
                element.setAttribute("snapshot", "no")
            }
            list.addChild(element)
        }
        root.addChild(list)
        return root.xmlString
    }

    /// The disk XML of a block copy's target: an existing file of `format`.
    static func copyTarget(file: String, format: String) -> String {
        let disk = XMLElement(name: "disk")
        disk.setAttribute("type", "file")
        let source = XMLElement(name: "source")
        source.setAttribute("file", file)
        let driver = XMLElement(name: "driver")
        driver.setAttribute("type", format)
        disk.addChild(source)
        disk.addChild(driver)
        return disk.xmlString
    }

    /// `definition` with disk `target`'s source replaced by `file` (format `format`) and
    /// its backing chain removed (libvirt reads the chain from the image again); nil when
    /// the definition has no such disk.
    static func redefining(_ definition: String, target: String, file: String, format: String) throws -> String? {
        let document = try XMLDocument(xmlString: definition)
        guard let disk = try document.nodes(forXPath: "/domain/devices/disk").compactMap({ $0 as? XMLElement })
            .first(where: { $0.firstChild("target")?.value(of: "dev") == target }) else { return nil }
        disk.setAttribute("type", "file")
        for old in disk.elements(forName: "backingStore") + disk.elements(forName: "source") {
            old.detach()
        }
        let source = XMLElement(name: "source")
        source.setAttribute("file", file)
        disk.insertChild(source, at: 0)
        if let driver = disk.firstChild("driver") { driver.setAttribute("type", format) }
        return document.xmlString
    }
}

extension XMLElement {
    func firstChild(_ name: String) -> XMLElement? { elements(forName: name).first }
    func value(of attribute: String) -> String? { self.attribute(forName: attribute)?.stringValue }
    func setAttribute(_ name: String, _ value: String) {
        if let existing = attribute(forName: name) {
            existing.stringValue = value
        } else {
            addAttribute(XMLNode.attribute(withName: name, stringValue: value) as! XMLNode)
        }
    }
}
