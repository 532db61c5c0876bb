// One VM of a backend under test, the same for every backend: drive0 on a qcow2 source.

import Foundation
import InMemoryBackend
import LibvirtBackend
import LivecopyBackend
import QMPBackend
import TestSupport

/// A VM with one disk (`disk`: `drive0`, or libvirt's `vda`) on `source` (a 4 MiB qcow2
/// holding 1 MiB of data), in a scratch directory, reached through `hypervisor` at `address`.
struct ConformanceRig {
    let hypervisor: any Hypervisor
    let address: String
    var disk = "drive0"
    /// Whether the backend opens an overlay under the node name livecopy gives it (libvirt
    /// names its nodes itself).
    var namesNodes = true
    let scratch: TemporaryDirectory
    let source: String
    /// Makes an image file on top of the source, as livecopy makes one before a switch.
    let makeImage: @Sendable (_ path: String, _ backing: String) throws -> Void
    /// Stops the VM (if there is a process) and removes the scratch directory.
    let tearDown: @Sendable () async -> Void

    static let virtualSize: Int64 = 4 << 20

    /// A path in the scratch directory for a new image.
    func path(_ name: String) -> String { scratch.appending(name) }

    /// An overlay file on top of the source, made as livecopy makes it (before the switch).
    func makeOverlay(_ name: String) throws -> String {
        let overlay = path(name)
        try makeImage(overlay, source)
        return overlay
    }

    /// A qcow2 image on top of `backing` (real QEMU opens it).
    static let qcow2: @Sendable (String, String) throws -> Void = { path, backing in
        try QEMUImage.create(path, size: "\(virtualSize)", backing: backing, backingFormat: "qcow2")
    }

    /// A placeholder file (the in-memory VM only checks that it exists).
    static let placeholder: @Sendable (String, String) throws -> Void = { path, _ in
        _ = FileManager.default.createFile(atPath: path, contents: Data("image".utf8))
    }

    /// A VM in memory.
    static func inMemory(_ name: String) throws -> ConformanceRig {
        let scratch = try TemporaryDirectory(prefix: name)
        let source = scratch.appending("source.qcow2")
        try placeholder(source, "")
        let hypervisor = InMemoryHypervisor()
        hypervisor.addVM(at: "mem:\(name)", devices: [
            .init(name: "drive0", chain: [.init(file: source, format: "qcow2", virtualSize: virtualSize)]),
        ])
        return ConformanceRig(hypervisor: hypervisor, address: "mem:\(name)", scratch: scratch, source: source,
                              makeImage: placeholder, tearDown: { scratch.remove() })
    }

    /// A real QEMU, reached through QMP.
    static func qemu(_ name: String) throws -> ConformanceRig {
        let scratch = try TemporaryDirectory(prefix: name)
        let source = scratch.appending("source.qcow2")
        try QEMUImage.create(source, size: "\(virtualSize)")
        try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "1M")
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: source, format: "qcow2")])
        return ConformanceRig(hypervisor: QMPHypervisor(), address: vm.livecopySocket, scratch: scratch, source: source,
                              makeImage: qcow2, tearDown: { await vm.stop(); scratch.remove() })
    }

    /// A real libvirt domain (transient, TCG) on `qemu:///system`, its disk `vda`.
    static func libvirt(_ name: String) throws -> ConformanceRig {
        let scratch = try TemporaryDirectory(prefix: name)
        let source = scratch.appending("source.qcow2")
        try QEMUImage.create(source, size: "\(virtualSize)")
        try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "1M")
        let domain = try LibvirtDomain(name: name, directory: scratch.url, disks: [(target: "vda", image: source)], persistent: false)
        return ConformanceRig(hypervisor: LibvirtHypervisor(), address: "libvirt:qemu:///system#\(domain.name)", disk: "vda",
                              namesNodes: false, scratch: scratch, source: source, makeImage: qcow2,
                              tearDown: { domain.undefineAndDestroy(); scratch.remove() })
    }
}
