// The names the engine records its metrics under, and the failure kinds it counts.

import LivecopyModel
import Metrics

/// The engine's metrics, recorded through swift-metrics only (docs/metrics.md). Without
/// `--metrics` nothing is bootstrapped and swift-metrics drops every value.
public enum MetricName {
    /// Counter `{plan, vm, device}`: bytes the disk's copy jobs advanced (their offsets).
    public static let bytesCopied = "livecopy_bytes_copied_total"
    /// Gauge `{plan, vm, device}`: the copy job's length minus its offset.
    public static let bytesRemaining = "livecopy_bytes_remaining"
    /// Gauge `{plan, vm, device}`: bytes per second between the last two progress reports.
    public static let copyRate = "livecopy_copy_rate_bytes_per_second"
    /// Histogram `{step}`: seconds a disk spent in a state, by the state it left.
    public static let stepDuration = "livecopy_step_duration_seconds"
    /// Counter `{kind}`: failures by kind (`FailureKind`, and the QMP client's kinds).
    public static let failures = "livecopy_failures_total"
    /// Counter: plans `livecopy recover` reconciled and drove.
    public static let recoveries = "livecopy_recoveries_total"
    /// Gauge: disks copying now under `serve`'s host limit (`HostSlots`).
    public static let hostDisksCopying = "livecopy_host_disks_copying"
    /// Gauge: disks waiting for one of `serve`'s host slots.
    public static let hostDisksWaiting = "livecopy_host_disks_waiting"
    /// Gauge: `serve`'s host bandwidth budget, bytes per second (0: none).
    public static let hostBandwidthBudget = "livecopy_host_bandwidth_budget_bytes_per_second"
    /// Gauge: the speeds `serve` gave its running copy jobs, summed, bytes per second.
    public static let hostBandwidthAllocated = "livecopy_host_bandwidth_allocated_bytes_per_second"
}

/// The failures the engine counts in `livecopy_failures_total{kind}`; the QMP client adds
/// `qmp_error` and `qmp_no_reply` (`QMPMetrics.FailureKind`).
public enum FailureKind: String, CaseIterable, Sendable {
    /// A disk moved to `failed`.
    case failed
    /// A disk moved to `needs_attention`.
    case needsAttention = "needs_attention"
    /// A disk moved to `rolled_back` (by a cancel, a rollback policy or a failed hook).
    case rolledBack = "rolled_back"
    /// A copy job met an I/O error (QEMU's `BLOCK_JOB_ERROR`, or a job paused by one).
    case ioError = "io_error"

    /// The kind a disk entering `state` counts as, if any.
    static func entering(_ state: DiskState) -> FailureKind? {
        switch state {
        case .failed: return .failed
        case .needsAttention: return .needsAttention
        case .rolledBack: return .rolledBack
        case .pending, .snapshotting, .streaming, .mirroring, .retiring, .completed, .rollingBack: return nil
        }
    }

    /// Counts one failure of this kind.
    func record(factory: any MetricsFactory = MetricsSystem.factory) {
        Counter(label: MetricName.failures, dimensions: [("kind", rawValue)], factory: factory).increment()
    }
}

/// Plans reconciled and driven by `livecopy recover` (or a service that takes plans over).
public enum RecoveryMetrics {
    /// Counts one plan recovered.
    public static func planRecovered() {
        Counter(label: MetricName.recoveries).increment()
    }
}
