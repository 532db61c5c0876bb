import Foundation

#if canImport(FoundationXML)
import FoundationXML
#endif

/// A disk's image as libvirt's domain XML names it.
public struct LibvirtDiskSource: Sendable, Hashable {
    /// `<source file=…>` of the disk.
    public let file: String
    /// `<source file=…>` of the `<backingStore>` that follows, or nil when there is none
    /// (no element, or an empty `<backingStore/>`, which means "no backing file").
    public let backingFile: String?

    /// True when a `<backingStore>` with a source follows the disk's source.
    public var hasBackingStore: Bool { backingFile != nil }

    public init(file: String, backingFile: String?) {
        self.file = file
        self.backingFile = backingFile
    }
}

extension LibvirtDomain {
    /// The disk `target`'s source and backing file, from `virsh dumpxml` (or `--inactive`).
    public func diskSource(target: String, inactive: Bool = false) throws -> LibvirtDiskSource {
        let xml = inactive ? try inactiveXML() : try liveXML()
        do {
            return try Self.diskSource(target: target, in: xml, domain: name)
        } catch let error as LibvirtRigError {
            throw error
        } catch {
            throw LibvirtRigError.noSuchDisk(domain: name, target: target, reason: "unreadable domain XML: \(error)")
        }
    }

    /// The disk `target`'s source and backing file in the XML document of `domain`.
    static func diskSource(target: String, in xml: String, domain: String) throws -> LibvirtDiskSource {
        let document = try XMLDocument(xmlString: xml)
        guard let disk = try document.nodes(forXPath: "/domain/devices/disk[target/@dev='\(target)']").first else {
            throw LibvirtRigError.noSuchDisk(domain: domain, target: target, reason: "no <disk> with <target dev='\(target)'> in the XML")
        }
        guard let file = try disk.nodes(forXPath: "source/@file").first?.stringValue else {
            throw LibvirtRigError.noSuchDisk(domain: domain, target: target, reason: "its <disk> has no <source file=…>")
        }
        let backing = try disk.nodes(forXPath: "backingStore/source/@file").first?.stringValue
        return LibvirtDiskSource(file: file, backingFile: backing)
    }

    /// The domain XML: see the type's documentation. `share-rw=on` on each disk's device
    /// lets HMP qemu-io open the disk's node as a second writer; without it qemu-io fails
    /// with "Permission conflict on node … 'write' … unshared by block device".
    func domainXML() -> String {
        var devices = ""
        var overrides = ""
        for disk in disks {
            devices += """
                    <disk type='file' device='disk'>
                      <driver name='qemu' type='qcow2'/>
                      <source file='\(Self.escaped(disk.image))'/>
                      <target dev='\(Self.escaped(disk.target))' bus='virtio'/>
                      <alias name='ua-\(Self.escaped(disk.target))'/>
                    </disk>

                """
            overrides += """
                    <qemu:device alias='ua-\(Self.escaped(disk.target))'>
                      <qemu:frontend>
                        <qemu:property name='share-rw' type='bool' value='true'/>
                      </qemu:frontend>
                    </qemu:device>

                """
        }
        return """
            <domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
              <name>\(Self.escaped(name))</name>
              <memory unit='MiB'>64</memory>
              <vcpu>1</vcpu>
              <os>
                <type arch='x86_64' machine='pc'>hvm</type>
              </os>
              <devices>
            \(devices)\(extraDevices)    <controller type='usb' model='none'/>
                <memballoon model='none'/>
              </devices>
              <qemu:commandline>
                <qemu:arg value='-qmp'/>
                <qemu:arg value='unix:\(Self.escaped(testSocket)),server=on,wait=off'/>
              </qemu:commandline>
              <qemu:override>
            \(overrides)  </qemu:override>
            </domain>

            """
    }

    /// `text` safe inside an XML attribute or element.
    static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;")
            .replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "'", with: "&apos;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }
}
