import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import QMPBackend
import Synchronization
import TestSupport
import Testing

/// The lease heartbeat runs on its own task: nothing the engine waits for on QMP delays
/// it, and a renewal that fails is noted, retried, and ends the run before the lease
/// could expire. The engines here name their hosts as two other machines would, so their
/// leases are judged by heartbeat age alone (on one host a live pid keeps its lease
/// whatever the heartbeat does). Only lower bounds on time are asserted; the limits are
/// watchdogs.
@Suite(.serialized)
struct LeaseHeartbeatTests {
    static let lease = LeaseTiming(timeout: 2, heartbeatInterval: 0.1)

    static func engine(_ setup: FakeSetup, host: String, store: (any WorkflowStore)? = nil,
                       observer: any EngineObserver = SilentObserver()) -> Engine {
        Engine(store: store ?? setup.store, hypervisor: QMPHypervisor(connector: TestConnector()), observer: observer, inspector: StubInspector(),
               creator: StubCreator(), commandTimeout: 600, lease: lease, host: host)
    }

    /// Waits (watchdog: one minute) until the plan's one disk streams and its job watcher
    /// has polled once (its progress is recorded): the workflow is past applying the
    /// operator's settings to the new job, so operator requests go through the owner's
    /// request task only.
    static func waitUntilWatching(_ setup: FakeSetup, planId: Int64) async throws {
        let deadline = Date().addingTimeInterval(60)
        while true {
            let disk = try setup.store.disks(ofPlan: planId).first
            if disk?.state == .streaming, disk?.bytesTotal == 1 { return }
            guard Date() < deadline else { throw WaitTimeout(what: "the stream job to be watched") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func aHungOperatorCommandDoesNotLetTheLeaseExpire() async throws {
        let setup = try await FakeSetup.start("lc-lease-hung")
        defer { setup.stop() }
        let policy = try FakeSetup.policy { $0.commandTimeout = 600 }
        let owner = Self.engine(setup, host: "host-a boot test")
        let planId = try await setup.record(owner, policy)
        setup.vm.setStreamBehaviour(.stayRunning)
        // QEMU never answers the throttle: the owner's request task waits on it.
        setup.vm.arm("block-job-set-speed", .noReply, executes: false)
        let run = Task { try await owner.run(planId: planId) }
        try await Self.waitUntilWatching(setup, planId: planId)

        let throttle = try setup.store.requestControl(planId: planId, .throttle(speed: 1 << 20), by: "test", at: Date())
        let hung = try await setup.peer.waitForCommand(named: "block-job-set-speed", timeout: 60)
        let hungSince = Date()
        try await Task.sleep(for: .seconds(Self.lease.timeout * 2))
        #expect(Date().timeIntervalSince(hungSince) > Self.lease.timeout, "the command hung past the lease timeout")
        #expect(try setup.store.openControlRequests(planId: planId).count == 1, "the throttle is still unanswered")

        // Another host's livecopy judges the lease by its heartbeat's age: still fresh, so
        // its claim (what `Engine.run` makes first) is refused. (Not a whole rival run: one
        // that wrongly got the lease would go on to drive the disk and never return.)
        let holder = try #require(try setup.store.owner(ofPlan: planId))
        #expect(holder.host == "host-a boot test")
        #expect(!Engine.isGone(holder, host: "host-b boot test", leaseTimeout: Self.lease.timeout))
        let rival = PlanOwner(pid: 1, host: "host-b boot test", heartbeat: Date())
        let refused = await #expect(throws: StoreError.self) {
            try await (setup.store as any WorkflowStore).acquireLease(planId: planId, owner: rival) {
                Engine.isGone($0, host: rival.host, leaseTimeout: Self.lease.timeout)
            }
        }
        if case .leaseHeld(_, let owner)? = refused?.kind {
            #expect(owner.host == "host-a boot test")
        } else {
            Issue.record("the rival's claim was refused with \(String(describing: refused)), not a held lease")
        }
        #expect(try setup.store.owner(ofPlan: planId)?.host == "host-a boot test", "the rival took nothing")

        // QEMU answers at last; the job concludes and the owner finishes the plan.
        setup.peer.reply(to: hung.id, with: .return([:]))
        setup.vm.concludeJobs()
        let plan = try await run.value
        await owner.shutdown()
        #expect(plan.state == .completed, "\(plan.error ?? "")")
        #expect(try setup.store.controlRequest(id: throttle.id)?.ok == true)
        #expect(try setup.store.owner(ofPlan: planId) == nil, "the lease is released")
        #expect(!(try setup.details(planId).contains { $0.contains("taken over") }))
    }

    @Test(.timeLimit(.minutes(2)))
    func renewalsThatKeepFailingAreNotedAndStopTheRunBeforeTheLeaseExpires() async throws {
        let setup = try await FakeSetup.start("lc-lease-fail")
        defer { setup.stop() }
        let policy = try FakeSetup.policy { $0.commandTimeout = 600 }
        let store = RenewalFailingStore(setup.store)
        let notes = NoteCollector()
        let owner = Self.engine(setup, host: "host-a boot test", store: store, observer: notes)
        let planId = try await setup.record(owner, policy)
        setup.vm.setStreamBehaviour(.stayRunning)
        let run = Task { try await owner.run(planId: planId) }
        try await Self.waitUntilWatching(setup, planId: planId)

        store.failRenewals()
        do {
            let plan = try await run.value
            Issue.record("the run went on without a lease and ended \(plan.state)")
        } catch let error as LeaseLost {
            guard case .notRenewed(let seconds, let lastError) = error.cause else {
                Issue.record("lost for another reason: \(error)")
                return
            }
            #expect(seconds >= Self.lease.timeout - Self.lease.heartbeatInterval,
                    "retried until the next attempt would come too late (\(seconds) s since the last renewal)")
            #expect(lastError.contains("renewal refused by the test"), "\(lastError)")
        }
        await owner.shutdown()
        #expect(store.renewalFailures >= 2, "the failed renewal was retried")
        let noted = notes.all
        #expect(noted.contains { $0.contains("cannot renew the lease (attempt 1") }, "\(noted)")
        #expect(noted.contains { $0.contains("lease could not be renewed") && $0.contains("stopping") }, "\(noted)")
        let disk = try #require(try setup.store.disks(ofPlan: planId).first)
        #expect(disk.state == .streaming, "the disk is left as it was, for the next owner: \(disk.state)")
        #expect(setup.vm.jobIds.count == 1, "the job runs on in QEMU")
    }
}

/// Collects the observer's notes.
final class NoteCollector: EngineObserver, Sendable {
    private let notes = Mutex<[String]>([])
    var all: [String] { notes.withLock { $0 } }
    func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String) {}
    func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64) {}
    func note(_ disk: DiskRecord?, _ message: String) { notes.withLock { $0.append(message) } }
}

