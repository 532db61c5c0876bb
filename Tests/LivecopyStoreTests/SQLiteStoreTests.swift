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
    /// A pending plan of `disks` disks of VM `vm` (the contract suite's).
    static func newPlan(disks: Int = 2, vm: String = "vm") throws -> NewPlan {
        try StoreContractTests.newPlan(disks: disks, vm: vm)
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
