import Foundation
import GRDB
import LivecopyModel
import LivecopyStore
import Testing

/// A fresh directory per test, removed afterwards.
final class Scratch {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("lc-store-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// `livecopy.db` here, as a newer livecopy would leave it: a migration (9999) this one
    /// does not know recorded as applied. Returns its path.
    func databaseOfANewerSchema() throws -> String {
        let database = path + "/livecopy.db"
        _ = try SQLiteStore(path: database)
        let queue = try DatabaseQueue(path: database)
        defer { try? queue.close() }
        try queue.write { db in
            try db.execute(sql: "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (9999, 'future', 'x', 0)")
        }
        return database
    }
}

struct MigrationTests {
    @Test func embeddedMigrationsAreNumberedInOrder() {
        let migrations = Migration.embedded
        #expect(!migrations.isEmpty)
        #expect(migrations.map(\.version) == Array(1...migrations.count))
    }

    @Test func anEmptyDatabaseGetsEveryMigrationWithItsChecksum() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/sub/dir/livecopy.db"
        _ = try SQLiteStore(path: path)
        let queue = try DatabaseQueue(path: path)
        let rows = try queue.read { db in try Row.fetchAll(db, sql: "SELECT version, checksum FROM schema_migrations ORDER BY version") }
        #expect(rows.map { $0["version"] as Int } == Migration.embedded.map(\.version))
        #expect(rows.map { $0["checksum"] as String } == Migration.embedded.map(\.checksum))
        let tables = try queue.read { db in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'") }
        for table in ["plans", "disks", "events"] { #expect(tables.contains(table)) }
        // Reopening applies nothing twice.
        _ = try SQLiteStore(path: path)
        let count = try queue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM schema_migrations") }
        #expect(count == Migration.embedded.count)
    }

    @Test func aDatabaseFromANewerSchemaIsRefused() throws {
        let scratch = try Scratch()
        let path = try scratch.databaseOfANewerSchema()
        do {
            _ = try SQLiteStore(path: path)
            Issue.record("opened a newer database")
        } catch let error as StoreError {
            #expect(error.description.contains("newer livecopy"))
            #expect(error.description.contains("9999"))
        }
    }

    @Test func anEditedMigrationIsDetected() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/livecopy.db"
        _ = try SQLiteStore(path: path)
        var edited = Migration.embedded
        let first = edited[0]
        edited[0] = Migration(fileName: "0001_\(first.name).sql", sql: first.sql + "\n-- edited\n")!
        #expect(throws: StoreError.self) { try SQLiteStore(path: path, migrations: edited) }
    }

    @Test func eachMigrationRunsInItsOwnTransaction() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/livecopy.db"
        let good = Migration(fileName: "0001_good.sql", sql: "CREATE TABLE a (x);")!
        let bad = Migration(fileName: "0002_bad.sql", sql: "CREATE TABLE b (x); THIS IS NOT SQL;")!
        #expect(throws: StoreError.self) { try SQLiteStore(path: path, migrations: [good, bad]) }
        let queue = try DatabaseQueue(path: path)
        let versions = try queue.read { db in try Int.fetchAll(db, sql: "SELECT version FROM schema_migrations") }
        #expect(versions == [1])
        let tables = try queue.read { db in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'") }
        #expect(tables.contains("a"))
        #expect(!tables.contains("b"))
    }

    @Test func parsesMigrationFileNames() {
        #expect(Migration(fileName: "0003_add_lease.sql", sql: "")?.version == 3)
        #expect(Migration(fileName: "0003_add_lease.sql", sql: "")?.name == "add_lease")
        #expect(Migration(fileName: "README.md", sql: "") == nil)
        #expect(Migration(fileName: "x_y.sql", sql: "") == nil)
    }
}

struct SQLiteStoreTests {
    /// A pending plan of `disks` disks of VM `vm` (its socket and destinations named after it).
    static func newPlan(disks: Int = 2, vm: String = "vm") throws -> NewPlan {
        NewPlan(name: "t", policyReference: nil, policy: try Policy.resolve(nil), state: .pending,
                disks: (0..<disks).map {
                    NewPlan.Disk(vmName: vm, vmAddress: "/\(vm).qmp", device: "drive\($0)", destination: "/\(vm)-d\($0).qcow2",
                                 source: "/s\($0).qcow2", sourceFormat: "qcow2", qmpDevice: "drive\($0)")
                })
    }

    @Test func usesWALFullSyncAndOwnerOnlyPermissions() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/new/livecopy.db"
        let store = try SQLiteStore(path: path)
        let queue = try DatabaseQueue(path: path)
        let mode = try queue.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        #expect(mode == "wal")
        // GRDB's WAL set-up lowers synchronous to NORMAL; the store must have set it back.
        #expect(try store.synchronousLevel() == 2)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let directory = try FileManager.default.attributesOfItem(atPath: scratch.path + "/new")
        #expect((directory[.posixPermissions] as? Int) == 0o700)
    }

