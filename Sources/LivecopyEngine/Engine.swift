import Foundation
import LivecopyModel
import QMP

/// This process no longer holds its lease on a plan, and stopped driving the plan: it was
/// taken over (this process stalled past the lease timeout while another host's livecopy
/// took the plan), or it could not be renewed in time (the database kept failing).
public struct LeaseLost: Error, CustomStringConvertible {
    /// Why the lease is gone.
    public enum Cause: Sendable, Equatable {
        /// Another process holds the lease now.
        case takenOver
        /// Renewals kept failing; the last success was `seconds` ago, past what the lease
        /// timeout allows before another host may take over.
        case notRenewed(seconds: Double, lastError: String)
    }

    public let planId: Int64
    public let cause: Cause

    public var description: String {
        switch cause {
        case .takenOver:
            return "plan \(planId): another livecopy took the plan over; this one stopped driving it"
        case .notRenewed(let seconds, let lastError):
            return "plan \(planId): the lease could not be renewed for \(String(format: "%.1f", seconds)) s (\(lastError)); this livecopy stopped driving the plan so that another may take it over"
        }
    }
}

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
/// It sees QMP only through `QMPConnector`/`QMPSession` and SQLite only through
/// `WorkflowStore`. One engine at a time drives a plan: it holds the plan's lease and
/// renews it every `LeaseTiming.heartbeatInterval` on a task of its own (`LeaseHeartbeat`),
/// while another task watches for cancel and operator requests.
public final class Engine: @unchecked Sendable {
    let store: any WorkflowStore
    let observer: any EngineObserver
    private let inspector: any ImageInspector
    private let creator: any DestinationCreator
    let sessions: VMSessions
    private let me: PlanOwner
    private let lease: LeaseTiming

    /// How long an owner may stay silent before its lease counts as abandoned (default).
    public static let leaseTimeout: Double = LeaseTiming().timeout
    /// How often an owner renews its lease and looks for cancel and operator requests (default).
    public static let heartbeatInterval: Double = LeaseTiming().heartbeatInterval

