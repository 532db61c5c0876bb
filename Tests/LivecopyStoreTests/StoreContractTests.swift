import Foundation
import LivecopyModel
import LivecopyStore
import Testing

/// What every `PlanStore` guarantees, run on SQLite and on PostgreSQL alike: records,
/// compare-and-set writes with their events, leases, operator controls, listings and
/// their totals. (Quarantine and claims: `StoreQuarantineContractTests`, `ClaimConflictTests`.)
@Suite(.serialized)
struct StoreContractTests {
    /// A pending plan of `disks` disks of VM `vm` (its socket and destinations named after it).
    static func newPlan(disks: Int = 2, vm: String = "vm") throws -> NewPlan {
        NewPlan(name: "t", policyReference: nil, policy: try Policy.resolve(nil), state: .pending,
                disks: (0..<disks).map {
                    NewPlan.Disk(vmName: vm, vmAddress: "/\(vm).qmp", device: "drive\($0)", destination: "/\(vm)-d\($0).qcow2",
                                 source: "/s\($0).qcow2", sourceFormat: "qcow2", qmpDevice: "drive\($0)")
                })
    }

    @Test(arguments: StoreBackend.allCases)
    func recordsPlansDisksAndEvents(backend: StoreBackend) async throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        let (plan, disks) = try store.insertPlan(try Self.newPlan(), at: Date())
        #expect(plan.state == .pending)
        #expect(disks.count == 2)
        #expect(disks.allSatisfy { $0.state == .pending })
        var disk = disks[0]
        disk.state = .snapshotting
        try await store.save(disk: disk, expecting: .pending,
                             event: NewEvent(kind: .transition, from: "pending", to: "snapshotting", detail: "go"), at: Date())
        #expect(try store.disks(ofPlan: plan.id)[0].state == .snapshotting)
        #expect(try store.disk(id: disk.id)?.state == .snapshotting)
        #expect(try store.disk(id: disks[1].id)?.device == "drive1")
        #expect(try store.disk(id: disks[1].id + 1000) == nil)
        let events = try store.events(ofPlan: plan.id)
        #expect(events.count == 2)
        #expect(events.last?.from == "pending")
        #expect(events.last?.to == "snapshotting")
        #expect(events.last?.diskId == disk.id)
        #expect(try store.events(ofDisk: disk.id, planId: plan.id).map(\.detail) == ["go"])
        #expect(try store.plan(id: plan.id)?.policy == (try Policy.resolve(nil)))
        #expect(try store.plan(id: plan.id) == plan)
    }

    @Test(arguments: StoreBackend.allCases)
    func aWriteExpectingAnotherStateIsRefusedAndChangesNothing(backend: StoreBackend) async throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        let (plan, disks) = try store.insertPlan(try Self.newPlan(), at: Date())
        var disk = disks[0]
        disk.state = .streaming
        let conflict = await #expect(throws: StoreError.self) {
            try await store.save(disk: disk, expecting: .snapshotting, event: NewEvent(kind: .transition, detail: "x"), at: Date())
        }
        #expect(conflict?.kind.name == "conflict")
        #expect(conflict?.description == "record changed concurrently: disk \(disk.id) is no longer snapshotting")
        var running = plan
        running.state = .running
        let planConflict = await #expect(throws: StoreError.self) {
            try await store.save(plan: running, expecting: .running, event: NewEvent(kind: .transition, detail: "x"), at: Date())
        }
        #expect(planConflict?.description == "record changed concurrently: plan \(plan.id) is no longer running")
        #expect(try store.disks(ofPlan: plan.id)[0].state == .pending)
        #expect(try store.events(ofPlan: plan.id).count == 1)
    }

    /// The engine's writes, awaited through the protocol, and a write asked for by a
    /// cancelled task still completes.
    @Test(arguments: StoreBackend.allCases)
    func awaitedWritesKeepTheirRulesAndSurviveCancellation(backend: StoreBackend) async throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        let (plan, disks) = try store.insertPlan(try Self.newPlan(), at: Date())
        var disk = disks[0]
        disk.state = .snapshotting
        try await store.save(disk: disk, expecting: .pending, event: NewEvent(kind: .transition, detail: "go"), at: Date())
        let conflict = await #expect(throws: StoreError.self) {
            try await store.save(disk: disk, expecting: .pending, event: NewEvent(kind: .transition, detail: "again"), at: Date())
        }
        #expect(conflict?.kind.name == "conflict")
        try await store.saveProgress(diskId: disk.id, bytesDone: 5, bytesTotal: 10, at: Date())
        #expect(try store.disk(id: disk.id).map { [$0.bytesDone, $0.bytesTotal] } == [5, 10])
        try await store.appendEvent(planId: plan.id, diskId: disk.id, event: NewEvent(kind: .note, detail: "noted"), at: Date())
        let owner = PlanOwner(pid: 42, host: "elsewhere", heartbeat: Date())
        #expect(try await store.acquireLease(planId: plan.id, owner: owner, isGone: { _ in false }) == nil)
        #expect(try store.owner(ofPlan: plan.id)?.pid == 42)
        #expect(try await store.renewLease(planId: plan.id, owner: owner, at: Date()))
        let other = PlanOwner(pid: 43, host: "elsewhere", heartbeat: Date())
        let held = await #expect(throws: StoreError.self) { try await store.acquireLease(planId: plan.id, owner: other, isGone: { _ in false }) }
        #expect(held?.kind.name == "leaseHeld")
        #expect(held?.description.hasPrefix("plan \(plan.id) is owned by a live livecopy (") == true)
        #expect(try await store.renewLease(planId: plan.id, owner: other, at: Date()) == false)
        // Taken over once the holder is judged gone.
        let gone = try await store.acquireLease(planId: plan.id, owner: other, isGone: { _ in true })
        #expect(gone?.pid == 42)
        try await store.releaseLease(planId: plan.id, owner: other)
        #expect(try await store.acquireLease(planId: plan.id, owner: owner, isGone: { _ in false }) == nil)

        var next = disk
        next.state = .streaming
        let cancelled = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await store.save(disk: next, expecting: .snapshotting, event: NewEvent(kind: .transition, detail: "cancelled"), at: Date())
        }
        try await cancelled.value
        try await store.releaseLease(planId: plan.id, owner: owner)

        let saved = try #require(try store.disk(id: disk.id))
        #expect(saved.state == .streaming)
        #expect(try store.owner(ofPlan: plan.id) == nil)
        let details = try store.events(ofPlan: plan.id).map(\.detail)
        #expect(details.filter { ["go", "again", "noted", "cancelled"].contains($0) } == ["go", "noted", "cancelled"])
        #expect(details.contains("lease taken over from pid 42 on elsewhere by pid 43 on elsewhere"))
        #expect(try store.isCancelRequested(planId: plan.id) == false)
        try store.requestCancel(planId: plan.id, at: Date())
        #expect(try store.isCancelRequested(planId: plan.id))
    }

    @Test(arguments: StoreBackend.allCases)
    func listsPlansNewestFirstWithFilters(backend: StoreBackend) throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        let start = Date(timeIntervalSince1970: 1_700_000_000)
        let first = try store.insertPlan(try Self.newPlan(), at: start).0
        let second = try store.insertPlan(try Self.newPlan(disks: 1, vm: "other"), at: start.addingTimeInterval(3600)).0
        #expect(try store.plans(states: nil, vm: nil, limit: nil).map(\.id) == [second.id, first.id])
        #expect(try store.plans(states: nil, vm: "other", limit: nil).map(\.id) == [second.id])
        #expect(try store.plans(states: nil, vm: nil, limit: 1).map(\.id) == [second.id])
        #expect(try store.plans(states: [.completed], vm: nil, limit: nil).isEmpty)
        let range = PlanFilter(states: [.pending], createdFrom: start.addingTimeInterval(60), createdBefore: start.addingTimeInterval(7200))
        #expect(try store.plans(range, limit: nil).map(\.id) == [second.id])
        #expect(try store.summary(range) == PlanSummary(plans: 1, disks: 1, completedDisks: 0, bytes: 0, timedBytes: 0, copySeconds: 0))
        #expect(try store.summary(PlanFilter()).disks == 3)
        #expect(try store.summary(PlanFilter(vm: "nobody")).plans == 0)
    }

    /// A completed disk's bytes and copy time (first streaming to last retiring) count in
    /// the summary; the latest event of each disk and the counts by state.
    @Test(arguments: StoreBackend.allCases)
    func summaryLatestEventsAndStateCounts(backend: StoreBackend) async throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        var newPlan = try Self.newPlan(disks: 2)
        newPlan.disks[0].allocatedBytes = 1000
        let (plan, disks) = try store.insertPlan(newPlan, at: Date(timeIntervalSince1970: 100))
        var disk = disks[0]
        for (state, time) in [(DiskState.snapshotting, 100.0), (.streaming, 110), (.retiring, 120), (.completed, 121)] {
            let previous = disk.state
            disk.state = state
            try await store.save(disk: disk, expecting: previous,
                                 event: NewEvent(kind: .transition, from: previous.rawValue, to: state.rawValue, detail: state.rawValue),
                                 at: Date(timeIntervalSince1970: time))
        }
        try await store.appendEvent(planId: plan.id, diskId: disks[1].id, event: NewEvent(kind: .note, detail: "waiting"), at: Date())
        try await store.appendEvent(planId: plan.id, diskId: nil, event: NewEvent(kind: .note, detail: "plan note"), at: Date())
        let summary = try store.summary(PlanFilter())
        #expect(summary == PlanSummary(plans: 1, disks: 2, completedDisks: 1, bytes: 1000, timedBytes: 1000, copySeconds: 10))
        let latest = try store.latestDiskEvents(ofPlan: plan.id)
        #expect(latest.mapValues(\.detail) == [disks[0].id: "completed", disks[1].id: "waiting"])
        let counts = try store.stateCounts()
        #expect(counts.plans[.pending] == 1 && counts.plans[.running] == 0)
        #expect(counts.disks[.completed] == 1 && counts.disks[.pending] == 1)
    }

    /// The batched reads `status` uses answer what the per-plan reads answer.
    @Test(arguments: StoreBackend.allCases)
    func batchedReadsMatchThePerPlanReads(backend: StoreBackend) async throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        let (first, firstDisks) = try store.insertPlan(try Self.newPlan(disks: 2), at: Date())
        let (second, _) = try store.insertPlan(try Self.newPlan(disks: 3, vm: "other"), at: Date())
        let (empty, _) = try store.insertPlan(try Self.newPlan(disks: 0, vm: "none"), at: Date())
        try await store.appendEvent(planId: first.id, diskId: firstDisks[1].id, event: NewEvent(kind: .note, detail: "one"), at: Date())
        try await store.appendEvent(planId: first.id, diskId: firstDisks[1].id, event: NewEvent(kind: .note, detail: "two"), at: Date())
        _ = try store.requestControl(planId: second.id, .pause, by: "pid 1", at: Date())
        let ids = [second.id, first.id, empty.id]
        let disks = try store.disks(ofPlans: ids)
        let latest = try store.latestDiskEvents(ofPlans: ids)
        let controls = try store.controls(ofPlans: ids)
        try await store.acquireLease(planId: first.id, owner: PlanOwner(pid: 4242, host: "h", heartbeat: Date(timeIntervalSince1970: 500)),
                                     isGone: { _ in true })
        let owners = try store.owners(ofPlans: ids)
        #expect(owners.count == 1)
        for id in ids {
            #expect(disks[id]?.map(\.id) == (try store.disks(ofPlan: id)).map(\.id))
            #expect(latest[id]?.mapValues(\.detail) == (try store.latestDiskEvents(ofPlan: id)).mapValues(\.detail))
            #expect(controls[id] == (try store.controls(ofPlan: id)))
            #expect(owners[id] == (try store.owner(ofPlan: id)))
        }
        #expect(latest[first.id]?[firstDisks[1].id]?.detail == "two")
        #expect(controls[second.id]?.paused == true)
        #expect(try store.disks(ofPlans: []).isEmpty)
    }

    /// Operator controls: a request changes the plan's setting at once and stays open
    /// until finished, once.
    @Test(arguments: StoreBackend.allCases)
    func operatorRequestsChangeTheSettingAndAreFinishedOnce(backend: StoreBackend) async throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        let (plan, _) = try store.insertPlan(try Self.newPlan(), at: Date())
        #expect(try store.controls(ofPlan: plan.id) == PlanControls())

        let throttle = try store.requestControl(planId: plan.id, .throttle(speed: 20 << 20), by: "pid 1", at: Date())
        let pause = try store.requestControl(planId: plan.id, .pause, by: "pid 2", at: Date())
        #expect(try store.controls(ofPlan: plan.id) == PlanControls(speedOverride: 20 << 20, paused: true))
        #expect(try store.openControlRequests(planId: plan.id).map(\.id) == [throttle.id, pause.id])
        #expect(try store.openControlRequests(planId: plan.id).first?.action == .throttle(speed: 20 << 20))

        try await store.finishControlRequest(id: throttle.id, planId: plan.id, ok: true, outcome: "applied", at: Date())
        try await store.finishControlRequest(id: throttle.id, planId: plan.id, ok: false, outcome: "again", at: Date())
        let finished = try store.controlRequest(id: throttle.id)
        #expect(finished?.ok == true)
        #expect(finished?.outcome == "applied")
        #expect(try store.openControlRequests(planId: plan.id).map(\.id) == [pause.id])

        _ = try store.requestControl(planId: plan.id, .resume, by: "pid 3", at: Date())
        _ = try store.requestControl(planId: plan.id, .throttle(speed: 0), by: "pid 3", at: Date())
        #expect(try store.controls(ofPlan: plan.id) == PlanControls(speedOverride: 0, paused: false))
        let details = try store.events(ofPlan: plan.id).map(\.detail)
        #expect(details.contains { $0.hasPrefix("throttle to 20.0 MiB/s requested by pid 1") })
        #expect(details.filter { $0.contains("request \(throttle.id): ") } == ["request \(throttle.id): applied"])
        let missing = #expect(throws: StoreError.self) { try store.requestControl(planId: 999, .pause, by: "pid 4", at: Date()) }
        #expect(missing?.kind.name == "database")
    }
}
