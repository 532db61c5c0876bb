import Foundation
import LivecopyEngine
import LivecopyMetrics
import LivecopyModel
import Synchronization
import TestSupport
import Testing

/// What the recorder makes of the engine's reports, read back from a registry of the
/// test's own (scraped text): bytes, remaining, rate, steps, failures, and the series of
/// final disks.
struct DiskMetricsRecorderTests {
    /// A recorder on a fresh registry with a clock the test moves.
    final class Rig: Sendable {
        let exposition = PrometheusExposition()
        let clock = Clock()
        let recorder: DiskMetricsRecorder
        let observer: MetricsObserver

        init() {
            let clock = self.clock
            recorder = DiskMetricsRecorder(factory: exposition.factory, elapsed: { clock.now.withLock { $0 } })
            observer = MetricsObserver(wrapping: SilentObserver(), recorder: recorder)
        }

        func at(_ seconds: Int) { clock.now.withLock { $0 = .seconds(seconds) } }
        var text: String { exposition.text() }
        func value(_ series: String) -> Double? { HTTPScrape.value(of: series, in: text) }
    }

    /// The time the test sets.
    final class Clock: Sendable {
        let now = Mutex(Duration.zero)
    }

    static func disk(_ id: Int64, _ state: DiskState, plan: Int64 = 1, device: String = "drive0") -> DiskRecord {
        DiskRecord(id: id, planId: plan, vmName: "vm", vmAddress: "/run/vm.qmp", device: device, destination: "/d/\(id).qcow2",
                   source: "/s/\(id).qcow2", sourceFormat: "qcow2", qmpDevice: device, state: state, bytesDone: 0, bytesTotal: 0,
                   error: nil, intent: nil, destinationCreated: true, updatedAt: Date())
    }

    static let series = #"{plan="1",vm="vm",device="drive0"}"#

    @Test func progressFeedsTheCounterTheRemainingBytesAndTheRate() {
        let rig = Rig()
        let streaming = Self.disk(1, .streaming)
        rig.at(0); rig.observer.diskProgress(streaming, bytesDone: 0, bytesTotal: 100)
        rig.at(2); rig.observer.diskProgress(streaming, bytesDone: 40, bytesTotal: 100)
        #expect(rig.value("livecopy_bytes_copied_total" + Self.series) == 40)
        #expect(rig.value("livecopy_bytes_remaining" + Self.series) == 60)
        #expect(rig.value("livecopy_copy_rate_bytes_per_second" + Self.series) == 20)
        // The job restarts (a crash, a resumed failure): its offset starts again from 0.
        rig.at(3); rig.observer.diskProgress(streaming, bytesDone: 10, bytesTotal: 100)
        rig.at(4); rig.observer.diskProgress(streaming, bytesDone: 100, bytesTotal: 100)
        #expect(rig.value("livecopy_bytes_copied_total" + Self.series) == 140, "never decreases: 40, then the new job's 100")
        #expect(rig.value("livecopy_bytes_remaining" + Self.series) == 0)
    }

    @Test func aRollbacksCommitJobIsNotCounted() {
        let rig = Rig()
        rig.observer.diskProgress(Self.disk(1, .streaming), bytesDone: 50, bytesTotal: 100)
        rig.observer.diskProgress(Self.disk(1, .rollingBack), bytesDone: 80, bytesTotal: 100)
        #expect(rig.value("livecopy_bytes_copied_total" + Self.series) == 50)
    }

