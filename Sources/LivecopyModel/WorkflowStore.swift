import Foundation

/// Where plans, disks and their timeline are kept. The engine sees only this protocol;
/// `SQLiteStore` is the real one.
///
/// Every write of a disk or plan is a compare-and-set on its state: it applies only if
/// the row is still in `expecting`, so two writers can never both move one disk.
///
/// The writes a running engine makes (its disks' ledger, its plan's state, progress, the
/// lease, operator request outcomes) are `async`: a commit waits for `fsync` under
/// `synchronous=FULL`, and that wait must not hold a thread of the concurrency pool, where
/// it would delay the lease heartbeat and every other disk. Reads, and the one-shot writes
/// of the CLI (`insertPlan`, `requestCancel`, `requestControl`), stay synchronous.
public protocol WorkflowStore: AnyObject, Sendable {
    /// Records a plan and its disks in one transaction, with a first event.
    func insertPlan(_ plan: NewPlan, at: Date) throws -> (PlanRecord, [DiskRecord])

    func plan(id: Int64) throws -> PlanRecord?
    func disks(ofPlan planId: Int64) throws -> [DiskRecord]
    /// One disk's record, nil if there is none with that id.
    func disk(id: Int64) throws -> DiskRecord?
    func events(ofPlan planId: Int64) throws -> [EventRecord]
    /// The events of one disk of plan `planId`, oldest first (a hook's attempts).
    func events(ofDisk diskId: Int64, planId: Int64) throws -> [EventRecord]

    /// Plans newest first, optionally only in `states` and only touching VM `vm`.
    func plans(states: Set<PlanState>?, vm: String?, limit: Int?) throws -> [PlanRecord]

    /// Writes every mutable column of `disk` if its row is still in state `expecting`,
    /// and appends `event` in the same transaction. Throws a `.conflict` `StoreError` otherwise.
    func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) async throws

    /// The same for a plan.
    func save(plan: PlanRecord, expecting: PlanState, event: NewEvent?, at: Date) async throws

    /// Updates only a disk's progress columns (no event; called every few seconds).
    func saveProgress(diskId: Int64, bytesDone: Int64, bytesTotal: Int64, at: Date) async throws

    /// Appends an event that changes no row.
    func appendEvent(planId: Int64, diskId: Int64?, event: NewEvent, at: Date) async throws

    // MARK: Ownership and cancellation

    /// The process that holds the plan's lease, if any.
    func owner(ofPlan planId: Int64) throws -> PlanOwner?

    /// Takes the plan's lease for `owner` when it is free or when `isGone` says its
    /// holder is gone, in one transaction. Returns the holder taken over from, if any;
    /// throws a `.leaseHeld` `StoreError` when a live process holds it.
    @discardableResult
    func acquireLease(planId: Int64, owner: PlanOwner, isGone: @escaping @Sendable (PlanOwner) -> Bool) async throws -> PlanOwner?

    /// Refreshes the lease's heartbeat; false when `owner` no longer holds it.
    func renewLease(planId: Int64, owner: PlanOwner, at: Date) async throws -> Bool

    /// Gives the lease up if `owner` holds it.
    func releaseLease(planId: Int64, owner: PlanOwner) async throws

    /// Records that the plan must be cancelled (rolled back).
    func requestCancel(planId: Int64, at: Date) throws

    func isCancelRequested(planId: Int64) throws -> Bool

    // MARK: Operator controls (throttle, pause, resume)

    /// The plan's operator settings (defaults when none were recorded).
    func controls(ofPlan planId: Int64) throws -> PlanControls

    /// In one transaction: changes the plan's setting as `action` says, records an open
    /// request for the live owner to apply, and appends an event. Returns the request.
    func requestControl(planId: Int64, _ action: OperatorAction, by requester: String, at: Date) throws -> OperatorRequest

    /// The plan's requests nobody has finished yet, oldest first.
    func openControlRequests(planId: Int64) throws -> [OperatorRequest]

    func controlRequest(id: Int64) throws -> OperatorRequest?

    /// Records a request's outcome (once: a finished request is left as it is), with an event.
    func finishControlRequest(id: Int64, planId: Int64, ok: Bool, outcome: String, at: Date) async throws

    // MARK: Quarantine (`retire_source: quarantine`, `purge`, `restore`)

    /// `save(disk:expecting:event:at:)` that also records `image`, the disk's source just
    /// moved into quarantine, in the same transaction: the disk's move to `completed`
    /// and the image's row are one write.
    func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, quarantining image: NewQuarantinedImage,
              at: Date) async throws

    /// The quarantined image of disk `diskId`, if its source was quarantined.
    func quarantinedImage(ofDisk diskId: Int64) throws -> QuarantinedImage?

    /// The quarantined images of plan `planId`, by id.
    func quarantinedImages(ofPlan planId: Int64) throws -> [QuarantinedImage]

    /// The quarantined images in one of `states`, by id; with `expiredBy`, only those whose
    /// time is up by then.
    func quarantinedImages(in states: Set<QuarantineState>, expiredBy: Date?) throws -> [QuarantinedImage]

    /// Moves image `id` to `state` if it is still in `expecting` (recording `ended_at` when
    /// `state` is final), and appends `event` to its disk's timeline, in one transaction.
    /// Throws a `.conflict` `StoreError` when the image is no longer in `expecting`.
    func saveQuarantine(id: Int64, state: QuarantineState, expecting: QuarantineState, event: NewEvent, at: Date) async throws

    /// How many images quarantine holds, their space and the next expiry.
    func quarantineSummary() throws -> QuarantineSummary

    /// Every disk (of any plan) whose source or destination is `path`.
    func disks(usingPath path: String) throws -> [DiskRecord]
}

