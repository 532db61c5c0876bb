// What `history`, `status` and `watch` ask of a store beyond the engine's needs: plans by
// filter (`PlanFilter`), their totals (`PlanSummary`), the latest event of each disk.

import Foundation

/// Which plans a listing selects: by state, by VM, by creation time.
public struct PlanFilter: Sendable, Equatable {
    /// Only plans in these states; nil: any.
    public var states: Set<PlanState>?
    /// Only plans with a disk of this VM.
    public var vm: String?
    /// Only plans created at or after this.
    public var createdFrom: Date?
    /// Only plans created before this.
    public var createdBefore: Date?

    public init(states: Set<PlanState>? = nil, vm: String? = nil, createdFrom: Date? = nil, createdBefore: Date? = nil) {
        self.states = states
        self.vm = vm
        self.createdFrom = createdFrom
        self.createdBefore = createdBefore
    }
}

/// The totals of the plans a `PlanFilter` selects (`history`'s summary line):
///
/// - `plans`: the plans selected; `disks`: all their disks; `completedDisks`: those `completed`;
/// - `bytes`: the allocated bytes of the completed disks (what their copy jobs copied, as
///   preflight measured it; a disk recorded without it, by a release before schema 0007
///   or detached, counts 0);
/// - `timedBytes` over `copySeconds`: the completed disks with allocated bytes and a copy
///   time, whose copy time is from the disk's first transition into `streaming` or
///   `mirroring` to its last into `retiring` (an interruption, a pause included);
///   `meanRate` is their quotient, nil when no disk is timed.
public struct PlanSummary: Sendable, Equatable {
    public var plans: Int
    public var disks: Int
    public var completedDisks: Int
    public var bytes: Int64
    public var timedBytes: Int64
    public var copySeconds: Double

    public init(plans: Int, disks: Int, completedDisks: Int, bytes: Int64, timedBytes: Int64, copySeconds: Double) {
        self.plans = plans
        self.disks = disks
        self.completedDisks = completedDisks
        self.bytes = bytes
        self.timedBytes = timedBytes
        self.copySeconds = copySeconds
    }

    /// Bytes per second: `timedBytes` over `copySeconds`; nil when no copy was timed.
    public var meanRate: Double? {
        copySeconds > 0 ? Double(timedBytes) / copySeconds : nil
    }
}

/// Everything the commands ask of a store: the engine's `WorkflowStore`, and the queries
/// of `history`, `status`, `watch` and `--metrics`. `SQLiteStore` (one host) and
/// `PostgresStore` (the fleet) are the two.
public protocol PlanStore: WorkflowStore {
    /// Where the store is, for messages (a file's path, or a URL without its password).
    var location: String { get }

    /// Plans `filter` selects, newest first, at most `limit`.
    func plans(_ filter: PlanFilter, limit: Int?) throws -> [PlanRecord]

    /// The totals of the plans `filter` selects, in one query.
    func summary(_ filter: PlanFilter) throws -> PlanSummary

    /// The latest event of each disk of plan `planId`, by disk id.
    func latestDiskEvents(ofPlan planId: Int64) throws -> [Int64: EventRecord]

    /// How many plans and disks are in each state.
    func stateCounts() throws -> StateCounts

    /// The disks of each of `planIds`, by plan id, each plan's in id order (`status`: a
    /// fleet store answers in one statement instead of one a plan).
    func disks(ofPlans planIds: [Int64]) throws -> [Int64: [DiskRecord]]

    /// `latestDiskEvents(ofPlan:)` of each of `planIds`, by plan id.
    func latestDiskEvents(ofPlans planIds: [Int64]) throws -> [Int64: [Int64: EventRecord]]

    /// `controls(ofPlan:)` of each of `planIds`, by plan id.
    func controls(ofPlans planIds: [Int64]) throws -> [Int64: PlanControls]

    /// `owner(ofPlan:)` of each of `planIds` that has one, by plan id.
    func owners(ofPlans planIds: [Int64]) throws -> [Int64: PlanOwner]
}

extension PlanStore {
    /// One query a plan (a local file answers each in microseconds).
    public func disks(ofPlans planIds: [Int64]) throws -> [Int64: [DiskRecord]] {
        var result: [Int64: [DiskRecord]] = [:]
        for id in planIds { result[id] = try disks(ofPlan: id) }
        return result
    }

    public func latestDiskEvents(ofPlans planIds: [Int64]) throws -> [Int64: [Int64: EventRecord]] {
        var result: [Int64: [Int64: EventRecord]] = [:]
        for id in planIds { result[id] = try latestDiskEvents(ofPlan: id) }
        return result
    }

    public func controls(ofPlans planIds: [Int64]) throws -> [Int64: PlanControls] {
        var result: [Int64: PlanControls] = [:]
        for id in planIds { result[id] = try controls(ofPlan: id) }
        return result
    }

    public func owners(ofPlans planIds: [Int64]) throws -> [Int64: PlanOwner] {
        var result: [Int64: PlanOwner] = [:]
        for id in planIds { result[id] = try owner(ofPlan: id) }
        return result
    }
}
