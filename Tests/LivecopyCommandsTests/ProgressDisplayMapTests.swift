import Foundation
@testable import LivecopyCommands
import LivecopyEngine
import LivecopyModel
import Synchronization
import Testing

private let MiB: Int64 = 1 << 20

/// The display reads a streaming disk's allocation map once, without waiting for it,
/// and measures rate and ETA in allocated bytes from then on; without a map (unreadable,
/// or a job other than the stream) it measures the offset.
@Suite struct ProgressDisplayMapTests {
    /// Answers `allocationMap` with `map` (or fails without one), counting the questions.
    final class MapInspector: ImageInspector {
        let map: AllocationMap?
        let questions = Mutex<[String]>([])
        init(map: AllocationMap?) { self.map = map }

        func hasOwnData(_ path: String) async throws -> Bool { false }
        func sameContents(_ first: String, format firstFormat: String, _ second: String, format secondFormat: String) async throws -> Bool { true }
        func allocationMap(of path: String, format: String) async throws -> AllocationMap {
            questions.withLock { $0.append("\(path) \(format)") }
            guard let map else { throw CocoaError(.fileReadCorruptFile) }
            return map
        }
    }

    /// A clock the test moves.
    final class ManualClock: Sendable {
        let now = Mutex(Duration.zero)
        func advance(_ by: Duration) { now.withLock { $0 += by } }
    }

    static func disk(_ state: DiskState) -> DiskRecord {
        DiskRecord(id: 7, planId: 1, vmName: "web01", vmAddress: "/run/web01.qmp", device: "drive0",
                   destination: "/images/new.qcow2", source: "/images/old.qcow2", sourceFormat: "qcow2",
                   qmpDevice: "drive0", state: state, bytesDone: 0, bytesTotal: 1024 * MiB, error: nil,
                   intent: nil, destinationCreated: true, updatedAt: Date())
    }

    /// Waits (yielding, with no deadline but a count) until `condition` holds.
    static func eventually(_ condition: () -> Bool) async -> Bool {
        for _ in 0..<10_000 {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return condition()
    }

    @Test func aStreamingDiskIsMeasuredInAllocatedBytesOnceTheMapIsRead() async {
        // 256 MiB allocated at the front of a 1 GiB disk.
        let inspector = MapInspector(map: AllocationMap(extents: [.init(start: 0, length: 256 * MiB)], diskSize: 1024 * MiB))
        let clock = ManualClock()
        let display = ProgressDisplay(plainInterval: 1000, inspector: inspector, elapsed: { clock.now.withLock { $0 } })
        let disk = Self.disk(.streaming)
        display.diskProgress(disk, bytesDone: 0, bytesTotal: 1024 * MiB)
        #expect(await Self.eventually { display.progressLine(ofDisk: 7)?.bytesToCopy == 256 * MiB })
        for second in 1...4 {
            clock.advance(.seconds(1))
            display.diskProgress(disk, bytesDone: Int64(second) * 32 * MiB, bytesTotal: 1024 * MiB)
        }
        // Past the allocated bytes the offset races over the hole; the copy is done.
        clock.advance(.seconds(5))
        display.diskProgress(disk, bytesDone: 900 * MiB, bytesTotal: 1024 * MiB)
        let line = display.progressLine(ofDisk: 7)
        #expect(line?.bytesCopied == 256 * MiB)
        #expect(line?.timeLeft == .zero)
        #expect(line?.fraction == 1, "the bar and percent measure the allocated bytes too")
        #expect(inspector.questions.withLock { $0 } == ["/images/old.qcow2 qcow2"])
    }

    @Test func theMapIsAskedForOncePerDisk() async {
        let inspector = MapInspector(map: AllocationMap(extents: [], diskSize: 1024 * MiB))
        let display = ProgressDisplay(plainInterval: 1000, inspector: inspector, elapsed: { .zero })
        display.diskMoved(Self.disk(.streaming), from: .snapshotting, detail: "job started")
        for _ in 0..<50 { display.diskProgress(Self.disk(.streaming), bytesDone: 0, bytesTotal: 1024 * MiB) }
        #expect(await Self.eventually { display.progressLine(ofDisk: 7)?.bytesToCopy == 0 })
        display.diskMoved(Self.disk(.failed), from: .streaming, detail: "stopped")
        display.diskMoved(Self.disk(.streaming), from: .failed, detail: "resumed")
        #expect(inspector.questions.withLock { $0.count } == 1)
    }

    @Test func anUnreadableMapLeavesTheOffsetEstimate() async {
        let inspector = MapInspector(map: nil)
        let clock = ManualClock()
        let display = ProgressDisplay(plainInterval: 1000, inspector: inspector, elapsed: { clock.now.withLock { $0 } })
        display.diskProgress(Self.disk(.streaming), bytesDone: 0, bytesTotal: 1024 * MiB)
        #expect(await Self.eventually { inspector.questions.withLock { $0.count } == 1 })
        clock.advance(.seconds(2))
        display.diskProgress(Self.disk(.streaming), bytesDone: 64 * MiB, bytesTotal: 1024 * MiB)
        let line = display.progressLine(ofDisk: 7)
        #expect(line?.bytesToCopy == 1024 * MiB && line?.bytesCopied == 64 * MiB)
        #expect(line?.rate == Double(32 * MiB))
        #expect(line?.timeLeft == .seconds(30))
    }

    /// A commit (rollback) walks the destination, not the source: no map is asked for.
    @Test func aJobOtherThanTheStreamIsMeasuredOnItsOffset() async {
        let inspector = MapInspector(map: AllocationMap(extents: [], diskSize: 1024 * MiB))
        let clock = ManualClock()
        let display = ProgressDisplay(plainInterval: 1000, inspector: inspector, elapsed: { clock.now.withLock { $0 } })
        display.diskProgress(Self.disk(.rollingBack), bytesDone: 0, bytesTotal: 1024 * MiB)
        clock.advance(.seconds(1))
        display.diskProgress(Self.disk(.rollingBack), bytesDone: 16 * MiB, bytesTotal: 1024 * MiB)
        #expect(display.progressLine(ofDisk: 7)?.rate == Double(16 * MiB))
        #expect(display.progressLine(ofDisk: 7)?.bytesToCopy == 1024 * MiB)
        #expect(inspector.questions.withLock { $0.isEmpty })
    }
}
