// What the QMP client records through swift-metrics: each command's round trip and the
// commands that failed. Nothing is recorded unless the process bootstrapped a metrics
// backend (`livecopy … --metrics`); swift-metrics' default backend drops everything.

import Metrics

/// The QMP client's metrics (docs/metrics.md). The label is the command's name, one of
/// the fixed set livecopy sends, so the series are bounded.
public enum QMPMetrics {
    /// Histogram: seconds from sending a command to its reply (a return or an error reply).
    public static let roundTrip = "livecopy_qmp_round_trip_seconds"
    /// Counter shared with the engine (`MetricName.failures`), by `kind`.
    public static let failures = "livecopy_failures_total"

    /// The failure kinds the QMP client counts.
    public enum FailureKind: String, CaseIterable, Sendable {
        /// QEMU answered a command with an error reply.
        case errorReply = "qmp_error"
        /// No reply came: the command timed out or the connection was lost meanwhile.
        case noReply = "qmp_no_reply"
    }

    /// Records the round trip of `command`, replied to after `elapsed`.
    static func recordRoundTrip(command: String, elapsed: Duration) {
        let nanoseconds = elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
        Timer(label: roundTrip, dimensions: [("command", command)]).recordNanoseconds(nanoseconds)
    }

    /// Counts one failed command.
    static func recordFailure(_ kind: FailureKind) {
        Counter(label: failures, dimensions: [("kind", kind.rawValue)]).increment()
    }
}
