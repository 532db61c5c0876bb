// The VM manager's record: libvirt's persistent definition follows the disk.

import Foundation
import LibvirtBackend
import LivecopyBackend
import TestSupport
import Testing

/// libvirt calls: virDomainIsPersistent, virDomainGetXMLDesc (live and inactive),
/// virDomainDefineXML.
@Suite(.serialized, .requires(.libvirt, .qemu))
struct LibvirtManagerRecordTests {
    @Test(.timeLimit(.minutes(2)))
    func aStaleDefinitionIsRedefinedWithOnlyThatDisksSourceChanged() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-record")
        defer { scratch.remove() }
        let source = scratch.appending("source.qcow2"), other = scratch.appending("other.qcow2")
        try QEMUImage.create(source, size: "16M")
        try QEMUImage.create(other, size: "16M")
        let domain = try LibvirtDomain(name: "record", directory: scratch.url,
                                       disks: [(target: "vda", image: source), (target: "vdb", image: other)], persistent: true)
        defer { domain.undefineAndDestroy() }
        // Someone edits the definition: vda would boot `elsewhere` next time.
        let stale = try domain.inactiveXML().replacingOccurrences(of: "file='\(source)'", with: "file='\(scratch.appending("elsewhere.qcow2"))'")
        let stalePath = scratch.appending("stale.xml")
        try stale.write(toFile: stalePath, atomically: true, encoding: .utf8)
        _ = try Virsh.checked(["define", stalePath])
        #expect(try domain.diskSource(target: "vda", inactive: true).file == scratch.appending("elsewhere.qcow2"))

        let vm = try await LibvirtHypervisor().connect(to: "libvirt:qemu:///system#\(domain.name)", commandTimeout: 30)
        let change = try await vm.updateManagerRecord(disk: "vda")
        #expect(change?.contains("livecopy redefined it to \(source)") == true, "\(change ?? "nil")")
        #expect(try domain.diskSource(target: "vda", inactive: true) == LibvirtDiskSource(file: source, backingFile: nil))
        #expect(try domain.diskSource(target: "vdb", inactive: true).file == other, "the other disk is untouched")
        #expect(try await vm.updateManagerRecord(disk: "vda") == nil, "nothing left to change")
        await vm.close()
    }

    @Test(.timeLimit(.minutes(2)))
    func aTransientDomainHasNoRecordToChange() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-transient")
        defer { scratch.remove() }
        let source = scratch.appending("source.qcow2")
        try QEMUImage.create(source, size: "16M")
        let domain = try LibvirtDomain(name: "transient", directory: scratch.url, disks: [(target: "vda", image: source)], persistent: false)
        defer { domain.undefineAndDestroy() }
        let vm = try await LibvirtHypervisor().connect(to: "libvirt:qemu:///system#\(domain.name)", commandTimeout: 30)
        #expect(try await vm.updateManagerRecord(disk: "vda") == nil)
        await vm.close()
    }
}
