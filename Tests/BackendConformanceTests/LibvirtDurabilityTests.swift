// A QEMU killed right after a libvirt VM's copy completes keeps every copied cluster.

import Foundation
import LibvirtBackend
import LivecopyBackend
import TestSupport
import Testing

/// libvirt's own pull rewrites the destination's header without its backing file
/// before QEMU has written the copied clusters' L2 tables (docs/libvirt.md). livecopy's
/// libvirt backend holds the copy, flushes it with QEMU's confirmation, and only then
/// lets libvirt's pull drop the backing file. Killing QEMU the moment that pull has
/// completed must leave a destination that stands alone and holds all the data.
///
/// libvirt calls: virDomainSnapshotCreateXML, virDomainQemuMonitorCommand (block-stream
/// held in pending, the flush by reopen, job-cancel), virDomainBlockPull, BLOCK_JOB_2.
@Suite(.serialized, .requires(.libvirt, .qemu))
struct LibvirtDurabilityTests {
    @Test(.timeLimit(.minutes(3)))
    func aQEMUKilledRightAfterTheCopyCompletesLosesNoCopiedCluster() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-durable")
        defer { scratch.remove() }
        let source = scratch.appending("source.qcow2")
        let destination = scratch.appending("destination.qcow2")
        try QEMUImage.create(source, size: "256M")
        try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "200M")
        let domain = try LibvirtDomain(name: "durable", directory: scratch.url, disks: [(target: "vda", image: source)], persistent: true)
        defer { domain.undefineAndDestroy() }
        try QEMUImage.create(destination, size: "256M", backing: source, backingFormat: "qcow2")

        let vm = try await LibvirtHypervisor().connect(to: "libvirt:qemu:///system#\(domain.name)", commandTimeout: 30)
        try await vm.switchToOverlays([OverlayRequest(disk: .device("vda"), overlayFile: destination, overlayNodeName: "unused")])
        try await domain.write(pattern: 0x22, offset: "210M", length: "1M", target: "vda")  // into the destination
        try await vm.startPull(disk: "vda", jobId: "copy-1", speed: 0, onError: "report")
        try await ConformanceCheck.waitFor("copy-1", .pending, in: vm)
        let node = try #require(try await vm.disks().device(named: "vda")?.medium?.nodeName)
        #expect(try await vm.flush(nodeName: node) == .confirmed)
        try await vm.finalize(jobId: "copy-1")
        let concluded = try await ConformanceCheck.waitFor("copy-1", .concluded, in: vm)
        #expect(concluded.error == nil)
        // libvirt's pull completed and libvirt updated its definition: kill QEMU now.
        try await domain.killQEMU()
        await vm.close()

        #expect(try QEMUImage.info(destination).backingFilename == nil, "the destination stands alone")
        #expect(try QEMUImage.verify(destination, pattern: 0x11, offset: "0", length: "200M"), "every copied cluster")
        #expect(try QEMUImage.verify(destination, pattern: 0x22, offset: "210M", length: "1M"), "the guest's flushed write")
        #expect(try domain.diskSource(target: "vda", inactive: true) == LibvirtDiskSource(file: destination, backingFile: nil),
                "the next boot uses the destination, standing alone")
    }
}
