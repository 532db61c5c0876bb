// How long a plan would take: `PlanEstimate`, from the bytes each disk really copies, the
// rate per disk (the policy's speed, this host's history, or both) and `DiskSchedule`.

import Foundation

/// The copy rates this host reached before, learned from the history of its plans
/// (`CopyHistory` in the engine), for one strategy: how fast one disk copies, and how much
/// the host moves in all while several copy at once.
public struct HistoryRate: Sendable, Equatable {
    public let strategy: CopyStrategy
    /// Bytes copied per second by one disk copying alone (the median over such copies);
    /// with no such copy, the host's whole rate (`aggregateBytesPerSecond`).
    public let bytesPerSecond: Double
    /// How many copies the history has learned from.
    public let copies: Int
    /// Bytes per second the host moved in all while several disks copied at once (the
    /// median over such copies, each counted as its own rate × how many copied beside it);
    /// nil when no copy shared the host.
    public let aggregateBytesPerSecond: Double?
    /// How many of `copies` shared the host with others.
    public let sharedCopies: Int

    public init(strategy: CopyStrategy, bytesPerSecond: Double, copies: Int, aggregateBytesPerSecond: Double? = nil,
                sharedCopies: Int = 0) {
        self.strategy = strategy
        self.bytesPerSecond = bytesPerSecond
        self.copies = copies
        self.aggregateBytesPerSecond = aggregateBytesPerSecond
        self.sharedCopies = sharedCopies
    }

    /// `median 412.0 MiB/s per disk over 7 stream copies; 620.0 MiB/s in all with several
    /// at once (5 copies)`.
    public var description: String {
        let lone = copies - sharedCopies
        let perDisk = lone > 0
            ? "median \(PlanEstimate.rateText(bytesPerSecond)) per disk alone over \(lone) \(strategy.rawValue) cop\(lone == 1 ? "y" : "ies")"
            : "no \(strategy.rawValue) copy alone (one disk alone taken to reach the whole rate)"
        guard let aggregate = aggregateBytesPerSecond else {
            return perDisk + "; none with others at once (disks taken not to slow each other)"
        }
        return perDisk + "; \(PlanEstimate.rateText(aggregate)) in all with several at once (median over \(sharedCopies) cop\(sharedCopies == 1 ? "y" : "ies"))"
    }

    /// How fast each of `k` disks copying at once goes, as a share of `perDisk` (its pace
    /// alone): the host's whole rate shared out, never faster than alone.
    public func pace(_ k: Int, perDisk: Double) -> Double {
        guard let aggregate = aggregateBytesPerSecond, aggregate > 0, perDisk > 0, k > 0 else { return 1 }
        return min(1, aggregate / (Double(k) * perDisk))
    }
}

/// What an estimate rests on.
public enum EstimateBasis: Sendable, Equatable {
    /// The policy's `speed`; no usable history.
    case policySpeed(Int64)
    /// The history; the policy sets no speed.
    case history(HistoryRate)
    /// Both known: the policy's speed is the lower, so it is used.
    case policySpeedBelowHistory(speed: Int64, history: HistoryRate)
    /// Both known: the history's rate is the lower, so it is used.
    case historyBelowPolicySpeed(history: HistoryRate, speed: Int64)
    /// Neither: the policy sets no speed and the history has no copy to learn from.
    case none

    /// The key scripts read: `policy_speed`, `history` or `none` (which rate was used).
    public var key: String {
        switch self {
        case .policySpeed, .policySpeedBelowHistory: return "policy_speed"
        case .history, .historyBelowPolicySpeed: return "history"
        case .none: return "none"
        }
    }
}

