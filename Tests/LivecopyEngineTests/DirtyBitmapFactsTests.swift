import Foundation
import QMP
import TestSupport
import Testing

/// What data verification rests on, proven on the real QEMU before livecopy relies on it
/// (docs/retirement.md#verification): a dirty bitmap added in the switch's transaction
/// counts the guest's writes and not `block-stream`'s copy-on-read writes; one added on a
/// mirror's target at READY counts only the guest's later writes. Driven through QMP
/// directly, without livecopy.
@Suite(.serialized, .requires(.qemu))
struct DirtyBitmapFactsTests {
    /// 40 MiB of source data streamed into the overlay, 1 MiB written by the guest: the
    /// bitmap counts exactly that 1 MiB while the job waits in `pending` and after it is
    /// finalized (the overlay then standing alone).
    @Test(.timeLimit(.minutes(2)))
    func streamCopyOnReadDoesNotMarkTheBitmapAddedInTheSwitchTransaction() async throws {
        let directory = try TemporaryDirectory(prefix: "lc-bitmap-stream")
        defer { directory.remove() }
        let source = directory.appending("src.qcow2")
        let overlay = directory.appending("dst.qcow2")
        try QEMUImage.create(source, size: "64M")
        try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "40M")
        try QEMUImage.create(overlay, size: "64M", backing: source, backingFormat: "qcow2")
        let vm = try QEMUVirtualMachine(name: "vm", directory: directory.url, drives: [(id: "drive0", image: source, format: "qcow2")])
        defer { vm.kill() }
        let qmp = try await vm.testMonitor()

        try await qmp.execute("transaction", ["actions": .array([
            .object(["type": "blockdev-snapshot-sync", "data": .object([
                "device": "drive0", "snapshot-file": .string(overlay), "snapshot-node-name": "dst", "format": "qcow2",
                "mode": "existing",
            ])]),
            .object(["type": "block-dirty-bitmap-add", "data": .object(["node": "dst", "name": "guest"])]),
        ])])
        try await vm.guestWrite(drive: "drive0", pattern: 0x22, offset: "8M", length: "1M")
        try await qmp.execute("block-stream", ["device": "drive0", "job-id": "s", "auto-finalize": false, "auto-dismiss": false])
        try await Self.waitForJob("s", status: "pending", on: qmp)
        #expect(try await Self.bitmapCount("guest", on: qmp) == 1 << 20, "the copy-on-read writes are not counted")

        try await qmp.execute("job-finalize", ["id": "s"])
        try await Self.waitForJob("s", status: "concluded", on: qmp)
        try await qmp.execute("job-dismiss", ["id": "s"])
        let top = try await Self.inserted(on: qmp)
        #expect(top?["backing_file"] == nil, "the overlay stands alone")
        #expect(try await Self.bitmapCount("guest", on: qmp) == 1 << 20, "the bitmap survives the finalize, unchanged")

        // And it goes on counting the guest's writes.
        try await vm.guestWrite(drive: "drive0", pattern: 0x33, offset: "32M", length: "64k")
        #expect(try await Self.bitmapCount("guest", on: qmp) == (1 << 20) + 65536)
    }

    /// A bitmap on the mirror's target added at READY counts the guest's later writes (the
    /// job mirrors them) and nothing of the copy made before.
    @Test(.timeLimit(.minutes(2)))
    func aBitmapAddedOnTheMirrorTargetAtReadyCountsOnlyLaterGuestWrites() async throws {
        let directory = try TemporaryDirectory(prefix: "lc-bitmap-mirror")
        defer { directory.remove() }
        let source = directory.appending("src.qcow2")
        let target = directory.appending("dst.qcow2")
        try QEMUImage.create(source, size: "64M")
        try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "24M")
        try QEMUImage.create(target, size: "64M")
        let vm = try QEMUVirtualMachine(name: "vm", directory: directory.url, drives: [(id: "drive0", image: source, format: "qcow2")])
        defer { vm.kill() }
        let qmp = try await vm.testMonitor()

        try await qmp.execute("blockdev-add", [
            "node-name": "dst", "driver": "qcow2", "file": .object(["driver": "file", "filename": .string(target)]),
        ])
        try await qmp.execute("blockdev-mirror", [
            "device": "drive0", "job-id": "m", "target": "dst", "sync": "full", "auto-finalize": false, "auto-dismiss": false,
        ])
        try await Self.waitForJob("m", status: "ready", on: qmp)
        try await qmp.execute("block-dirty-bitmap-add", ["node": "dst", "name": "guest"])
        try await vm.guestWrite(drive: "drive0", pattern: 0x22, offset: "40M", length: "128k")
        // The write reaches the target through the job (background mode: a moment later).
        var count: Int64 = 0
        for _ in 0 ..< 500 {
            count = try await Self.bitmapCount("guest", node: "dst", on: qmp)
            if count >= 131072 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(count == 131072, "only the guest's write after READY is counted, not the 24 MiB copied before")
        try await qmp.execute("block-job-complete", ["device": "m"])
        try await Self.waitForJob("m", status: "pending", on: qmp)
        try await qmp.execute("job-finalize", ["id": "m"])
        try await Self.waitForJob("m", status: "concluded", on: qmp)
        #expect(try await Self.inserted(on: qmp)?["file"]?.stringValue == target, "pivoted")
        #expect(try await Self.bitmapCount("guest", on: qmp) == 131072, "the bitmap comes along with the pivot")
    }

    static func inserted(on qmp: QMPConnection) async throws -> JSONValue? {
        try await qmp.execute("query-block").arrayValue?.first { $0["device"]?.stringValue == "drive0" }?["inserted"]
    }

    /// The bitmap's count in `query-block` (the device's active image), or among the
    /// bitmaps of `node` (`query-named-block-nodes`, used here with no job changing the graph).
    static func bitmapCount(_ name: String, node: String? = nil, on qmp: QMPConnection) async throws -> Int64 {
        let bitmaps: [JSONValue]?
        if let node {
            bitmaps = try await qmp.execute("query-named-block-nodes", ["flat": true]).arrayValue?
                .first { $0["node-name"]?.stringValue == node }?["dirty-bitmaps"]?.arrayValue
        } else {
            bitmaps = try await inserted(on: qmp)?["dirty-bitmaps"]?.arrayValue
        }
        let bitmap = try #require(bitmaps?.first { $0["name"]?.stringValue == name }, "bitmap \(name) is listed")
        return try #require(bitmap["count"]?.int64Value)
    }

    /// Polls `query-jobs` (counted: 3000 × 20 ms) until job `id` has `status`.
    static func waitForJob(_ id: String, status: String, on qmp: QMPConnection) async throws {
        for _ in 0 ..< 3000 {
            let job = try await qmp.execute("query-jobs").arrayValue?.first { $0["id"]?.stringValue == id }
            if job?["status"]?.stringValue == status { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("job \(id) never reached \(status)")
        throw CancellationError()
    }
}
