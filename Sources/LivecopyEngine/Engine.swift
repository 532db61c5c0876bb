// The workflow engine's core: setting up, recording plans, and running a plan under its
// lease. Ownership, operator requests, driving the disks and the reconciliation report
// are extensions in Engine+*.swift.

import Foundation
import Logging
import LivecopyModel
import LivecopyBackend
import Synchronization

/// What a run does with the disks it picks up.
public enum RunMode: Sendable {
    /// Carry every disk forward to `completed`.
    case resume
    /// Roll every disk that is not completed back to its source.
    case rollback
}

/// The workflow engine: checks a plan, records it, and drives every disk of it to a
/// final state, persisting each step through the store before going on.
///
/// It sees the hypervisor only through `Hypervisor`/`VMSession` (QMP is one backend)
/// and SQLite only through `WorkflowStore`. One engine at a time drives a plan: it holds the plan's lease and
/// renews it every `LeaseTiming.heartbeatInterval` on a task of its own (`LeaseHeartbeat`),
/// while another task watches for cancel and operator requests.
public final class Engine: Sendable {
    let store: any WorkflowStore
    let observer: any EngineObserver
    let inspector: any ImageInspector
    let creator: any DestinationCreator
    let sessions: VMSessions
    let me: PlanOwner
    let lease: LeaseTiming
    /// `livecopy serve`'s host-wide limits (nil: only each plan's policy bounds it).
    let hostLimits: HostLimits?
    /// Where each disk waits for its turn to copy: serve's host slots (`hostLimits`), a
    /// fleet agent's copy slots (`FleetAdmission`), or nil: only the plan's policy bounds it.
    let admission: (any CopyAdmission)?
    /// How long a command to a VM may take (the plan's `command_timeout`).
    let commandTimeout: Double
    /// Set by `halt`: every run of this engine stops at once, leaving QEMU's jobs running.
    let halting = Halting()

    /// How long an owner may stay silent before its lease counts as abandoned (default).
    public static let leaseTimeout: Double = LeaseTiming().timeout
    /// How often an owner renews its lease and looks for cancel and operator requests (default).
    public static let heartbeatInterval: Double = LeaseTiming().heartbeatInterval

    /// `lease` and `host` are for tests: a short lease, and an engine that names its host
    /// as another machine would (whose lease is judged by heartbeat age alone).
    ///
    /// `sessions` shares VM connections with other engines of the process (`serve`, which
    /// runs one engine per plan: QEMU serves one client per monitor); `hostLimits` bounds
    /// the disks copying and their bandwidth over every plan `serve` runs; `admission`, a
    /// fleet agent's copy slots, replaces its slots.
    public init(store: any WorkflowStore, hypervisor: any Hypervisor, observer: any EngineObserver = SilentObserver(),
                inspector: any ImageInspector = QemuImgInspector(), creator: any DestinationCreator = ExclusiveOverlayCreator(),
                commandTimeout: Double = 30, lease: LeaseTiming = LeaseTiming(), host: String = Engine.thisHost,
                sessions: VMSessions? = nil, hostLimits: HostLimits? = nil, admission: (any CopyAdmission)? = nil) {
        self.admission = admission ?? hostLimits
        self.store = store
        self.observer = observer
        self.inspector = inspector
        self.creator = creator
        self.sessions = sessions ?? VMSessions(hypervisor: hypervisor, commandTimeout: commandTimeout)
        self.hostLimits = hostLimits
        self.commandTimeout = commandTimeout
        self.lease = lease
        self.me = PlanOwner(pid: getpid(), host: host, heartbeat: Date())
    }

    /// Closes every VM session the engine opened.
    public func shutdown() async {
        await sessions.closeAll()
    }

    /// Checks `plan` against the VMs and files (touching nothing) and returns its disks
    /// with their sources and allocated bytes discovered. Throws `PreflightError` with the
    /// first problem (and how many more there are: `validate` lists them all).
    public func preflight(_ plan: Plan, policy: Policy) async throws -> [NewPlan.Disk] {
        let report = try await validate(plan, policy: policy)
        if let refusal = report.refusal { throw PreflightError(refusal) }
        return report.disks.compactMap(\.found)
    }

    /// Every check `preflight` makes, every problem found, and what was found of each
    /// disk and each destination filesystem; records and touches nothing. Throws only
    /// when the store cannot be read.
    public func validate(_ plan: Plan, policy: Policy) async throws -> PreflightReport {
        try await makePreflight().report(Preflight.VMEntry.of(plan), policy: policy, purpose: .newPlan)
    }

    /// The checks that need no VM: the VM addresses (a QMP socket's owner and mode),
    /// destinations and other plans' claims. For `submit --detach`.
    public func checkOffline(_ plan: Plan, policy: Policy) throws {
        try makePreflight().checkOffline(plan, policy: policy)
    }

    /// The preflight over this engine's sessions, store and image inspector.
    func makePreflight() -> Preflight {
        Preflight(sessions: sessions, store: store, inspector: inspector)
    }

