import Foundation
import LivecopyEngine
import LivecopyModel
import TestSupport
import Testing

private let MiB: Int64 = 1 << 20

/// `QemuImgInspector.allocationMap` parses what `qemu-img map --output=json` says of
/// real images made with qemu-img and qemu-io.
@Suite(.requires(.qemu))
struct AllocationMapReadingTests {
    static func qemu(_ tool: String, _ arguments: [String]) throws {
        let result = try QEMUTools.run(tool, arguments)
        #expect(result.status == 0, "\(tool) \(arguments): \(result.stdout) \(result.stderr)")
    }

    @Test func aQcow2ImageIsAllocatedWhereItWasWritten() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-map")
        defer { scratch.remove() }
        let image = scratch.appending("a.qcow2")
        try Self.qemu("qemu-img", ["create", "-q", "-f", "qcow2", image, "1G"])
        try Self.qemu("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 64M", "-c", "write -P 2 512M 32M", image])
        let map = try await QemuImgInspector().allocationMap(of: image, format: "qcow2")
        #expect(map.extents == [.init(start: 0, length: 64 * MiB), .init(start: 512 * MiB, length: 32 * MiB)])
        #expect(map.allocatedBytes == 96 * MiB)
        #expect(map.diskSize == 1024 * MiB)
        #expect(map.allocatedBytes(below: 520 * MiB) == 72 * MiB)
    }

    /// The map of an image is its whole chain's, merged: what a full stream copies,
    /// zeroes written over older data included (QEMU streams them too).
    @Test func aChainIsAllocatedWhereAnyLayerIs() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-map-chain")
        defer { scratch.remove() }
        let base = scratch.appending("base.qcow2")
        let top = scratch.appending("top.qcow2")
        try Self.qemu("qemu-img", ["create", "-q", "-f", "qcow2", base, "256M"])
        try Self.qemu("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 16M", "-c", "write -P 2 128M 8M", base])
        try Self.qemu("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top])
        try Self.qemu("qemu-io", ["-f", "qcow2", "-c", "write -P 3 12M 8M", "-c", "write -z 64M 1M", top])
        let map = try await QemuImgInspector().allocationMap(of: top, format: "qcow2")
        #expect(map.extents == [
            .init(start: 0, length: 20 * MiB), .init(start: 64 * MiB, length: 1 * MiB), .init(start: 128 * MiB, length: 8 * MiB),
        ])
        #expect(map.diskSize == 256 * MiB)
        // The top layer holds writes of its own; the base alone does not count as the top's.
        #expect(try await QemuImgInspector().hasOwnData(top))
        let empty = scratch.appending("empty.qcow2")
        try Self.qemu("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", empty])
        #expect(try await QemuImgInspector().hasOwnData(empty) == false)
    }

    /// A raw image is allocated throughout, holes included: QEMU streams (and throttles)
    /// every byte of it, so its map is the offset itself.
    @Test func aRawImageIsAllocatedThroughout() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-map-raw")
        defer { scratch.remove() }
        let image = scratch.appending("c.raw")
        try Self.qemu("qemu-img", ["create", "-q", "-f", "raw", image, "64M"])
        try Self.qemu("qemu-io", ["-f", "raw", "-c", "write -P 1 1M 1M", image])
        let map = try await QemuImgInspector().allocationMap(of: image, format: "raw")
        #expect(map.extents == [.init(start: 0, length: 64 * MiB)])
    }

    @Test func anImageThatCannotBeReadThrows() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-map-none")
        defer { scratch.remove() }
        await #expect(throws: (any Error).self) {
            try await QemuImgInspector().allocationMap(of: scratch.appending("missing.qcow2"), format: "qcow2")
        }
    }
}
