import Foundation
@testable import LivecopyEngine
import LivecopyModel
import QMP
import TestSupport
import Testing

private let MiB: Int64 = 1 << 20

/// `DirtyMap` reads a frozen dirty bitmap through a real QEMU's NBD export: the ranges
/// the guest wrote, and nothing else.
@Suite(.requires(.qemu), .timeLimit(.minutes(2)))
struct DirtyMapTests {
    @Test func aFrozenBitmapReadsAsExactlyTheGuestsWrite() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-dirty")
        defer { scratch.remove() }
        let image = scratch.appending("disk.qcow2")
        try QEMUImage.create(image, size: "64M")
        try QEMUImage.write(image, pattern: 0x11, offset: "0", length: "4M")  // data that stays clean
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: image, format: "qcow2")])
        let qmp = try await vm.testMonitor()

        // A recording bitmap, a guest write, then a frozen copy taken in one transaction.
        _ = try await qmp.execute("block-dirty-bitmap-add", ["node": "drive0", "name": "recording"])
        try await vm.guestWrite(drive: "drive0", pattern: 0x22, offset: "1M", length: "64k")
        _ = try await qmp.execute("transaction", ["actions": [
            ["type": "block-dirty-bitmap-add", "data": ["node": "drive0", "name": "frozen", "disabled": true]],
            ["type": "block-dirty-bitmap-merge", "data": ["node": "drive0", "target": "frozen", "bitmaps": ["recording"]]],
        ]])
        // Written after the freeze: the recording bitmap has it, the frozen one must not.
        try await vm.guestWrite(drive: "drive0", pattern: 0x23, offset: "8M", length: "64k")

        let blocks = try await qmp.execute("query-block")
        let drive = try #require(blocks.arrayValue?.first { $0["device"] == "drive0" })
        let node = try #require(drive["inserted"]?["node-name"]?.stringValue)
        // A socket directory with a comma in its name: the image options must double it.
        let directory = scratch.appending("nbd,dir")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let socket = directory + "/nbd.sock"
        _ = try await qmp.execute("nbd-server-start", ["addr": ["type": "unix", "data": ["path": .string(socket)]]])
        _ = try await qmp.execute("block-export-add", [
            "type": "nbd", "id": "verify", "node-name": .string(node), "name": "destination", "writable": false,
            "bitmaps": ["frozen"],
        ])

        let dirty = try await DirtyMap.read(socketPath: socket, export: "destination", bitmap: "frozen")
        #expect(dirty.extents == [AllocationMap.Extent(start: 1 * MiB, length: 64 * 1024)])
        #expect(dirty.diskSize == 64 * MiB)

        // A bitmap the export does not carry: refused, with a hint.
        do {
            _ = try await DirtyMap.read(socketPath: socket, export: "destination", bitmap: "recording")
            Issue.record("a bitmap the export lacks was read")
        } catch {
            #expect(error.description.hasPrefix("qemu-img map of dirty bitmap 'recording' on NBD export 'destination' at \(socket) failed (exit 1): "), "\(error)")
            #expect(error.description.contains("does the export carry that bitmap?"), "\(error)")
        }
        await vm.stop()
    }

    /// The image options double every comma, as QEMU's option syntax wants.
    @Test func imageOptionsDoubleCommas() {
        #expect(DirtyMap.imageOptions(socketPath: "/run/a,b/s.sock", export: "e,1", bitmap: "b,m")
            == "driver=nbd,server.type=unix,server.path=/run/a,,b/s.sock,export=e,,1,x-dirty-bitmap=qemu:dirty-bitmap:b,,m")
    }

    /// What qemu-img prints for a map read without the bitmap (zeroes as present, no data)
    /// is refused, not taken for dirt.
    @Test func aMapThatIsNotABitmapsIsRefused() throws {
        let json = """
            [{ "start": 0, "length": 4194304, "depth": 0, "present": true, "zero": false, "data": true, "offset": 0},
            { "start": 4194304, "length": 62914560, "depth": 0, "present": true, "zero": true, "data": false, "offset": 4194304}]
            """
        let map = try QemuImgMap(json: Data(json.utf8))
        #expect(throws: VerificationError.self) { try DirtyMap.dirtyRanges(of: map, what: "test") }
    }
}