    /// `lease` and `host` are for tests: a short lease, and an engine that names its host
    /// as another machine would (whose lease is judged by heartbeat age alone).
    public init(store: any WorkflowStore, connector: any QMPConnector, observer: any EngineObserver = SilentObserver(),
                inspector: any ImageInspector = QemuImgInspector(), creator: any DestinationCreator = ExclusiveOverlayCreator(),
                commandTimeout: Double = 30, lease: LeaseTiming = LeaseTiming(), host: String = Engine.thisHost) {
        self.store = store
        self.observer = observer
        self.inspector = inspector
        self.creator = creator
        self.sessions = VMSessions(connector: connector, commandTimeout: commandTimeout)
        self.lease = lease
        self.me = PlanOwner(pid: getpid(), host: host, heartbeat: Date())
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

    /// The checks that need no VM: QMP sockets' owners and modes, destinations and other
    /// plans' claims. For `submit --detach`.
    public func checkOffline(_ plan: Plan, policy: Policy) throws {
        try Preflight(sessions: sessions, store: store).checkOffline(plan, policy: policy)
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

    // MARK: - Ownership

    /// This host as lease records name it: the host name and the kernel's boot id, so a
    /// lease left by a process before a reboot is never mistaken for a live one.
    public static let thisHost: String = {
        let bootId = (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines).prefix(8) ?? "unknown"
        return "\(ProcessInfo.processInfo.hostName) boot \(bootId)"
    }()

    /// Whether a lease holder is gone. On this host (same boot) the process itself is
    /// asked: a live owner keeps its plan even when stalled (stopped, swapped out), since
    /// taking over would make two processes drive one disk. A holder elsewhere, or from
    /// before a reboot, is gone once its heartbeat is older than `leaseTimeout`.
    public static func isGone(_ owner: PlanOwner, now: Date = Date(), host: String = thisHost,
                              leaseTimeout: Double = leaseTimeout) -> Bool {
        if owner.host == host {
            return !isLivecopyProcess(owner.pid)
        }
        return now.timeIntervalSince(owner.heartbeat) > leaseTimeout
    }

    /// `isGone` as this engine judges it (its host, its lease timeout).
    private var isGoneHere: @Sendable (PlanOwner) -> Bool {
        let host = me.host
        let timeout = lease.timeout
        return { Self.isGone($0, host: host, leaseTimeout: timeout) }
    }

    /// Whether `pid` is a running process of a livecopy binary (not a reused pid).
    private static func isLivecopyProcess(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let name = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return true }
        let own = (try? String(contentsOfFile: "/proc/self/comm", encoding: .utf8)) ?? ""
        return name == own || name.contains("livecopy")
    }

    /// Whether a live process other than this one drives plan `id`.
    public func liveOwner(ofPlan id: Int64) throws -> PlanOwner? {
        guard let owner = try store.owner(ofPlan: id), owner != me, !isGoneHere(owner) else { return nil }
        return owner.pid == me.pid && owner.host == me.host ? nil : owner
    }

    // MARK: - Running

    /// Drives plan `id` until every disk rests, and returns the plan in its new state.
    /// `mode` rolls back instead of resuming; a cancel request (from `livecopy cancel`)
    /// seen meanwhile stops the forward work and rolls back too. Throws `LeaseLost` when
    /// the plan's lease is gone meanwhile (the disks were left as they were).
    public func run(planId: Int64, mode: RunMode = .resume) async throws -> PlanRecord {
        guard let plan = try store.plan(id: planId) else { throw PreflightError("no plan with id \(planId)") }
        guard !plan.state.isFinal else { throw PreflightError("plan \(planId) is \(plan.state.rawValue) already") }
        let claim = PlanOwner(pid: me.pid, host: me.host, heartbeat: Date())
        if let previous = try await store.acquireLease(planId: planId, owner: claim, isGone: isGoneHere) {
            observer.note(nil, "plan \(planId): took over from \(previous), which is gone")
        }
        let outcome: Result<PlanRecord, Error>
        do {
            outcome = .success(try await drive(plan, mode: mode, leaseTakenAt: claim.heartbeat))
        } catch {
            outcome = .failure(error)
        }
        try? await store.releaseLease(planId: planId, owner: me)
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
           let reason = await refusalOfDetached(recorded, policy: plan.policy, preflight: Preflight(sessions: sessions, store: store)) {
            try await refuseDetached(planId: planId, disks: recorded, reason: reason)
            guard let refused = try store.plan(id: planId) else { throw PreflightError("no plan with id \(planId)") }
            return refused
        }
        try await movePlan(planId, to: .running, detail: "driven by \(me)")

        let cancelled = CancelFlag()
        let leaseGone = LeaseGone()
        let driving = DrivingTasks()
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
            return await self.driveDisks(planId: planId, policy: plan.policy, snapshots: VMSnapshotBarrier()) { try await $0.run() }
        }
        driving.add(forward)
        // Cancel and operator requests (throttle, pause, resume): a QMP command that hangs
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
        var rollbackError: Error?
        let cancelRequested = try store.isCancelRequested(planId: planId)
        if mode == .rollback || cancelled.isSet || cancelRequested {
            let reason = mode == .rollback ? "rollback requested" : "plan cancelled"
            // Disks never started need no VM to be dropped.
            for disk in try store.disks(ofPlan: planId) where disk.state == .pending {
                try await DiskLedger(disk: disk, store: store, observer: observer)
                    .transition(to: .rolledBack, "\(reason): nothing had been done")
            }
            let rollback = Task { () -> Error? in
                await self.driveDisks(planId: planId, policy: plan.policy, snapshots: nil) { workflow in
                    try await workflow.beginRollback(reason)
                    // Only disks now rolling back go on; one that needs attention stays put.
                    guard workflow.state == .rollingBack else { return }
                    try await workflow.run()
                }
            }
            driving.add(rollback)
            rollbackError = await rollback.value
            if let cause = leaseGone.cause { throw LeaseLost(planId: planId, cause: cause) }
        }
        if let error = forwardError ?? rollbackError { throw error }
        return try await finish(planId: planId)
    }