    /// A fleet's submit: checks what the store can tell of `plan` (one host's part), away from its host.
    public func checkClaims(_ plan: Plan) throws {
        try makePreflight().checkClaims(plan)
    }

    /// Records a checked plan as `pending` (to be run later or now; in a fleet store, by
    /// `host`'s agent).
    public func record(_ plan: Plan, policy: Policy, disks: [NewPlan.Disk], host: String? = nil) throws -> PlanRecord {
        let new = NewPlan(name: plan.name, policyReference: plan.policyReference, policy: policy, state: .pending, disks: disks,
                          host: host)
        return try store.insertPlan(new, at: Date()).0
    }

    /// Records a plan that preflight refused, with its reason, so history shows it.
    public func recordRefused(_ plan: Plan, policy: Policy, reason: String) throws -> PlanRecord {
        let disks = plan.allDisks.map { NewPlan.Disk(vm: $0.vm, disk: $0.disk, strategy: policy.strategy) }
        let new = NewPlan(name: plan.name, policyReference: plan.policyReference, policy: policy, state: .refused,
                          error: reason, disks: disks)
        return try store.insertPlan(new, at: Date()).0
    }


    // MARK: - Running

    /// Drives plan `id` until every disk rests, and returns the plan in its new state.
    /// `mode` rolls back instead of resuming; a cancel request (from `livecopy cancel`)
    /// seen meanwhile stops the forward work and rolls back too. Throws `LeaseLost` when
    /// the plan's lease is gone meanwhile (the disks were left as they were).
    public func run(planId: Int64, mode: RunMode = .resume) async throws -> PlanRecord {
        guard let plan = try store.plan(id: planId) else { throw PreflightError("no plan with id \(planId)") }
        guard !plan.state.isFinal else { throw PreflightError("plan \(planId) is \(plan.state.rawValue) already") }
        if let reason = halting.reason { throw DrivingHalted(planId: planId, reason: reason) }
        let claim = PlanOwner(pid: me.pid, host: me.host, heartbeat: Date())
        // A fleet agent's claim gave the lease to this process already: no takeover then.
        if let previous = try await store.acquireLease(planId: planId, owner: claim, isGone: isGoneHere),
           previous.pid != claim.pid || previous.host != claim.host {
            observer.note(nil, "plan \(planId): took over from \(previous), which is gone")
        }
        logger.debug("lease acquired", metadata: ["plan": "\(planId)", "owner": "\(claim)"])
        let outcome: Result<PlanRecord, Error>
        do {
            outcome = .success(try await drive(plan, mode: mode, leaseTakenAt: claim.heartbeat))
        } catch {
            outcome = .failure(error)
        }
        try? await store.releaseLease(planId: planId, owner: me)
        logger.debug("lease released", metadata: ["plan": "\(planId)", "owner": "\(me)"])
        return try outcome.get()
    }

