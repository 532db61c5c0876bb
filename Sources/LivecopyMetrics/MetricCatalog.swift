// Every metric livecopy exports: name, type, labels and help (the `# HELP` lines, and
// docs/metrics.md, which a test compares with this list).

import LivecopyEngine
import LivecopyModel
import QMP

/// A Prometheus metric type.
public enum MetricType: String, Sendable {
    case counter, gauge, histogram
}

/// One metric livecopy exports.
public struct MetricDescription: Sendable {
    public let name: String
    public let type: MetricType
    public let labels: [String]
    public let help: String
}

/// The metrics livecopy exports (docs/metrics.md), and the histograms' buckets.
public enum MetricCatalog {
    /// Gauge `{state}`: plans in the database by state.
    public static let plans = "livecopy_plans"
    /// Gauge `{state}`: disks in the database by state.
    public static let disks = "livecopy_disks"

    public static let all: [MetricDescription] = [
        MetricDescription(name: MetricName.bytesCopied, type: .counter, labels: ["plan", "vm", "device"],
                          help: "Bytes the disk's copy jobs advanced (QEMU's job offset), as seen by this process."),
        MetricDescription(name: MetricName.bytesRemaining, type: .gauge, labels: ["plan", "vm", "device"],
                          help: "The copy job's length minus its offset; removed once the disk is final."),
        MetricDescription(name: MetricName.copyRate, type: .gauge, labels: ["plan", "vm", "device"],
                          help: "Bytes per second between the copy job's last two progress reports; removed once the disk is final."),
        MetricDescription(name: plans, type: .gauge, labels: ["state"], help: "Plans in the database, by state."),
        MetricDescription(name: disks, type: .gauge, labels: ["state"], help: "Disks in the database, by state."),
        MetricDescription(name: MetricName.stepDuration, type: .histogram, labels: ["step"],
                          help: "Seconds a disk spent in a state, by the state it left."),
        MetricDescription(name: QMPMetrics.roundTrip, type: .histogram, labels: ["command"],
                          help: "Seconds from sending a QMP command to its reply."),
        MetricDescription(name: MetricName.failures, type: .counter, labels: ["kind"],
                          help: "Failures by kind: a disk entering failed, needs_attention or rolled_back; a job's I/O error; a QMP error reply or no reply."),
        MetricDescription(name: MetricName.recoveries, type: .counter, labels: [],
                          help: "Plans livecopy recover (or serve at its start) reconciled and drove."),
        MetricDescription(name: MetricName.hostDisksCopying, type: .gauge, labels: [],
                          help: "livecopy serve: disks holding one of the host's copy slots."),
        MetricDescription(name: MetricName.hostDisksWaiting, type: .gauge, labels: [],
                          help: "livecopy serve: disks waiting for one of the host's copy slots."),
        MetricDescription(name: MetricName.hostBandwidthBudget, type: .gauge, labels: [],
                          help: "livecopy serve: the host's bandwidth budget in bytes per second (0: none)."),
        MetricDescription(name: MetricName.hostBandwidthAllocated, type: .gauge, labels: [],
                          help: "livecopy serve: the speeds given to its running copy jobs, summed, in bytes per second."),
    ]

    /// The metric named `name`, if livecopy exports it.
    public static func description(of name: String) -> MetricDescription? {
        all.first { $0.name == name }
    }

    /// Every `kind` of `livecopy_failures_total`: the engine's, then the QMP client's.
    public static let failureKinds: [String] = FailureKind.allCases.map(\.rawValue) + QMPMetrics.FailureKind.allCases.map(\.rawValue)

    /// `livecopy_step_duration_seconds`: a step lasts from a fraction of a second (a
    /// snapshot) to hours (the stream of a large disk, a disk waiting for an operator).
    public static let stepDurationBuckets: [Duration] = [
        .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5), .seconds(15), .seconds(60), .seconds(300),
        .seconds(900), .seconds(1800), .seconds(3600), .seconds(7200), .seconds(14400), .seconds(28800),
    ]

    /// `livecopy_qmp_round_trip_seconds`: most commands answer in a millisecond or so; a
    /// transaction or a flush may take seconds.
    public static let roundTripBuckets: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .seconds(2), .seconds(5), .seconds(10), .seconds(30),
    ]
}