    /// Applies the plan's open operator requests, oldest first, to its stream jobs in
    /// QEMU (over the sessions already open), and records each outcome.
    func applyOperatorRequests(planId: Int64) async {
        guard let requests = try? store.openControlRequests(planId: planId), !requests.isEmpty else { return }
        for request in requests {
            let (ok, outcome) = await apply(request.action, planId: planId)
            do {
                try await store.finishControlRequest(id: request.id, planId: planId, ok: ok, outcome: outcome, at: Date())
            } catch {
                observer.note(nil, "plan \(planId): cannot record the outcome of request \(request.id): \(describe(error))")
                return
            }
            observer.note(nil, "plan \(planId): \(outcome)")
        }
    }

    /// Sends `action` to every stream job of the plan that QEMU still runs.
    private func apply(_ action: OperatorAction, planId: Int64) async -> (ok: Bool, outcome: String) {
        let disks: [DiskRecord]
        do {
            disks = try store.disks(ofPlan: planId)
        } catch {
            return (false, "\(action): cannot read the plan's disks (\(describe(error)))")
        }
        var applied: [String] = []
        var failures: [String] = []
        let sockets = Set(disks.filter { !$0.state.isFinal }.map(\.qmpSocket)).sorted()
        for socket in sockets {
            guard let session = await sessions.existing(for: socket) else { continue }
            let ids = Set(disks.filter { $0.qmpSocket == socket }.map(\.streamJobId))
            let jobs: [JobInfo]
            do {
                jobs = try await session.queryJobs().filter { ids.contains($0.id) && $0.status.acceptsControls }
            } catch {
                failures.append("\(socket): \(describe(error))")
                continue
            }
            for job in jobs.sorted(by: { $0.id < $1.id }) {
                do {
                    switch action {
                    case .throttle(let speed):
                        try await session.blockJobSetSpeed(jobId: job.id, speed: speed)
                        applied.append("job \(job.id) speed \(OperatorAction.speedText(speed))")
                    case .pause:
                        if job.status != .paused { try await session.blockJobPause(jobId: job.id) }
                        applied.append("job \(job.id) paused")
                    case .resume:
                        if job.status == .paused { try await session.blockJobResume(jobId: job.id) }
                        applied.append("job \(job.id) resumed")
                    }
                } catch {
                    failures.append("job \(job.id): \(describe(error))")
                }
            }
        }
        var outcome = "\(action): "
        if applied.isEmpty && failures.isEmpty {
            outcome += "no stream job runs now; recorded for the jobs the plan starts later"
        } else {
            outcome += (applied + failures.map { "failed on \($0)" }).joined(separator: "; ")
        }
        return (failures.isEmpty, outcome)
    }


