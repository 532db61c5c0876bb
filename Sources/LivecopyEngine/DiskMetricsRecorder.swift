// `DiskMetricsRecorder`: each disk's copy progress, time per state and failures, recorded
// through swift-metrics; one per process, shared by every engine's `MetricsObserver`.

import LivecopyModel
import Metrics
import Synchronization

/// Records what the engine tells of each disk as swift-metrics series (docs/metrics.md).
///
/// Series per disk (`plan`, `vm`, `device`) stay bounded: a disk's gauges (bytes remaining,
/// copy rate) are removed once it is final, and its bytes counter is kept, at its final
/// value, for the last `retainedFinishedDisks` final disks only.
public final class DiskMetricsRecorder: Sendable {
    /// How many final disks keep their bytes counter.
    public static let retainedFinishedDisks = 64

    private struct Disk {
        var deltas = ProgressDeltas()
        /// The state the disk entered while this process watched, and when.
        var entered: (state: DiskState, at: Duration)?
    }

    private struct Book {
        var disks: [Int64: Disk] = [:]
        /// Final disks whose bytes counter is kept, oldest first.
        var finished: [[(String, String)]] = []
    }

    private let book = Mutex(Book())
    private let factory: any MetricsFactory
    private let elapsed: @Sendable () -> Duration

    /// `factory` receives every series (by default the process's bootstrapped backend);
    /// `elapsed` is the clock (time since a fixed origin), a monotonic one by default.
    public init(factory: any MetricsFactory = MetricsSystem.factory, elapsed: (@Sendable () -> Duration)? = nil) {
        self.factory = factory
        let start = ContinuousClock.now
        self.elapsed = elapsed ?? { start.duration(to: ContinuousClock.now) }
    }

    /// A copy job of `disk` reported `done` of `total` bytes. Only a forward copy counts
    /// (the disk streaming or mirroring), not a rollback's commit.
    public func progress(_ disk: DiskRecord, done: Int64, total: Int64) {
        guard Self.copiesForward(disk.state) else { return }
        let now = elapsed()
        let step = book.withLock { book in book.disks[disk.id, default: Disk()].deltas.advance(done: done, at: now) }
        let labels = Self.labels(of: disk)
        if step.copied > 0 {
            Counter(label: MetricName.bytesCopied, dimensions: labels, factory: factory).increment(by: step.copied)
        }
        Gauge(label: MetricName.bytesRemaining, dimensions: labels, factory: factory).record(max(total - done, 0))
        if let rate = step.bytesPerSecond {
            Gauge(label: MetricName.copyRate, dimensions: labels, factory: factory).record(rate)
        }
    }

    /// `disk` moved from `from` to its current state: the time spent in `from` (when this
    /// process saw the disk enter it), a failure when the new state is one, and the disk's
    /// series dropped once it is final.
    public func moved(_ disk: DiskRecord, from: DiskState) {
        let now = elapsed()
        let spent = book.withLock { book -> Duration? in
            let entered = book.disks[disk.id]?.entered
            if disk.state.isFinal {
                book.disks[disk.id] = nil
            } else {
                book.disks[disk.id, default: Disk()].entered = (disk.state, now)
            }
            guard let entered, entered.state == from else { return nil }
            return now - entered.at
        }
        if let spent {
            Timer(label: MetricName.stepDuration, dimensions: [("step", from.rawValue)], factory: factory)
                .recordNanoseconds(spent.components.seconds * 1_000_000_000 + spent.components.attoseconds / 1_000_000_000)
        }
        FailureKind.entering(disk.state)?.record(factory: factory)
        let labels = Self.labels(of: disk)
        if Self.copiesForward(from) && !Self.copiesForward(disk.state) {
            Gauge(label: MetricName.copyRate, dimensions: labels, factory: factory).record(0)
        }
        if disk.state.isFinal { finish(labels) }
    }

    /// Drops a final disk's gauges, and the bytes counter of the oldest final disk beyond
    /// `retainedFinishedDisks`.
    private func finish(_ labels: [(String, String)]) {
        Gauge(label: MetricName.bytesRemaining, dimensions: labels, factory: factory).destroy()
        Gauge(label: MetricName.copyRate, dimensions: labels, factory: factory).destroy()
        let dropped = book.withLock { book -> [[(String, String)]] in
            book.finished.append(labels)
            let excess = book.finished.count - Self.retainedFinishedDisks
            guard excess > 0 else { return [] }
            defer { book.finished.removeFirst(excess) }
            return Array(book.finished.prefix(excess))
        }
        for labels in dropped {
            Counter(label: MetricName.bytesCopied, dimensions: labels, factory: factory).destroy()
        }
    }

    /// The labels of a disk's series.
    static func labels(of disk: DiskRecord) -> [(String, String)] {
        [("plan", String(disk.planId)), ("vm", disk.vmName), ("device", disk.device)]
    }

    /// Whether a job's progress in `state` is the forward copy.
    static func copiesForward(_ state: DiskState) -> Bool {
        switch state {
        case .streaming, .mirroring: return true
        case .pending, .snapshotting, .retiring, .completed, .failed, .rollingBack, .rolledBack, .needsAttention: return false
        }
    }
}
