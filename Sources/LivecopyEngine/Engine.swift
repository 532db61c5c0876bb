import Foundation
import LivecopyModel
import QMP

/// The workflow engine: checks a plan, records it, and drives every disk of it to a
/// final state, persisting each step through the store before going on.
///
/// It sees QMP only through `QMPConnector`/`QMPSession` and SQLite only through
/// `WorkflowStore`.
public final class Engine: @unchecked Sendable {
    private let store: any WorkflowStore
    private let observer: any EngineObserver
    private let sessions: VMSessions

    public init(store: any WorkflowStore, connector: any QMPConnector, observer: any EngineObserver = SilentObserver(),
                commandTimeout: Double = 30) {
        self.store = store
        self.observer = observer
        self.sessions = VMSessions(connector: connector, commandTimeout: commandTimeout)
    }

    /// Closes every QMP session the engine opened.
    public func shutdown() async {
        await sessions.closeAll()
    }

    /// Checks `plan` against the VMs and files (touching nothing) and returns its disks
    /// with their sources discovered. Throws `PreflightError`.
    public func preflight(_ plan: Plan, policy: Policy) async throws -> [NewPlan.Disk] {
        try await Preflight(sessions: sessions, store: store).run(plan, policy: policy)
    }

    /// Records a checked plan as `pending` (to be run later or now).
    public func record(_ plan: Plan, policy: Policy, disks: [NewPlan.Disk]) throws -> PlanRecord {
        let new = NewPlan(name: plan.name, policyReference: plan.policyReference, policy: policy, state: .pending, disks: disks)
        return try store.insertPlan(new, at: Date()).0
    }

    /// Records a plan that preflight refused, with its reason, so history shows it.
    public func recordRefused(_ plan: Plan, policy: Policy, reason: String) throws -> PlanRecord {
        let disks = plan.allDisks.map {
            NewPlan.Disk(vmName: $0.vm.name, qmpSocket: $0.vm.qmp, device: $0.disk.device, destination: $0.disk.destination)
        }
        let new = NewPlan(name: plan.name, policyReference: plan.policyReference, policy: policy, state: .refused,
                          error: reason, disks: disks)
        return try store.insertPlan(new, at: Date()).0
    }

    /// Drives plan `id` until every disk rests, and returns the plan in its new state.
    public func run(planId: Int64) async throws -> PlanRecord {
        guard var plan = try store.plan(id: planId) else { throw PreflightError("no plan \(planId)") }
        if plan.state != .running {
            let previous = plan.state
            guard previous.canMove(to: .running) else {
                throw PreflightError("plan \(planId) is \(previous.rawValue) and cannot run")
            }
            plan.state = .running
            plan.error = nil
            try store.save(plan: plan, expecting: previous,
                           event: NewEvent(kind: .transition, from: previous.rawValue, to: PlanState.running.rawValue,
                                           detail: "started by pid \(getpid())"),
                           at: Date())
        }
        let disks = try store.disks(ofPlan: planId).filter { !$0.state.isFinal && $0.state != .needsAttention }
        let policy = plan.policy
        var engineError: Error?
        await withTaskGroup(of: Error?.self) { group in
            var running = 0
            for disk in disks {
                if running == policy.maxParallelDisks {
                    if let error = await group.next() ?? nil { engineError = engineError ?? error }
                    running -= 1
                }
                group.addTask { await self.drive(disk, policy: policy) }
                running += 1
            }
            for await error in group where error != nil { engineError = engineError ?? error }
        }
        if let engineError { throw engineError }
        return try finish(planId: planId)
    }

    /// Drives one disk; returns an error only when the record itself is in doubt.
    private func drive(_ disk: DiskRecord, policy: Policy) async -> Error? {
        let ledger = DiskLedger(disk: disk, store: store, observer: observer)
        do {
            let session: any QMPSession
            do {
                session = try await sessions.session(for: disk.qmpSocket)
            } catch {
                let reason = "VM '\(disk.vmName)' unreachable: \(describe(error))"
                if disk.state.canMove(to: .failed) {
                    try ledger.transition(to: .failed, reason) { $0.error = reason }
                } else {
                    try ledger.note(reason)
                }
                return nil
            }
            try await DiskWorkflow(ledger: ledger, session: session, policy: policy).run()
            return nil
        } catch {
            return error
        }
    }

    /// Sets the plan's state from its disks' states.
    private func finish(planId: Int64) throws -> PlanRecord {
        guard var plan = try store.plan(id: planId) else { throw PreflightError("no plan \(planId)") }
        let disks = try store.disks(ofPlan: planId)
        let outcome = PlanState.outcome(of: disks.map(\.state))
        let previous = plan.state
        guard previous != outcome else { return plan }
        plan.state = outcome
        plan.finishedAt = outcome.isFinal ? Date() : nil
        let troubled = disks.filter { $0.error != nil && $0.state != .completed && $0.state != .rolledBack }
        plan.error = troubled.isEmpty ? nil
            : troubled.map { "\($0.vmName)/\($0.device): \($0.error ?? "")" }.joined(separator: "; ")
        try store.save(plan: plan, expecting: previous,
                       event: NewEvent(kind: .transition, from: previous.rawValue, to: outcome.rawValue,
                                       detail: "\(disks.filter { $0.state == .completed }.count) of \(disks.count) disk(s) completed"),
                       at: Date())
        return plan
    }
}

extension Engine {
    /// The checks that need no VM: destinations and other plans' claims. For `submit --detach`.
    public func checkOffline(_ plan: Plan) throws {
        try Preflight(sessions: sessions, store: store).checkOffline(plan)
    }
}
