import Foundation
import Logging
import LivecopyModel
import LivecopyBackend

/// A plan recorded with `submit --detach` was checked without its VMs: its sources, the
/// destinations' free space, foreign jobs and migrations are unknown until it runs. Its
/// first run checks them, for all its disks at once, before any snapshot; a plan that
/// fails a check is refused with the same one-line message `submit` gives.
extension Engine {
    /// Whether plan `plan` was recorded detached and never started: every disk pending
    /// with no source known.
    static func isDetachedAndUntouched(_ plan: PlanRecord, disks: [DiskRecord]) -> Bool {
        plan.state == .pending && !disks.isEmpty && disks.allSatisfy { $0.state == .pending && $0.source == nil }
    }

    /// The checks `submit` makes, for a detached plan's disks (its own claims and space
    /// aside): every problem in one line, or nil when they pass or cannot be made now (a
    /// VM unreachable: the run then goes on and leaves its disks as they are).
    func refusalOfDetached(_ disks: [DiskRecord], planId: Int64, policy: Policy) async -> String? {
        do {
            let report = try await makePreflight().report(Preflight.VMEntry.of(disks), policy: policy,
                                                          purpose: .detachedPlan(id: planId))
            return report.problems.isEmpty ? nil : report.problems.joined(separator: "; ")
        } catch {
            return describe(error)
        }
    }

    /// Records plan `planId` (pending) as refused for `reason`, its disks dropped with it.
    func refuseDetached(planId: Int64, disks: [DiskRecord], reason: String) async throws {
        for disk in disks {
            // Refused before anything was touched: no VM manager has anything to learn.
            try await DiskLedger(disk: disk, store: store, observer: observer, hooks: .none)
                .transition(to: .rolledBack, "refused before anything was touched: \(reason)") { $0.error = reason }
        }
        guard var plan = try store.plan(id: planId) else { throw PreflightError("no plan with id \(planId)") }
        let previous = plan.state
        plan.state = .refused
        plan.error = reason
        plan.finishedAt = Date()
        try await store.save(plan: plan, expecting: previous,
                       event: NewEvent(kind: .transition, from: previous.rawValue, to: PlanState.refused.rawValue, detail: "refused: \(reason)"),
                       at: Date())
        logger.debug("plan transition", metadata: [
            "plan": "\(planId)", "from": "\(previous.rawValue)", "to": "\(PlanState.refused.rawValue)", "detail": "refused: \(reason)",
        ])
        EdgeLog.record("plan", from: previous.rawValue, to: PlanState.refused.rawValue)
        observer.note(nil, "plan \(planId) refused: \(reason)")
    }
}
