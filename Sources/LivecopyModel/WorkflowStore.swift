import Foundation

/// Where plans, disks and their timeline are kept. The engine sees only this protocol;
/// `SQLiteStore` is the real one.
///
/// Every write of a disk or plan is a compare-and-set on its state: it applies only if
/// the row is still in `expecting`, so two writers can never both move one disk.
public protocol WorkflowStore: AnyObject, Sendable {
    /// Records a plan and its disks in one transaction, with a first event.
    func insertPlan(_ plan: NewPlan, at: Date) throws -> (PlanRecord, [DiskRecord])

    func plan(id: Int64) throws -> PlanRecord?
    func disks(ofPlan planId: Int64) throws -> [DiskRecord]
    func events(ofPlan planId: Int64) throws -> [EventRecord]

    /// Plans newest first, optionally only in `states` and only touching VM `vm`.
    func plans(states: Set<PlanState>?, vm: String?, limit: Int?) throws -> [PlanRecord]

    /// Writes every mutable column of `disk` if its row is still in state `expecting`,
    /// and appends `event` in the same transaction. Throws `StoreConflict` otherwise.
    func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) throws

    /// The same for a plan.
    func save(plan: PlanRecord, expecting: PlanState, event: NewEvent?, at: Date) throws

    /// Updates only a disk's progress columns (no event; called every few seconds).
    func saveProgress(diskId: Int64, bytesDone: Int64, bytesTotal: Int64, at: Date) throws

    /// Appends an event that changes no row.
    func appendEvent(planId: Int64, diskId: Int64?, event: NewEvent, at: Date) throws
}

/// A compare-and-set write found the row in another state than expected.
public struct StoreConflict: Error, CustomStringConvertible, Sendable {
    public let what: String
    public init(_ what: String) { self.what = what }
    public var description: String { "record changed concurrently: \(what)" }
}