/// The SQLite store, except that lease renewals throw once `failRenewals()` is called.
final class RenewalFailingStore: WorkflowStore, Sendable {
    private let base: SQLiteStore
    private let renewals = Mutex((failing: false, failures: 0))

    struct Refused: Error, CustomStringConvertible { var description: String { "renewal refused by the test" } }

    init(_ base: SQLiteStore) { self.base = base }

    func failRenewals() { renewals.withLock { $0.failing = true } }
    var renewalFailures: Int { renewals.withLock { $0.failures } }

    func renewLease(planId: Int64, owner: PlanOwner, at: Date) async throws -> Bool {
        let fail = renewals.withLock { renewals -> Bool in
            if renewals.failing { renewals.failures += 1 }
            return renewals.failing
        }
        if fail { throw Refused() }
        return try await base.renewLease(planId: planId, owner: owner, at: at)
    }

    func insertPlan(_ plan: NewPlan, at: Date) throws -> (PlanRecord, [DiskRecord]) { try base.insertPlan(plan, at: at) }
    func plan(id: Int64) throws -> PlanRecord? { try base.plan(id: id) }
    func disks(ofPlan planId: Int64) throws -> [DiskRecord] { try base.disks(ofPlan: planId) }
    func disk(id: Int64) throws -> DiskRecord? { try base.disk(id: id) }
    func events(ofPlan planId: Int64) throws -> [EventRecord] { try base.events(ofPlan: planId) }
    func plans(states: Set<PlanState>?, vm: String?, limit: Int?) throws -> [PlanRecord] {
        try base.plans(states: states, vm: vm, limit: limit)
    }
    func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) async throws {
        try await base.save(disk: disk, expecting: expecting, event: event, at: at)
    }
    func save(plan: PlanRecord, expecting: PlanState, event: NewEvent?, at: Date) async throws {
        try await base.save(plan: plan, expecting: expecting, event: event, at: at)
    }
    func saveProgress(diskId: Int64, bytesDone: Int64, bytesTotal: Int64, at: Date) async throws {
        try await base.saveProgress(diskId: diskId, bytesDone: bytesDone, bytesTotal: bytesTotal, at: at)
    }
    func appendEvent(planId: Int64, diskId: Int64?, event: NewEvent, at: Date) async throws {
        try await base.appendEvent(planId: planId, diskId: diskId, event: event, at: at)
    }
    func owner(ofPlan planId: Int64) throws -> PlanOwner? { try base.owner(ofPlan: planId) }
    func acquireLease(planId: Int64, owner: PlanOwner, isGone: @escaping @Sendable (PlanOwner) -> Bool) async throws -> PlanOwner? {
        try await base.acquireLease(planId: planId, owner: owner, isGone: isGone)
    }
    func releaseLease(planId: Int64, owner: PlanOwner) async throws { try await base.releaseLease(planId: planId, owner: owner) }
    func requestCancel(planId: Int64, at: Date) throws { try base.requestCancel(planId: planId, at: at) }
    func isCancelRequested(planId: Int64) throws -> Bool { try base.isCancelRequested(planId: planId) }
}
