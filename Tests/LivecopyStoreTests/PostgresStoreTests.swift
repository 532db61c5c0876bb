import Foundation
import LivecopyModel
import LivecopyPostgresStore
@testable import LivecopyPostgresStore
import PostgresNIO
import Synchronization
import TestSupport
import Testing

/// What only the PostgreSQL store does: TLS, its migrations, host leases, claims of plans
/// by many agents, copy slots under limits, and writes across a lost connection.
@Suite(.serialized)
struct PostgresStoreTests {
    /// A fresh database and a store on it, or nil to skip.
    static func open(reconnectFor: TimeInterval = 30) throws -> (PostgresTestDatabase, PostgresStore)? {
        guard let database = try PostgresTestDatabase.make() else { return nil }
        do {
            return (database, try PostgresStore(database.location, reconnectFor: reconnectFor))
        } catch {
            database.drop()
            throw error
        }
    }

    static func plan(host: String, vm: String, disks: Int = 1, destinationDirectory: String = "/dst") throws -> NewPlan {
        var plan = try StoreContractTests.newPlan(disks: disks, vm: vm)
        plan.host = host
        for index in plan.disks.indices { plan.disks[index].destination = "\(destinationDirectory)/\(vm)-\(index).qcow2" }
        return plan
    }

    @Test func connectsWithTLSWhenRequired() throws {
        guard let database = try PostgresTestDatabase.make() else { return }
        defer { database.drop() }
        let url = "postgres://\(database.location.user)@\(database.location.host):\(database.location.port)/\(database.name)?sslmode=require"
        let location = try PostgresLocation(url: url, passwordFile: ProcessInfo.processInfo.environment["LIVECOPY_TEST_POSTGRES_PASSWORD_FILE"],
                                            environment: [:])
        let store = try PostgresStore(location)
        defer { store.shutdown() }
        let ssl = try store.read { statements in
            try statements.row("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")?.decode(Bool.self)
        }
        #expect(ssl == true)
        #expect(store.location.hasSuffix("?sslmode=require"))
        #expect(store.roundTrips > 0)
    }

    @Test func migrationsAreRecordedOnceAndAnEditedOneIsRefused() throws {
        guard let (database, store) = try Self.open() else { return }
        defer { database.drop() }
        store.shutdown()
        let rows = try PostgresTestDatabase.query(database.location, "SELECT version, checksum FROM schema_migrations ORDER BY version")
        let applied = try rows.map { try $0.decode((Int32, String).self) }
        #expect(applied.map { Int($0.0) } == PostgresMigration.embedded.map(\.version))
        #expect(applied.map(\.1) == PostgresMigration.embedded.map(\.checksum))
        #expect(PostgresMigration.embedded.first?.checksum.count == 64)
        #expect(!PostgresMigration.embedded.isEmpty)

        var edited = PostgresMigration.embedded
        edited[0] = PostgresMigration(fileName: "0001_\(edited[0].name).sql", sql: edited[0].sql + "\n-- edited\n")!
        let refusal = #expect(throws: StoreError.self) { try PostgresStore(database.location, migrations: edited) }
        #expect(refusal?.description.contains("differs from the one applied") == true)
        #expect(refusal?.description.contains("\n") == false)

        try PostgresTestDatabase.query(database.location,
                                       "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (9999, 'future', 'x', 0)")
        let newer = #expect(throws: StoreError.self) { try PostgresStore(database.location) }
        #expect(newer?.description.contains("newer livecopy") == true)
    }