extension WorkflowStore {
    /// For stores with no query of their own: the plan's timeline, filtered.
    public func events(ofDisk diskId: Int64, planId: Int64) throws -> [EventRecord] {
        try events(ofPlan: planId).filter { $0.diskId == diskId }
    }

    // Defaults for stores without operator controls (test doubles): nothing is ever set.
    public func controls(ofPlan planId: Int64) throws -> PlanControls { PlanControls() }
    public func requestControl(planId: Int64, _ action: OperatorAction, by requester: String, at: Date) throws -> OperatorRequest {
        throw StoreError(.conflict("this store keeps no operator controls"))
    }
    public func openControlRequests(planId: Int64) throws -> [OperatorRequest] { [] }
    public func controlRequest(id: Int64) throws -> OperatorRequest? { nil }
    public func finishControlRequest(id: Int64, planId: Int64, ok: Bool, outcome: String, at: Date) async throws {}

    // Defaults for stores without quarantine (test doubles): nothing is ever quarantined.
    public func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, quarantining image: NewQuarantinedImage,
                     at: Date) async throws {
        throw StoreError(.conflict("this store keeps no quarantine"))
    }
    public func quarantinedImage(ofDisk diskId: Int64) throws -> QuarantinedImage? { nil }
    public func quarantinedImages(ofPlan planId: Int64) throws -> [QuarantinedImage] { [] }
    public func quarantinedImages(in states: Set<QuarantineState>, expiredBy: Date?) throws -> [QuarantinedImage] { [] }
    public func saveQuarantine(id: Int64, state: QuarantineState, expecting: QuarantineState, event: NewEvent, at: Date) async throws {
        throw StoreError(.conflict("this store keeps no quarantine"))
    }
    public func quarantineSummary() throws -> QuarantineSummary { QuarantineSummary(count: 0, bytes: 0, nextExpiry: nil) }
    public func disks(usingPath path: String) throws -> [DiskRecord] { [] }
}

/// A process that drives a plan: who it is and when it last said it is alive.
public struct PlanOwner: Sendable, Equatable, CustomStringConvertible {
    public let pid: Int32
    public let host: String
    public var heartbeat: Date

    public init(pid: Int32, host: String, heartbeat: Date) {
        self.pid = pid
        self.host = host
        self.heartbeat = heartbeat
    }

    public var description: String { "pid \(pid) on \(host)" }
}
