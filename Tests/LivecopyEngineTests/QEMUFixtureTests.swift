import Foundation
import QMP
import TestSupport
import Testing

/// The real-QEMU fixtures from TestSupport, end to end: an image, a VM with two monitors,
/// a guest write through HMP qemu-io, a clean stop, and offline verification.
@Suite("QEMU fixtures")
struct QEMUFixtureTests {
    @Test(
        .requires(.qemu),
        .timeLimit(.minutes(1)))
    func guestWriteSurvivesStopAndVerifiesOffline() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let image = directory.appending("src.qcow2")

        try QEMUImage.create(image, size: "16M")
        let info = try QEMUImage.info(image)
        #expect(info.format == "qcow2")
        #expect(info.virtualSize == 16 * 1024 * 1024)
        #expect(info.backingFilename == nil)

        // An offline write before the VM starts, kept through everything below.
        try QEMUImage.write(image, pattern: 0x11, offset: "0", length: "64k")

        let vm = try QEMUVirtualMachine(
            name: "vm", directory: directory.url, drives: [(id: "drive0", image: image, format: "qcow2")])
        #expect(vm.pid > 0)
        #expect(FileManager.default.fileExists(atPath: vm.livecopySocket))
        #expect(FileManager.default.fileExists(atPath: vm.testSocket))

        // livecopy's monitor is free while the test holds its own.
        let monitor = try await vm.testMonitor()
        let livecopy = try await QMPConnection.connect(socketPath: vm.livecopySocket)
        let blocks = try await livecopy.execute("query-block")
        #expect(blocks.arrayValue?.contains { $0["device"]?.stringValue == "drive0" } == true)
        await livecopy.close()
        #expect(try await vm.testMonitor() === monitor)

        try await vm.guestWrite(drive: "drive0", pattern: 0x22, offset: "1M", length: "64k")
        #expect(vm.output.contains("wrote 65536/65536 bytes at offset 1048576"))

        // A write past the end of the disk is reported as a failure.
        await #expect(throws: QEMUFixtureError.self) {
            try await vm.guestWrite(drive: "drive0", pattern: 0x33, offset: "100M", length: "64k")
        }

        await vm.stop()
        #expect(!vm.isRunning)

        #expect(try QEMUImage.verify(image, pattern: 0x22, offset: "1M", length: "64k"))
        #expect(try QEMUImage.verify(image, pattern: 0x11, offset: "0", length: "64k"))
        #expect(try QEMUImage.verify(image, pattern: 0x22, offset: "2M", length: "64k") == false)
        #expect(try QEMUImage.verify(image, pattern: 0x00, offset: "2M", length: "64k"))
    }

    @Test(.requires(.qemu))
    func overlayRecordsItsBacking() throws {
        let directory = try TemporaryDirectory()
        let base = directory.appending("base.qcow2")
        let overlay = directory.appending("overlay.qcow2")
        try QEMUImage.create(base, size: "4M")
        try QEMUImage.write(base, pattern: 0x44, offset: "0", length: "4k")
        try QEMUImage.create(overlay, size: "4M", backing: base, backingFormat: "qcow2")

        let info = try QEMUImage.info(overlay)
        #expect(info.backingFilename == base)
        #expect(info.backingFormat == "qcow2")
        #expect(try QEMUImage.verify(overlay, pattern: 0x44, offset: "0", length: "4k"))

        let path = directory.path
        directory.remove()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test(.requires(.qemu))
    func killedVMIsGone() async throws {
        let directory = try TemporaryDirectory()
        let image = directory.appending("disk.qcow2")
        try QEMUImage.create(image, size: "1M")
        let vm = try QEMUVirtualMachine(
            name: "k", directory: directory.url, drives: [(id: "drive0", image: image, format: "qcow2")])
        let pid = vm.pid
        vm.kill()
        #expect(!vm.isRunning)
        #expect(kill(pid, 0) != 0)
    }
}