    @Test func twoStoresMigratingAtOnceApplyEachMigrationOnce() throws {
        guard let database = try PostgresTestDatabase.make() else { return }
        defer { database.drop() }
        let failures = Mutex<[String]>([])
        let group = DispatchGroup()
        for _ in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                do {
                    let store = try PostgresStore(database.location)
                    store.shutdown()
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
                group.leave()
            }
        }
        group.wait()
        #expect(failures.withLock { $0 } == [])
        let count = try PostgresTestDatabase.query(database.location, "SELECT COUNT(*) FROM schema_migrations").first?.decode(Int64.self)
        #expect(count == Int64(PostgresMigration.embedded.count))
    }

    @Test func aHostLeaseIsRefusedWhileFreshAndTakenOverOnceStale() async throws {
        guard let (database, store) = try Self.open() else { return }
        defer { store.shutdown(); database.drop() }
        let first = AgentIdentity(host: "a", machine: "m1", pid: 10, instance: "one")
        let second = AgentIdentity(host: "a", machine: "m2", pid: 20, instance: "two")
        let start = Date()
        #expect(try await store.holdHostLease(host: "a", agent: first, timeout: 15, at: start) == .held)
        #expect(try await store.holdHostLease(host: "a", agent: first, timeout: 15, at: start.addingTimeInterval(5)) == .held)
        let refused = try await store.holdHostLease(host: "a", agent: second, timeout: 15, at: start.addingTimeInterval(10))
        guard case .heldBy(let holder, let heartbeat) = refused else {
            Issue.record("a fresh lease was taken over: \(refused)")
            return
        }
        #expect(holder == first)
        #expect(abs(heartbeat.timeIntervalSince(start.addingTimeInterval(5))) < 0.001)
        #expect(try await store.holdHostLease(host: "a", agent: second, timeout: 15, at: start.addingTimeInterval(21)) == .held)
        #expect(try store.hostLeases().map(\.agent) == [second])
        try await store.releaseHostLease(host: "a", agent: first)  // not the holder: nothing
        #expect(try store.hostLeases().count == 1)
        try await store.releaseHostLease(host: "a", agent: second)
        #expect(try store.hostLeases().isEmpty)
    }

    @Test func eightConcurrentClaimersNeverGetOnePlanTwice() async throws {
        guard let (database, store) = try Self.open() else { return }
        defer { store.shutdown(); database.drop() }
        var planIds: [Int64] = []
        for index in 0..<24 { planIds.append(try store.insertPlan(try Self.plan(host: "h", vm: "vm\(index)"), at: Date()).0.id) }
        _ = try store.insertPlan(try Self.plan(host: "other", vm: "elsewhere"), at: Date())
        let claims = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for claimer in 0..<8 {
                group.addTask {
                    let owner = PlanOwner(pid: Int32(100 + claimer), host: "h", heartbeat: Date())
                    var mine: [Int64] = []
                    while let plan = try await store.claimPlan(host: "h", states: [.pending], excluding: Set(mine), owner: owner,
                                                               leaseTimeout: 60) {
                        mine.append(plan.id)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: []) { $0.append(contentsOf: $1) }
        }
        #expect(claims.sorted() == planIds, "every plan of host h claimed once, none of another host")
        let plan = try #require(planIds.first)
        #expect(try store.events(ofPlan: plan).filter { $0.detail.hasPrefix("lease taken by pid ") }.count == 1)
        // A stale lease is claimed again; a fresh one is not.
        let late = PlanOwner(pid: 999, host: "h", heartbeat: Date().addingTimeInterval(120))
        #expect(try await store.claimPlan(host: "h", states: [.pending], excluding: [], owner: late, leaseTimeout: 60)?.id == plan)
        #expect(try store.events(ofPlan: plan).last?.detail.hasPrefix("lease taken over from pid ") == true)
    }

    @Test func copySlotLimitsHoldUnderTwentyConcurrentTakers() async throws {
        guard let (database, store) = try Self.open() else { return }
        defer { store.shutdown(); database.drop() }
        try store.setLimit(FleetLimit(scope: .host("a"), maxDisks: 3, bandwidth: nil), at: Date())
        try store.setLimit(FleetLimit(scope: .target("/srv"), maxDisks: 9, bandwidth: nil), at: Date())
        try store.setLimit(FleetLimit(scope: .target("/srv/b"), maxDisks: 2, bandwidth: 100 << 20), at: Date())
        try store.setLimit(FleetLimit(scope: .host("gone"), maxDisks: nil, bandwidth: nil), at: Date())
        #expect(try store.limits().map(\.scope) == [.host("a"), .target("/srv"), .target("/srv/b")])
        var requests: [CopySlotRequest] = []
        for host in ["a", "b"] {
            let (_, disks) = try store.insertPlan(try Self.plan(host: host, vm: "vm-\(host)", disks: 10, destinationDirectory: "/srv/b"),
                                                  at: Date())
            requests += disks.map { CopySlotRequest(diskId: $0.id, planId: $0.planId, host: host, destination: $0.destination) }
        }
        let maxima = Maxima()
        let takers = requests
        try await withThrowingTaskGroup(of: Void.self) { group in
            for request in takers {
                group.addTask {
                    for _ in 0..<6 {
                        switch try await store.takeCopySlot(request, at: Date()) {
                        case .granted(let speedCap):
                            #expect(speedCap == 50 << 20)
                            let slots = try store.copySlots()
                            let host = slots.filter { $0.host == "a" }.count
                            let target = slots.filter { $0.target == "/srv/b" }.count
                            maxima.counts.withLock { $0 = (max($0.host, host), max($0.target, target)) }
                            try await store.releaseCopySlot(diskId: request.diskId, at: Date())
                        case .waiting(let reason):
                            #expect(reason.hasSuffix("disks copying (livecopy limits)"), "\(reason)")
                            try await Task.sleep(for: .milliseconds(5))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(maxima.counts.withLock { $0.host } <= 3 && maxima.counts.withLock { $0.target } <= 2)
        #expect(try store.copySlots().isEmpty)
        // Replayed in id order (commit order under the limits' row locks), the events never exceed a limit.
        var hostCount: [String: Int] = [:]
        var targetCount: [String: Int] = [:]
        var taken = 0
        let events = try Set(requests.map(\.planId)).flatMap { try store.events(ofPlan: $0) }.sorted { $0.id < $1.id }
        for event in events where event.detail.hasPrefix("copy slot ") {
            let tokens = Dictionary(event.detail.split(separator: " ").compactMap { token -> (String, String)? in
                let parts = token.split(separator: "=", maxSplits: 1)
                return parts.count == 2 ? (String(parts[0]), String(parts[1]).trimmingCharacters(in: CharacterSet(charactersIn: ","))) : nil
            }, uniquingKeysWith: { $1 })
            let host = try #require(tokens["host"]), target = try #require(tokens["target"])
            let delta = event.detail.hasPrefix("copy slot taken:") ? 1 : -1
            if delta == 1 { taken += 1 }
            hostCount[host, default: 0] += delta
            targetCount[target, default: 0] += delta
            if host == "a" { #expect(hostCount[host]! <= 3) }
            #expect((targetCount["/srv/b"] ?? 0) <= 2)
            #expect(hostCount[host]! >= 0 && targetCount[target]! >= 0)
        }
        #expect(taken > 0)
        #expect(hostCount.values.allSatisfy { $0 == 0 })
    }

    @Test func aTakenSlotIsGrantedAgainAndAWaitNamesTheLimit() async throws {
        guard let (database, store) = try Self.open() else { return }
        defer { store.shutdown(); database.drop() }
        try store.setLimit(FleetLimit(scope: .host("a"), maxDisks: 1, bandwidth: nil), at: Date())
        let (_, disks) = try store.insertPlan(try Self.plan(host: "a", vm: "vm", disks: 2, destinationDirectory: "/srv/b"), at: Date())
        let requests = disks.map { CopySlotRequest(diskId: $0.id, planId: $0.planId, host: "a", destination: $0.destination) }
        #expect(try await store.takeCopySlot(requests[0], at: Date()) == .granted(speedCap: nil))
        #expect(try await store.takeCopySlot(requests[0], at: Date()) == .granted(speedCap: nil))
        #expect(try await store.takeCopySlot(requests[1], at: Date())
                == .waiting(reason: "host a has 1 of 1 disks copying (livecopy limits)"))
        let notes = try store.events(ofPlan: disks[0].planId).map(\.detail).filter { $0.hasPrefix("copy slot") }
        #expect(notes == ["copy slot taken: host=a (1 of 1) target=-, no speed cap"])
    }

    @Test(.timeLimit(.minutes(2)))
    func listenersAreToldOfEachReleaseAndLimitChange() async throws {
        guard let (database, store) = try Self.open() else { return }
        defer { store.shutdown(); database.drop() }
        let other = try PostgresStore(database.location)  // another agent's store
        defer { other.shutdown() }
        try store.setLimit(FleetLimit(scope: .target("/srv/b"), maxDisks: 1, bandwidth: nil), at: Date())
        let (_, disks) = try store.insertPlan(try Self.plan(host: "a", vm: "vm", destinationDirectory: "/srv/b"), at: Date())
        var changes = other.copySlotChanges().makeAsyncIterator()
        #expect(await changes.next() == .anything, "connected: anything may have changed meanwhile")
        let request = CopySlotRequest(diskId: disks[0].id, planId: disks[0].planId, host: "a", destination: disks[0].destination)
        #expect(try await store.takeCopySlot(request, at: Date()) == .granted(speedCap: nil))
        try await store.releaseCopySlot(diskId: disks[0].id, at: Date())
        let released = await changes.next()
        #expect(released == .released(host: "a", target: "/srv/b"))
        #expect(released?.mayAdmit(host: "z", destination: "/srv/b/x.qcow2") == true, "a disk of the same target may fit")
        #expect(released?.mayAdmit(host: "z", destination: "/srv/bb/x.qcow2") == false, "another target's may not")
        try store.setLimit(FleetLimit(scope: .host("a"), maxDisks: 2, bandwidth: nil), at: Date())
        #expect(await changes.next() == .anything, "a limit changed")
    }

    /// Migration 0003 fills in the plans' totals for the plans recorded before it: its
    /// backfill gives what the store keeps as disks complete, and the summary sums them.
    @Test func theBackfilledPlanTotalsAreTheTotalsKeptAsDisksComplete() async throws {
        guard let (database, store) = try Self.open() else { return }
        defer { store.shutdown(); database.drop() }
        for (index, seconds) in [10.0, 0, 25].enumerated() {
            var newPlan = try StoreContractTests.newPlan(disks: 3, vm: "vm\(index)")
            newPlan.disks[0].allocatedBytes = 1000
            newPlan.disks[1].allocatedBytes = 2000
            let (_, disks) = try store.insertPlan(newPlan, at: Date(timeIntervalSince1970: 100))
            for var disk in disks.prefix(2) {
                for (state, time) in [(DiskState.snapshotting, 100.0), (.streaming, 110), (.retiring, 110 + seconds), (.completed, 121 + seconds)] {
                    let previous = disk.state
                    disk.state = state
                    try await store.save(disk: disk, expecting: previous,
                                         event: NewEvent(kind: .transition, from: previous.rawValue, to: state.rawValue, detail: ""),
                                         at: Date(timeIntervalSince1970: time))
                }
            }
        }
        let totals = "SELECT id, disk_count, completed_disks, completed_bytes, timed_bytes, copy_seconds FROM plans ORDER BY id"
        func read() throws -> [String] {
            try PostgresTestDatabase.query(database.location, totals).map { row in
                let (id, count, completed, bytes, timed, seconds) = try row.decode((Int64, Int32, Int32, Int64, Int64, Double).self)
                return "\(id): \(count) \(completed) \(bytes) \(timed) \(seconds)"
            }
        }
        let kept = try read()
        #expect(kept.count == 3 && kept[0].hasSuffix(" 3 2 3000 3000 20.0") && kept[1].hasSuffix(" 3 2 3000 0 0.0"), "\(kept)")
        #expect(try store.summary(PlanFilter())
                == PlanSummary(plans: 3, disks: 9, completedDisks: 6, bytes: 9000, timedBytes: 6000, copySeconds: 70))

        let migration = try #require(PostgresMigration.embedded.first { $0.version == 3 })
        let backfill = try #require(migration.statements.first { $0.hasPrefix("UPDATE plans SET disk_count") })
        try PostgresTestDatabase.query(database.location, "UPDATE plans SET disk_count = 0, completed_disks = 0, completed_bytes = 0, timed_bytes = 0, copy_seconds = 0")
        try PostgresTestDatabase.query(database.location, backfill)
        #expect(try read() == kept, "the backfill gives the totals kept")

        // The states' totals (0004) follow the plans through their moves, and sum as the plans do.
        let plans = try store.plans(PlanFilter(), limit: nil)
        let moves: [[PlanState]] = [[.running, .completed], [.running, .failed, .running, .needsAttention], [.running]]
        for (plan, path) in zip(plans, moves) {
            var record = plan
            for state in path {
                let previous = record.state
                record.state = state
                try await store.save(plan: record, expecting: previous, event: nil, at: Date())
            }
        }
        let everyTime = PlanFilter(createdFrom: Date(timeIntervalSince1970: 0), createdBefore: Date(timeIntervalSince1970: 1e10))
        for states in [nil, Set([PlanState.completed]), [.running, .needsAttention], [.pending]] as [Set<PlanState>?] {
            var byPlans = everyTime
            byPlans.states = states
            #expect(try store.summary(PlanFilter(states: states)) == store.summary(byPlans), "states \(String(describing: states))")
        }
        let stateTotals = "SELECT state, plans, disks, completed_disks, completed_bytes, timed_bytes, copy_seconds FROM plan_state_totals ORDER BY state"
        func readStates() throws -> [String] {
            try PostgresTestDatabase.query(database.location, stateTotals).map { row in
                let (state, count, disks, completed, bytes, timed, seconds) = try row.decode((String, Int64, Int64, Int64, Int64, Int64, Double).self)
                return "\(state): \(count) \(disks) \(completed) \(bytes) \(timed) \(seconds)"
            }
        }
        let keptStates = try readStates()
        let stateMigration = try #require(PostgresMigration.embedded.first { $0.version == 4 })
        let stateBackfill = try #require(stateMigration.statements.first { $0.hasPrefix("INSERT INTO plan_state_totals") })
        try PostgresTestDatabase.query(database.location, "DELETE FROM plan_state_totals")
        try PostgresTestDatabase.query(database.location, stateBackfill)
        #expect(try readStates() == keptStates, "the backfill gives the states' totals kept")
    }

    /// Writes issued while the server restarts all succeed, each exactly once.
    @Test func writesAcrossAServerRestartSucceedExactlyOnce() async throws {
        guard let (database, store) = try Self.open(reconnectFor: 60) else { return }
        defer { store.shutdown(); database.drop() }
        let (plan, _) = try store.insertPlan(try Self.plan(host: "h", vm: "vm"), at: Date())
        let writes = 40
        let restart = Task.detached { try Self.restartServer() }
        for index in 0..<writes {
            try await store.appendEvent(planId: plan.id, diskId: nil, event: NewEvent(kind: .note, detail: "write \(index)"), at: Date())
            try await Task.sleep(for: .milliseconds(50))
        }
        try await restart.value
        try await store.appendEvent(planId: plan.id, diskId: nil, event: NewEvent(kind: .note, detail: "after"), at: Date())
        let details = try store.events(ofPlan: plan.id).map(\.detail)
        for index in 0..<writes { #expect(details.filter { $0 == "write \(index)" }.count == 1, "write \(index)") }
        #expect(details.contains("after"))
    }

    /// A COMMIT whose reply is lost is found committed through its receipt: a
    /// compare-and-set is neither reported as a conflict nor applied twice.
    @Test func aLostCommitReplyIsNeitherAConflictNorAppliedTwice() async throws {
        guard let (database, store) = try Self.open() else { return }
        defer { store.shutdown(); database.drop() }
        let (plan, disks) = try store.insertPlan(try Self.plan(host: "h", vm: "vm"), at: Date())
        var disk = disks[0]
        disk.state = .snapshotting
        store.commitRepliesToLose.store(1, ordering: .relaxed)
        try await store.save(disk: disk, expecting: .pending, event: NewEvent(kind: .transition, detail: "once"), at: Date())
        #expect(store.commitRepliesToLose.load(ordering: .relaxed) == 0, "the fault was injected")
        #expect(try store.disk(id: disk.id)?.state == .snapshotting)
        #expect(try store.events(ofPlan: plan.id).filter { $0.detail == "once" }.count == 1)
        // The same for a plain append (no compare-and-set to stop a second run).
        store.commitRepliesToLose.store(1, ordering: .relaxed)
        try await store.appendEvent(planId: plan.id, diskId: nil, event: NewEvent(kind: .note, detail: "appended"), at: Date())
        #expect(try store.events(ofPlan: plan.id).filter { $0.detail == "appended" }.count == 1)
    }

    /// The most slots seen held at once, of host a and of target /srv/b.
    final class Maxima: Sendable {
        let counts = Mutex<(host: Int, target: Int)>((0, 0))
    }

    /// `scripts/postgres restart` of the test's server (the cluster `scripts/test` started).
    static func restartServer() throws {
        try PostgresServer.restart()
    }
}
