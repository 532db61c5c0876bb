// What `livecopy watch` shows at one refresh: `WatchFrame`, read from the store by
// `WatchReader`, which keeps the samples each disk's rate is measured from.

import Foundation
import LivecopyModel
import LivecopyStore

/// One refresh of `livecopy watch`: the watched plans, and for each disk its progress as
/// its engine last recorded it, its rate, its time left and its newest event.
struct WatchFrame: Sendable, Equatable {
    /// One watched plan.
    struct Plan: Sendable, Equatable {
        var id: Int64
        var name: String?
        var state: PlanState
        /// `livecopy pause` is in force.
        var paused: Bool
        /// `livecopy throttle`'s speed, bytes per second; nil: the policy's.
        var speedOverride: Int64?
        var disks: [Disk]
    }

    /// One disk of a watched plan.
    struct Disk: Sendable, Equatable {
        var id: Int64
        var vmName: String
        var device: String
        var state: DiskState
        /// The copy job's position and length as last recorded (the progress columns:
        /// holes included, as `status`'s POSITION).
        var bytesDone: Int64
        var bytesTotal: Int64
        /// When the progress columns (or the disk's record) were last written.
        var updatedAt: Date
        /// Bytes of position per second, measured from the recorded progress; nil while unknown.
        var rate: Double?
        /// Seconds left at `rate`; nil while unknown.
        var secondsLeft: Double?
        var lastEvent: EventRecord?
        var error: String?

        var label: String { "\(vmName)/\(device)" }

        /// `bytesDone` over `bytesTotal`, 0 to 1 (0 while the length is unknown).
        var fraction: Double {
            bytesTotal > 0 ? ProgressLine.clamped(Double(bytesDone) / Double(bytesTotal)) : 0
        }
    }

    /// When the frame was read.
    var takenAt: Date
    var plans: [Plan]

    /// A watched plan is `running` (`--until-done` waits until none is).
    var isAnyPlanRunning: Bool { plans.contains { $0.state == .running } }
}

/// Reads `WatchFrame`s from the store, only reading. Each disk's rate comes from the
/// progress columns its engine writes every few seconds: the position recorded at each
/// write's timestamp (`updated_at`) is a sample for a `CopyRateEstimator` (the position's
/// difference over a window of 10 s), so the rate does not depend on how often `watch`
/// refreshes, and one frame alone (`--once`) has none yet.
struct WatchReader {
    /// Only this plan (any state); nil: every plan not final.
    let planId: Int64?
    /// Per disk id, the samples of its copy job's position.
    private var estimators: [Int64: CopyRateEstimator] = [:]

    /// The plans `watch` shows by default: those not final, as `status` lists them.
    static let watchedStates: Set<PlanState> = [.pending, .running, .failed, .needsAttention]

    init(planId: Int64?) {
        self.planId = planId
    }

    /// The frame the store holds now.
    mutating func read(_ store: any PlanStore, at now: Date) throws -> WatchFrame {
        let records = try planId.map { [try requirePlan($0, in: store)] }
            ?? store.plans(states: Self.watchedStates, vm: nil, limit: nil).reversed()
        var plans: [WatchFrame.Plan] = []
        for record in records {
            let controls = try store.controls(ofPlan: record.id)
            let latest = try store.latestDiskEvents(ofPlan: record.id)
            let disks = try store.disks(ofPlan: record.id).map { disk in
                watched(disk, lastEvent: latest[disk.id], running: record.state == .running)
            }
            plans.append(WatchFrame.Plan(id: record.id, name: record.name, state: record.state, paused: controls.paused,
                                         speedOverride: controls.speedOverride, disks: disks))
        }
        return WatchFrame(takenAt: now, plans: plans)
    }

    /// `disk` as watched: its progress recorded as a sample, and its rate while it copies.
    private mutating func watched(_ disk: DiskRecord, lastEvent: EventRecord?, running: Bool) -> WatchFrame.Disk {
        var rate: Double?
        var secondsLeft: Double?
        if running && Self.isCopying(disk.state) && disk.bytesTotal > 0 {
            var estimator = estimators[disk.id].flatMap { $0.total == disk.bytesTotal ? $0 : nil }
                ?? CopyRateEstimator(total: disk.bytesTotal, map: nil)
            estimator.record(offset: disk.bytesDone, at: .milliseconds(Int64(disk.updatedAt.timeIntervalSince1970 * 1000)))
            estimators[disk.id] = estimator
            rate = estimator.rate
            secondsLeft = estimator.timeLeft.map { Double($0.components.seconds) + Double($0.components.attoseconds) * 1e-18 }
        } else {
            estimators[disk.id] = nil
        }
        return WatchFrame.Disk(id: disk.id, vmName: disk.vmName, device: disk.device, state: disk.state,
                               bytesDone: disk.bytesDone, bytesTotal: disk.bytesTotal, updatedAt: disk.updatedAt,
                               rate: rate, secondsLeft: secondsLeft, lastEvent: lastEvent, error: disk.error)
    }

    /// A copy job runs in this state (its position moves).
    static func isCopying(_ state: DiskState) -> Bool {
        switch state {
        case .streaming, .mirroring, .rollingBack: return true
        case .pending, .snapshotting, .retiring, .completed, .failed, .rolledBack, .needsAttention: return false
        }
    }
}