    @Test func recordsPlansDisksAndEvents() throws {
        let scratch = try Scratch()
        let store = try SQLiteStore(path: scratch.path + "/livecopy.db")
        let (plan, disks) = try store.insertPlan(try Self.newPlan(), at: Date())
        #expect(plan.state == .pending)
        #expect(disks.count == 2)
        #expect(disks.allSatisfy { $0.state == .pending })
        var disk = disks[0]
        disk.state = .snapshotting
        try store.save(disk: disk, expecting: .pending, event: NewEvent(kind: .transition, from: "pending", to: "snapshotting", detail: "go"), at: Date())
        #expect(try store.disks(ofPlan: plan.id)[0].state == .snapshotting)
        #expect(try store.disk(id: disk.id)?.state == .snapshotting)
        #expect(try store.disk(id: disks[1].id)?.device == "drive1")
        #expect(try store.disk(id: disks[1].id + 1000) == nil)
        let events = try store.events(ofPlan: plan.id)
        #expect(events.count == 2)
        #expect(events.last?.from == "pending")
        #expect(events.last?.to == "snapshotting")
        #expect(events.last?.diskId == disk.id)
        #expect(try store.plan(id: plan.id)?.policy == (try Policy.resolve(nil)))
    }

    @Test func aBatchCommitsEveryCallTogetherAndAConflictInsideItChangesNothing() throws {
        let scratch = try Scratch()
        let store = try SQLiteStore(path: scratch.path + "/livecopy.db")
        let (plan, disks) = try store.batch { () throws -> (PlanRecord, [DiskRecord]) in
            let (plan, disks) = try store.insertPlan(try Self.newPlan(), at: Date())
            var disk = disks[0]
            disk.state = .snapshotting
            try store.save(disk: disk, expecting: .pending, event: NewEvent(kind: .transition, detail: "go"), at: Date())
            let conflict = #expect(throws: StoreError.self) {
                try store.save(disk: disk, expecting: .streaming, event: NewEvent(kind: .transition, detail: "x"), at: Date())
            }
            #expect(conflict?.kind.name == "conflict")
            #expect(try store.disks(ofPlan: plan.id)[0].state == .snapshotting)
            return (plan, disks)
        }
        #expect(disks.count == 2)
        #expect(try store.disks(ofPlan: plan.id).map(\.state) == [.snapshotting, .pending])
        #expect(try store.events(ofPlan: plan.id).count == 2)
        // A batch that throws leaves nothing behind.
        struct Stop: Error {}
        #expect(throws: Stop.self) {
            try store.batch {
                _ = try store.insertPlan(try Self.newPlan(vm: "other"), at: Date())
                throw Stop()
            }
        }
        #expect(try store.plans(states: nil, vm: nil, limit: nil).count == 1)
    }

    @Test func aWriteExpectingAnotherStateIsRefusedAndChangesNothing() throws {
        let scratch = try Scratch()
        let store = try SQLiteStore(path: scratch.path + "/livecopy.db")
        let (plan, disks) = try store.insertPlan(try Self.newPlan(), at: Date())
        var disk = disks[0]
        disk.state = .streaming
        let conflict = #expect(throws: StoreError.self) {
            try store.save(disk: disk, expecting: .snapshotting, event: NewEvent(kind: .transition, detail: "x"), at: Date())
        }
        #expect(conflict?.kind.name == "conflict")
        #expect(conflict?.description == "record changed concurrently: disk \(disk.id) is no longer snapshotting")
        #expect(try store.disks(ofPlan: plan.id)[0].state == .pending)
        #expect(try store.events(ofPlan: plan.id).count == 1)
    }

    /// The engine's writes, awaited through the protocol: the same rules as the synchronous
    /// ones, and a write asked for by a cancelled task still completes.
    @Test func awaitedWritesKeepTheirRulesAndSurviveCancellation() async throws {
        let scratch = try Scratch()
        let concrete = try SQLiteStore(path: scratch.path + "/livecopy.db")
        let store: any WorkflowStore = concrete
        let (plan, disks) = try concrete.insertPlan(try Self.newPlan(), at: Date())
        var disk = disks[0]
        disk.state = .snapshotting
        try await store.save(disk: disk, expecting: .pending, event: NewEvent(kind: .transition, detail: "go"), at: Date())
        let conflict = await #expect(throws: StoreError.self) {
            try await store.save(disk: disk, expecting: .pending, event: NewEvent(kind: .transition, detail: "again"), at: Date())
        }
        #expect(conflict?.kind.name == "conflict")
        try await store.saveProgress(diskId: disk.id, bytesDone: 5, bytesTotal: 10, at: Date())
        #expect(try concrete.disk(id: disk.id).map { [$0.bytesDone, $0.bytesTotal] } == [5, 10])
        try await store.appendEvent(planId: plan.id, diskId: disk.id, event: NewEvent(kind: .note, detail: "noted"), at: Date())
        let owner = PlanOwner(pid: 42, host: "elsewhere", heartbeat: Date())
        #expect(try await store.acquireLease(planId: plan.id, owner: owner, isGone: { _ in false }) == nil)
        #expect(try await store.renewLease(planId: plan.id, owner: owner, at: Date()))
        let other = PlanOwner(pid: 43, host: "elsewhere", heartbeat: Date())
        let held = await #expect(throws: StoreError.self) { try await store.acquireLease(planId: plan.id, owner: other, isGone: { _ in false }) }
        #expect(held?.kind.name == "leaseHeld")
        #expect(held?.description.hasPrefix("plan \(plan.id) is owned by a live livecopy (") == true)
        #expect(try await store.renewLease(planId: plan.id, owner: other, at: Date()) == false)

        // A cancelled task's write is not abandoned: the ledger records each step it asked for.
        var next = disk
        next.state = .streaming
        let cancelled = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await store.save(disk: next, expecting: .snapshotting, event: NewEvent(kind: .transition, detail: "cancelled"), at: Date())
        }
        try await cancelled.value
        try await store.releaseLease(planId: plan.id, owner: owner)

        let saved = try #require(try concrete.disk(id: disk.id))
        #expect(saved.state == .streaming)
        #expect(try concrete.owner(ofPlan: plan.id) == nil)
        #expect(try concrete.events(ofPlan: plan.id).map(\.detail).filter { ["go", "again", "noted", "cancelled"].contains($0) }
                == ["go", "noted", "cancelled"])
    }

    @Test func listsPlansNewestFirstWithFilters() throws {
        let scratch = try Scratch()
        let store = try SQLiteStore(path: scratch.path + "/livecopy.db")
        let first = try store.insertPlan(try Self.newPlan(), at: Date()).0
        let other = try Self.newPlan(disks: 1, vm: "other")
        let second = try store.insertPlan(other, at: Date()).0
        #expect(try store.plans(states: nil, vm: nil, limit: nil).map(\.id) == [second.id, first.id])
        #expect(try store.plans(states: nil, vm: "other", limit: nil).map(\.id) == [second.id])
        #expect(try store.plans(states: nil, vm: nil, limit: 1).map(\.id) == [second.id])
        #expect(try store.plans(states: [.completed], vm: nil, limit: nil).isEmpty)
    }

    @Test func aFileThatIsNotSQLiteGetsAOneLineError() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/junk.db"
        try String(repeating: "this is not a database\n", count: 200).write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try SQLiteStore(path: path)
            Issue.record("opened a junk file")
        } catch let error as StoreError {
            #expect(error.description.contains("not an SQLite database"), "\(error.description)")
            #expect(!error.description.contains("\n"))
        }
    }
}