/// A plan's estimated duration: each disk's copy takes its allocated bytes (what QEMU's
/// rate limit counts: a stream or mirror skips unallocated ranges without counting them)
/// divided by the rate per disk, and the disks share `max_parallel_disks` slots as the
/// engine runs them (`DiskSchedule`).
///
/// The rate per disk is the policy's `speed` when set; this host's history rate
/// (`HistoryRate`) when known; the lower of the two when both are; with neither there is
/// no estimate rather than an invented one. When the history knows what the host moves in
/// all with several disks at once, disks copying together share it (never going faster
/// than the rate per disk).
public struct PlanEstimate: Sendable, Equatable {
    /// What the rate rests on.
    public let basis: EstimateBasis
    /// Bytes per second per disk; nil: no estimate.
    public let bytesPerSecond: Double?
    /// Seconds added to each disk's copy for the steps around it (snapshot, flush, retire).
    public let perDiskOverhead: Double
    /// When each disk (in run order) starts and ends; nil without a rate.
    public let timings: [DiskSchedule.Timing]?

    /// Seconds from the plan's start until its last disk ends; nil without a rate.
    public var seconds: Double? {
        timings.map { $0.map(\.end).max() ?? 0 }
    }

    /// The estimate for disks (in run order) copying `allocatedBytes` each, in the pivot
    /// groups given (nil: the disk ends alone), with the policy's `speed` (0: none) and
    /// this host's `history` rate (nil: none).
    public init(allocatedBytes: [Int64], pivotGroups: [String?], speed: Int64, history: HistoryRate?,
                schedule: DiskSchedule, perDiskOverhead: Double = 0) {
        let usable = history.flatMap { $0.bytesPerSecond.isFinite && $0.bytesPerSecond > 0 ? $0 : nil }
        switch (speed > 0, usable) {
        case (true, let history?):
            if Double(speed) <= history.bytesPerSecond {
                basis = .policySpeedBelowHistory(speed: speed, history: history)
                bytesPerSecond = Double(speed)
            } else {
                basis = .historyBelowPolicySpeed(history: history, speed: speed)
                bytesPerSecond = history.bytesPerSecond
            }
        case (true, nil):
            basis = .policySpeed(speed)
            bytesPerSecond = Double(speed)
        case (false, let history?):
            basis = .history(history)
            bytesPerSecond = history.bytesPerSecond
        case (false, nil):
            basis = .none
            bytesPerSecond = nil
        }
        self.perDiskOverhead = max(0, perDiskOverhead)
        if let rate = bytesPerSecond {
            let overhead = self.perDiskOverhead
            let items = zip(allocatedBytes, pivotGroups).map { bytes, group in
                DiskSchedule.Item(duration: Double(max(0, bytes)) / rate + overhead, pivotGroup: group)
            }
            // Disks copying at once share what the host moves in all, when its history knows it.
            timings = schedule.simulate(items) { usable?.pace($0, perDisk: rate) ?? 1 }
        } else {
            timings = nil
        }
    }

    /// What the estimate rests on, in words: `policy speed 32.0 MiB/s per disk`,
    /// `history: median 412.0 MiB/s per disk over 7 stream copies`, …
    public var basisDescription: String {
        switch basis {
        case .policySpeed(let speed):
            return "policy speed \(Self.rateText(Double(speed))) per disk"
        case .history(let history):
            return "history: \(history.description)"
        case .policySpeedBelowHistory(let speed, let history):
            return "policy speed \(Self.rateText(Double(speed))) per disk (history: \(history.description), faster)"
        case .historyBelowPolicySpeed(let history, let speed):
            return "history: \(history.description) (below the policy speed \(Self.rateText(Double(speed))))"
        case .none:
            return "no estimate: the policy sets no speed and this host's history has no copy to learn a rate from"
        }
    }

    /// `32.0 MiB/s`.
    public static func rateText(_ bytesPerSecond: Double) -> String {
        let bytes = bytesPerSecond.isFinite && bytesPerSecond > 0 ? (bytesPerSecond < 0x1p63 ? Int64(bytesPerSecond) : .max) : 0
        return "\(ByteSize.format(bytes))/s"
    }
}
