// The copy rates this host reached before, read from the plans its database recorded:
// `CopyHistory`, which `validate` estimates a plan's duration from.

import Foundation
import LivecopyModel

/// What this host's history says of its copy rate per disk, for one strategy: the median
/// over the newest copies that tell it.
///
/// A copy tells the host's rate when:
/// - its disk `completed`, with its allocated bytes recorded (preflight records them since
///   schema 0007);
/// - it ran once: one copy job started (its `block-stream` or `blockdev-mirror` intent)
///   and one transition into `streaming` or `mirroring` (a copy resumed after a failure
///   or a crash spans the interruption);
/// - nothing slowed it on purpose: its plan's policy sets no `speed` and no operator
///   throttled or paused the plan (a throttled copy runs at its limit, which says
///   nothing of what the host can do).
///
/// Its rate is its allocated bytes over the time from the copy job's start (that intent;
/// the transition into `streaming` when there is none) to its transition into
/// `retiring`. A copy that shared the host with others of its plan was slower than a lone
/// one: such copies tell instead what the host moves in all (`HistoryRate`).
public enum CopyHistory {
    /// The median is over at most this many copies, the newest.
    public static let newestCopies = 20
    /// At most this many plans, newest first, are looked through.
    public static let plansLookedAt = 200

    /// The median rates of the newest copies of `strategy` that tell the host's rate; nil
    /// when there is none. A copy counts as alone when on average fewer than 1.5 copies of
    /// its plan ran during it (itself included); otherwise it shared the host, and its rate
    /// times that average is what the host moved in all meanwhile.
    public static func rate(of strategy: CopyStrategy, in store: any WorkflowStore) throws -> HistoryRate? {
        var alone: [Double] = []
        var together: [Double] = []
        let states: Set<PlanState> = [.running, .completed, .failed, .needsAttention, .rolledBack]
        for plan in try store.plans(states: states, vm: nil, limit: plansLookedAt) {
            guard plan.policy.speed == 0 else { continue }
            let allDisks = try store.disks(ofPlan: plan.id)
            let disks = allDisks.filter {
                $0.strategy == strategy && $0.state == .completed && ($0.allocatedBytes ?? 0) > 0
            }
            guard !disks.isEmpty else { continue }
            let events = try store.events(ofPlan: plan.id)
            guard !events.contains(where: isSlowedOnPurpose), try store.controls(ofPlan: plan.id).speedOverride == nil else {
                continue
            }
            // Every copy of the plan that ran once occupies the host, whatever its strategy.
            let eventsByDisk = Dictionary(grouping: events.filter { $0.diskId != nil }, by: { $0.diskId! })
            var intervals: [Int64: CopyInterval] = [:]
            for disk in allDisks {
                intervals[disk.id] = copyInterval(in: eventsByDisk[disk.id] ?? [])
            }
            let all = Array(intervals.values)
            // Newest first within the plan too.
            for disk in disks.reversed() {
                guard let interval = intervals[disk.id], let bytes = disk.allocatedBytes else { continue }
                let rate = Double(bytes) / interval.seconds
                let sharing = averageConcurrency(during: interval, of: all)
                if sharing < 1.5 { alone.append(rate) } else { together.append(rate * sharing) }
                if alone.count + together.count == newestCopies { break }
            }
            if alone.count + together.count == newestCopies { break }
        }
        let aggregate = median(together)
        guard let perDisk = median(alone) ?? aggregate else { return nil }
        return HistoryRate(strategy: strategy, bytesPerSecond: perDisk, copies: alone.count + together.count,
                           aggregateBytesPerSecond: aggregate, sharedCopies: together.count)
    }

    /// When a copy ran: from its copy job's start to its transition into `retiring`.
    struct CopyInterval {
        let start: Date
        let end: Date
        var seconds: Double { end.timeIntervalSince(start) }
    }

    /// How many of `intervals` (the copy itself among them) ran, on average over time,
    /// during `copy`.
    static func averageConcurrency(during copy: CopyInterval, of intervals: [CopyInterval]) -> Double {
        guard copy.seconds > 0 else { return 1 }
        let overlap = intervals.reduce(0.0) { total, other in
            let start = max(copy.start, other.start)
            let end = min(copy.end, other.end)
            return total + max(0, end.timeIntervalSince(start))
        }
        return max(1, overlap / copy.seconds)
    }

    /// An operator's throttle or pause of the plan, as the store records its request
    /// (`OperatorAction`'s description, "requested by").
    static func isSlowedOnPurpose(_ event: EventRecord) -> Bool {
        event.kind == .note && event.diskId == nil && event.detail.contains(" requested by ")
            && (event.detail.hasPrefix("throttle") || event.detail.hasPrefix("pause"))
    }

    /// When a disk copied, from its own events (`mine`): from its copy job's start to its
    /// transition into `retiring`; nil when the copy did not run exactly once.
    static func copyInterval(in mine: [EventRecord]) -> CopyInterval? {
        let copyStates: Set<String> = [DiskState.streaming.rawValue, DiskState.mirroring.rawValue]
        let entries = mine.filter { $0.kind == .transition && copyStates.contains($0.to ?? "") }
        let jobStarts = mine.filter {
            $0.kind == .intent && ($0.detail.hasPrefix(DiskIntent.stream.rawValue + ":")
                                   || $0.detail.hasPrefix(DiskIntent.mirror.rawValue + ":"))
        }
        let ends = mine.filter {
            $0.kind == .transition && copyStates.contains($0.from ?? "") && $0.to == DiskState.retiring.rawValue
        }
        guard entries.count == 1, jobStarts.count <= 1, ends.count == 1, let end = ends.first?.at else { return nil }
        guard let start = jobStarts.first?.at ?? entries.first?.at else { return nil }
        let interval = CopyInterval(start: start, end: end)
        return interval.seconds.isFinite && interval.seconds > 0 ? interval : nil
    }

    /// The median of `values`; nil for none.
    static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}