    /// A flag set once, read from several tasks.
    private final class CancelFlag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        var isSet: Bool { lock.withLock { value } }
        func set() { lock.withLock { value = true } }
    }

    /// Why the lease is gone, once the heartbeat says so; read from several tasks.
    private final class LeaseGone: @unchecked Sendable {
        private let lock = NSLock()
        private var value: LeaseLost.Cause?
        var cause: LeaseLost.Cause? { lock.withLock { value } }
        func set(_ cause: LeaseLost.Cause) { lock.withLock { value = value ?? cause } }
    }

    /// The tasks driving a plan's disks, all cancelled at once when the lease is gone
    /// (a task added after that is cancelled as it is added).
    private final class DrivingTasks: @unchecked Sendable {
        private let lock = NSLock()
        private var tasks: [Task<Error?, Never>] = []
        private var stopped = false

        func add(_ task: Task<Error?, Never>) {
            let cancelNow = lock.withLock { () -> Bool in
                if !stopped { tasks.append(task) }
                return stopped
            }
            if cancelNow { task.cancel() }
        }

        func stopAll() {
            let all = lock.withLock { () -> [Task<Error?, Never>] in
                stopped = true
                return tasks
            }
            for task in all { task.cancel() }
        }
    }

    /// Runs `step` for every disk of the plan that is not final, at most
    /// `max_parallel_disks` at a time. Returns the first error that puts a record in doubt.
    /// `snapshots` (forward runs) makes the disks of each VM switch together.
    private func driveDisks(planId: Int64, policy: Policy, snapshots: VMSnapshotBarrier?,
                            _ step: @escaping @Sendable (DiskWorkflow) async throws -> Void) async -> Error? {
        let disks: [DiskRecord]
        do {
            disks = try store.disks(ofPlan: planId).filter { !$0.state.isFinal }
        } catch {
            return error
        }
        var firstError: Error?
        await withTaskGroup(of: Error?.self) { group in
            var running = 0
            for disk in disks {
                if running == policy.maxParallelDisks {
                    if let error = await group.next() ?? nil { firstError = firstError ?? error }
                    running -= 1
                }
                group.addTask { await self.drive(disk, policy: policy, snapshots: snapshots, step) }
                running += 1
            }
            for await error in group where error != nil { firstError = firstError ?? error }
        }
        return firstError
    }

    /// Drives one disk; returns an error only when the record itself is in doubt. A VM
    /// that cannot be reached leaves the disk's state as it is (the plan is interrupted).
    private func drive(_ recorded: DiskRecord, policy: Policy, snapshots: VMSnapshotBarrier?,
                       _ step: (DiskWorkflow) async throws -> Void) async -> Error? {
        let ledger = DiskLedger(disk: recorded, store: store, observer: observer)
        do {
            // Another disk's step (its VM's snapshot) may have moved this one since the plan was read.
            try ledger.reload()
            let disk = ledger.disk
            if disk.state.isFinal { return nil }
            do {
                try SocketCheck.check(disk.qmpSocket, policy: policy)
            } catch {
                // Checked again at every run: the socket may have changed since the plan was checked.
                try await ledger.note("VM '\(disk.vmName)': \(describe(error)); not connecting")
                return nil
            }
            let session: any QMPSession
            do {
                session = try await sessions.session(for: disk.qmpSocket)
            } catch {
                if Task.isCancelled { return nil }
                let boot = disk.bootImage.map { "; start it on \($0)" } ?? ""
                try await ledger.note("VM '\(disk.vmName)' is unreachable (\(describe(error)))\(boot), then run livecopy recover")
                return nil
            }
            var join: (@Sendable () async throws -> Set<Int64>)?
            if let snapshots {
                join = { try await snapshots.join(disk.qmpSocket) { try await self.snapshotVM(of: disk, session: session, policy: policy) } }
            }
            try await step(workflow(ledger, session: session, policy: policy, joinVMSnapshot: join))
            return nil
        } catch is CancellationError {
            return nil
        } catch {
            return error
        }
    }

    /// A disk's workflow over `session`, retrying QEMU's transient refusals per policy.
    private func workflow(_ ledger: DiskLedger, session: any QMPSession, policy: Policy,
                          joinVMSnapshot: (@Sendable () async throws -> Set<Int64>)?) -> DiskWorkflow {
        let store = self.store
        let planId = ledger.disk.planId
        let controls: @Sendable () -> PlanControls = { (try? store.controls(ofPlan: planId)) ?? PlanControls() }
        let retrying = RetryingQMPSession(session, policy: policy) { message in try? await ledger.note(message) }
        return DiskWorkflow(ledger: ledger, session: retrying, policy: policy, inspector: inspector, creator: creator,
                            controls: controls, joinVMSnapshot: joinVMSnapshot)
    }

    /// The snapshot step for every disk of the plan on `disk`'s VM, in one transaction.
    private func snapshotVM(of disk: DiskRecord, session: any QMPSession, policy: Policy) async throws -> Set<Int64> {
        let members = try store.disks(ofPlan: disk.planId)
            .filter { $0.qmpSocket == disk.qmpSocket && !$0.state.isFinal }
            .map { workflow(DiskLedger(disk: $0, store: store, observer: observer), session: session, policy: policy, joinVMSnapshot: nil) }
        return try await VMSnapshot(vmName: disk.vmName, members: members).run()
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

extension Engine {
    /// What QEMU and the files say about each disk of a plan that is not final, in one
    /// line per disk, without changing anything. `recover` prints it before acting.
    public func reconciliationReport(planId: Int64) async throws -> [(disk: DiskRecord, finding: String)] {
        var report: [(disk: DiskRecord, finding: String)] = []
        for disk in try store.disks(ofPlan: planId) where !disk.state.isFinal {
            var recorded = "recorded \(disk.state.rawValue)"
            if let intent = disk.intent { recorded += " (unfinished: \(intent))" }
            let session: any QMPSession
            do {
                session = try await sessions.session(for: disk.qmpSocket)
            } catch {
                report.append((disk, "\(recorded); VM unreachable (\(describe(error))); \(await bootAdvice(for: disk))"))
                continue
            }
            do {
                let devices = try await session.queryBlock()
                let entry = devices.entry(for: disk)
                let image = entry?.inserted.map { "VM on \($0.file)" + ($0.backingFile.map { " (backing \($0))" } ?? " (no backing file)") }
                    ?? "device not found"
                let jobs = try await session.queryJobs().filter { $0.id == disk.streamJobId || $0.id == disk.commitJobId }
                let jobText = jobs.isEmpty ? "no livecopy job" : jobs.map { "job \($0.id) \($0.status)" }.joined(separator: ", ")
                report.append((disk, "\(recorded); \(image); \(jobText)"))
            } catch {
                report.append((disk, "\(recorded); QEMU did not answer (\(describe(error)))"))
            }
        }
        return report
    }

    /// The image a disk's VM must be started from if it is restarted now: the record's
    /// answer when it has one; else QEMU's, when the VM runs; else the files'. Nil when
    /// nobody can tell (a pivot back to the source was requested just before QEMU
    /// stopped, and the two images differ).
    /// `askingQEMU: false` skips the running VM (its monitor is held by a live owner, which
    /// settles the answer itself); `status` and `recover` both answer through this function.
    public func bootImage(of disk: DiskRecord, askingQEMU: Bool = true) async -> String? {
        if let image = disk.bootImage { return image }
        guard let source = disk.source else { return nil }
        if disk.intent == .pivotBack {
            return await inspector.sourceMatchesDestination(disk) ? source : nil
        }
        var info = stat()
        guard disk.destinationCreated, lstat(disk.destination, &info) == 0 else { return source }
        // A running VM on the destination: that is the image with every write. (Its qcow2
        // metadata may not be on disk yet, so the file alone would mislead.)
        if askingQEMU, let session = try? await sessions.session(for: disk.qmpSocket),
           let devices = try? await session.queryBlock() {
            let active = devices.entry(for: disk)?.inserted?.file
            if active == disk.destination { return disk.destination }
        }
        // QEMU does not hold the destination: its own data, if any, is newer than the source.
        return (try? await inspector.hasOwnData(disk.destination)) == false ? source : disk.destination
    }

    /// `bootImage(of:)` as a sentence for the operator.
    public func bootAdvice(for disk: DiskRecord) async -> String {
        if let image = await bootImage(of: disk) { return "the VM must boot from \(image)" }
        let source = disk.source ?? "the source"
        return "nobody can tell which image the VM must boot from: a pivot back to \(source) was requested just before QEMU stopped, and \(source) and \(disk.destination) differ; compare them, keep the one with the newest data, delete the other yourself, then run livecopy recover"
    }
}