    @Test func eachStepsDurationIsObservedWhenTheDiskLeavesIt() {
        let rig = Rig()
        rig.at(10); rig.observer.diskMoved(Self.disk(1, .snapshotting), from: .pending, detail: "")
        rig.at(11); rig.observer.diskMoved(Self.disk(1, .streaming), from: .snapshotting, detail: "")
        rig.at(71); rig.observer.diskMoved(Self.disk(1, .retiring), from: .streaming, detail: "")
        rig.at(72); rig.observer.diskMoved(Self.disk(1, .completed), from: .retiring, detail: "")
        let text = rig.text
        #expect(HTTPScrape.value(of: #"livecopy_step_duration_seconds_count{step="snapshotting"}"#, in: text) == 1)
        #expect(HTTPScrape.value(of: #"livecopy_step_duration_seconds_sum{step="streaming"}"#, in: text) == 60)
        #expect(HTTPScrape.value(of: #"livecopy_step_duration_seconds_bucket{step="streaming",le="60.0"}"#, in: text) == 1)
        #expect(HTTPScrape.value(of: #"livecopy_step_duration_seconds_bucket{step="streaming",le="15.0"}"#, in: text) == 0)
        #expect(HTTPScrape.value(of: #"livecopy_step_duration_seconds_count{step="retiring"}"#, in: text) == 1)
        #expect(!text.contains(#"step="pending""#), "a state entered before this process watched has no duration")
    }

    @Test func failuresAreCountedByKindAndEveryKindStartsAtZero() {
        let rig = Rig()
        for kind in MetricCatalog.failureKinds {
            #expect(rig.value("livecopy_failures_total{kind=\"\(kind)\"}") == 0, "\(kind)")
        }
        rig.observer.diskMoved(Self.disk(1, .failed), from: .streaming, detail: "")
        rig.observer.diskMoved(Self.disk(1, .needsAttention), from: .failed, detail: "")
        rig.observer.diskMoved(Self.disk(2, .rollingBack), from: .streaming, detail: "")
        rig.observer.diskMoved(Self.disk(2, .rolledBack), from: .rollingBack, detail: "")
        #expect(rig.value(#"livecopy_failures_total{kind="failed"}"#) == 1)
        #expect(rig.value(#"livecopy_failures_total{kind="needs_attention"}"#) == 1)
        #expect(rig.value(#"livecopy_failures_total{kind="rolled_back"}"#) == 1)
        #expect(rig.value(#"livecopy_failures_total{kind="io_error"}"#) == 0)
    }

    @Test func aFinalDiskKeepsItsCounterAndLosesItsGauges() {
        let rig = Rig()
        rig.at(0); rig.observer.diskProgress(Self.disk(1, .streaming), bytesDone: 0, bytesTotal: 64)
        rig.at(1); rig.observer.diskProgress(Self.disk(1, .streaming), bytesDone: 64, bytesTotal: 64)
        rig.observer.diskMoved(Self.disk(1, .retiring), from: .streaming, detail: "")
        #expect(rig.value("livecopy_copy_rate_bytes_per_second" + Self.series) == 0, "no copy once the disk left streaming")
        rig.observer.diskMoved(Self.disk(1, .completed), from: .retiring, detail: "")
        let text = rig.text
        #expect(HTTPScrape.value(of: "livecopy_bytes_copied_total" + Self.series, in: text) == 64)
        #expect(!text.contains("livecopy_bytes_remaining{"), "\(text)")
        #expect(!text.contains("livecopy_copy_rate_bytes_per_second{"), "\(text)")
    }

    @Test func onlyTheLastFinalDisksKeepTheirCounter() {
        let rig = Rig()
        let count = DiskMetricsRecorder.retainedFinishedDisks + 3
        for id in 1...Int64(count) {
            rig.observer.diskProgress(Self.disk(id, .streaming, device: "d\(id)"), bytesDone: id, bytesTotal: id)
            rig.observer.diskMoved(Self.disk(id, .completed, device: "d\(id)"), from: .retiring, detail: "")
        }
        let kept = HTTPScrape.samples(rig.text).filter { $0.series.hasPrefix("livecopy_bytes_copied_total{") }
        #expect(kept.count == DiskMetricsRecorder.retainedFinishedDisks)
        #expect(!kept.contains { $0.series.contains(#"device="d3""#) }, "the oldest went first")
        #expect(kept.contains { $0.series.contains(#"device="d4""#) })
    }
}