    /// `run`'s work while it holds the lease: a detached plan's checks on its first run;
    /// then the disks' forward work (then, if asked, the rollback) on tasks the lease
    /// heartbeat stops if the lease is gone, the heartbeat on a task of its own, and
    /// cancel and operator requests on a third.
    private func drive(_ plan: PlanRecord, mode: RunMode, leaseTakenAt: Date) async throws -> PlanRecord {
        let planId = plan.id
        let recorded = try store.disks(ofPlan: planId)
        if mode == .resume, Self.isDetachedAndUntouched(plan, disks: recorded),
           let reason = await refusalOfDetached(recorded, planId: planId, policy: plan.policy) {
            try await refuseDetached(planId: planId, disks: recorded, reason: reason)
            guard let refused = try store.plan(id: planId) else { throw PreflightError("no plan with id \(planId)") }
            return refused
        }
        try await movePlan(planId, to: .running, detail: "driven by \(me)")

        let cancelled = CancelFlag()
        let leaseGone = LeaseGone()
        let driving = DrivingTasks()
        let haltToken = halting.onHalt { driving.stopAll() }
        defer { halting.remove(haltToken) }
        let heartbeat = Task {
            let beat = LeaseHeartbeat(store: self.store, planId: planId, owner: self.me, timing: self.lease, observer: self.observer)
            guard let cause = await beat.run(acquired: leaseTakenAt) else { return }
            leaseGone.set(cause)
            self.observer.note(nil, "\(LeaseLost(planId: planId, cause: cause)); stopping")
            driving.stopAll()
        }
        defer { heartbeat.cancel() }
        let forward = Task { () -> Error? in
            if mode == .rollback || (try? self.store.isCancelRequested(planId: planId)) == true { return nil }
            return await self.driveDisks(planId: planId, policy: plan.policy, snapshots: VMSnapshotBarrier()) { workflow, settled in
                try await workflow.run(settledBySnapshot: settled)
            }
        }
        driving.add(forward)
        // Cancel and operator requests (throttle, pause, resume): an operation that hangs
        // here delays only this task, never the heartbeat.
        let requests = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(self.lease.heartbeatInterval))
                if Task.isCancelled { break }
                if (try? self.store.isCancelRequested(planId: planId)) == true, !cancelled.isSet {
                    cancelled.set()
                    self.observer.note(nil, "plan \(planId): cancel requested; rolling back")
                    forward.cancel()
                }
                await self.applyOperatorRequests(planId: planId)
            }
        }
        defer { requests.cancel() }
        let forwardError = await forward.value
        if let cause = leaseGone.cause { throw LeaseLost(planId: planId, cause: cause) }
        if let reason = halting.reason { throw try await halted(planId, reason: reason) }
        var rollbackError: Error?
        let cancelRequested = try store.isCancelRequested(planId: planId)
        if mode == .rollback || cancelled.isSet || cancelRequested {
            let reason = mode == .rollback ? "rollback requested" : "plan cancelled"
            // Disks never started need no VM to be dropped.
            for disk in try store.disks(ofPlan: planId) where disk.state == .pending {
                try await DiskLedger(disk: disk, store: store, observer: observer, hooks: plan.policy.hooks)
                    .transition(to: .rolledBack, "\(reason): nothing had been done")
            }
            let rollback = Task { () -> Error? in
                await self.driveDisks(planId: planId, policy: plan.policy, snapshots: nil) { workflow, _ in
                    try await workflow.beginRollback(reason)
                    // Only disks now rolling back go on; one that needs attention stays put.
                    guard workflow.state == .rollingBack else { return }
                    try await workflow.run()
                }
            }
            driving.add(rollback)
            rollbackError = await rollback.value
            if let cause = leaseGone.cause { throw LeaseLost(planId: planId, cause: cause) }
            if let reason = halting.reason { throw try await halted(planId, reason: reason) }
        }
        if let error = forwardError ?? rollbackError { throw error }
        return try await finish(planId: planId)
    }

    /// A flag set once, read from several tasks.
    private final class CancelFlag: Sendable {
        private let value = Mutex(false)
        var isSet: Bool { value.withLock { $0 } }
        func set() { value.withLock { $0 = true } }
    }

    /// Why the lease is gone, once the heartbeat says so; read from several tasks.
    private final class LeaseGone: Sendable {
        private let value = Mutex<LeaseLost.Cause?>(nil)
        var cause: LeaseLost.Cause? { value.withLock { $0 } }
        func set(_ cause: LeaseLost.Cause) { value.withLock { $0 = $0 ?? cause } }
    }

    /// The tasks driving a plan's disks, all cancelled at once when the lease is gone
    /// (a task added after that is cancelled as it is added).
    private final class DrivingTasks: Sendable {
        private struct State {
            var tasks: [Task<Error?, Never>] = []
            var stopped = false
        }
        private let state = Mutex(State())

        func add(_ task: Task<Error?, Never>) {
            let cancelNow = state.withLock { state -> Bool in
                if !state.stopped { state.tasks.append(task) }
                return state.stopped
            }
            if cancelNow { task.cancel() }
        }

        func stopAll() {
            let all = state.withLock { state -> [Task<Error?, Never>] in
                state.stopped = true
                return state.tasks
            }
            for task in all { task.cancel() }
        }
    }

    /// Moves the plan through the plan transition table (a no-op if already there).
    private func movePlan(_ planId: Int64, to next: PlanState, detail: String) async throws {
        guard var plan = try store.plan(id: planId) else { throw PreflightError("no plan with id \(planId)") }
        let previous = plan.state
        guard previous != next else { return }
        guard previous.canMove(to: next) else {
            throw IllegalTransition(subject: "plan \(planId)", from: previous.rawValue, to: next.rawValue)
        }
        plan.state = next
        plan.finishedAt = next.isFinal ? Date() : nil
        if next == .running { plan.error = nil }
        if next != .running {
            let disks = try store.disks(ofPlan: planId)
            let troubled = disks.filter { $0.error != nil && $0.state != .completed && $0.state != .rolledBack }
            plan.error = troubled.isEmpty ? nil
                : troubled.map { "\($0.vmName)/\($0.device): \($0.error ?? "")" }.joined(separator: "; ")
        }
        try await store.save(plan: plan, expecting: previous,
                       event: NewEvent(kind: .transition, from: previous.rawValue, to: next.rawValue, detail: detail),
                       at: Date())
        logger.debug("plan transition", metadata: [
            "plan": "\(planId)", "from": "\(previous.rawValue)", "to": "\(next.rawValue)", "detail": "\(detail)",
        ])
        EdgeLog.record("plan", from: previous.rawValue, to: next.rawValue)
        CrashPoint.reach("plan:\(next.rawValue)")
    }

    /// Sets the plan's state from its disks' states.
    private func finish(planId: Int64) async throws -> PlanRecord {
        let disks = try store.disks(ofPlan: planId)
        let outcome = PlanState.outcome(of: disks.map(\.state))
        let completed = disks.filter { $0.state == .completed }.count
        try await movePlan(planId, to: outcome, detail: "\(completed) of \(disks.count) disk(s) completed")
        guard let plan = try store.plan(id: planId) else { throw PreflightError("no plan with id \(planId)") }
        return plan
    }
}