/// Operator controls (migration 0003): a request changes the plan's setting at once and
/// stays open until finished, once.
struct OperatorControlStoreTests {
    @Test func requestsChangeTheSettingAndAreFinishedOnce() throws {
        let scratch = try Scratch()
        let store = try SQLiteStore(path: scratch.path + "/livecopy.db")
        let (plan, _) = try store.insertPlan(try SQLiteStoreTests.newPlan(), at: Date())
        #expect(try store.controls(ofPlan: plan.id) == PlanControls())

        let throttle = try store.requestControl(planId: plan.id, .throttle(speed: 20 << 20), by: "pid 1", at: Date())
        let pause = try store.requestControl(planId: plan.id, .pause, by: "pid 2", at: Date())
        #expect(try store.controls(ofPlan: plan.id) == PlanControls(speedOverride: 20 << 20, paused: true))
        #expect(try store.openControlRequests(planId: plan.id).map(\.id) == [throttle.id, pause.id])
        #expect(try store.openControlRequests(planId: plan.id).first?.action == .throttle(speed: 20 << 20))

        try store.finishControlRequest(id: throttle.id, planId: plan.id, ok: true, outcome: "applied", at: Date())
        try store.finishControlRequest(id: throttle.id, planId: plan.id, ok: false, outcome: "again", at: Date())
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

extension StoreError.Kind {
    /// The case's name, for a test to say which kind it expects.
    var name: String {
        switch self {
        case .database: return "database"
        case .conflict: return "conflict"
        case .leaseHeld: return "leaseHeld"
        case .claimed: return "claimed"
        }
    }

    /// The claim refused, for a `.claimed` error.
    var claim: ClaimConflict? {
        switch self {
        case .claimed(let conflict): return conflict
        case .database, .conflict, .leaseHeld: return nil
        }
    }
}
