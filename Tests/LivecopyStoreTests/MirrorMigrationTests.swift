import Foundation
import GRDB
import LivecopyModel
@testable import LivecopyStore
import Testing

/// Migration 0006 rebuilds the disks table (SQLite changes a CHECK constraint no other
/// way) for the mirror strategy's state and columns. Events refer to disks with
/// `ON DELETE CASCADE`: dropping the old table with foreign keys on would erase the whole
/// history, so the migrator runs it with them off and checks them before committing.
struct MirrorMigrationTests {
    /// The databases of the releases before it (Tests/Fixtures/databases; its README).
    static let fixtures = ["0004-interrupted-mid-stream.db", "0005-interrupted-mid-stream.db"].map {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/databases/\($0)").path
    }

    @Test(arguments: fixtures)
    func aDatabaseOfAnEarlierReleaseKeepsEveryEventAndReadsAsStreamed(fixture: String) throws {
        let scratch = try Scratch()
        let path = scratch.path + "/livecopy.db"
        try FileManager.default.copyItem(atPath: fixture, toPath: path)
        let before = try Self.eventCounts(path)
        #expect(before.total > 0 && before.ofDisks > 0, "the fixture has a history: \(before)")

        let store = try SQLiteStore(path: path)
        let disks = try store.disks(ofPlan: 1)
        #expect(disks.map(\.strategy) == [.stream])
        #expect(disks.map(\.destinationFormat) == [.qcow2])
        #expect(disks.map(\.pivoted) == [false])
        #expect(disks.map(\.state) == [.streaming], "rows keep their state")
        #expect(try store.events(ofPlan: 1).count == before.total, "no event was lost by the rebuild")
        let after = try Self.eventCounts(path)
        #expect(after.total == before.total && after.ofDisks == before.ofDisks, "before \(before), after \(after)")

        // The new state is writable, and foreign keys are enforced again.
        var disk = try #require(disks.first)
        disk.state = .mirroring
        try store.save(disk: disk, expecting: .streaming, event: nil, at: Date())
        #expect(try store.disk(id: disk.id)?.state == .mirroring)
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        try queue.read { db in
            #expect(try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").isEmpty)
            let check = try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'disks'") ?? ""
            #expect(check.contains("'mirroring'"), "\(check)")
        }
        try VMAddressMigrationTests.expectClaimIndex(queue)
    }

    @Test func theMigratorSwitchesForeignKeysBackOn() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/livecopy.db"
        try FileManager.default.copyItem(atPath: Self.fixtures[1], toPath: path)
        let store = try SQLiteStore(path: path)
        // A disk row referring to no plan must be refused after the migration.
        let refused = (try? store.save(
            disk: DiskRecord(id: 999, planId: 999, vmName: "x", vmAddress: "/x", device: "d", destination: "/d", source: nil,
                             sourceFormat: nil, qmpDevice: nil, state: .pending, bytesDone: 0, bytesTotal: 0, error: nil,
                             intent: nil, destinationCreated: false, updatedAt: Date()),
            expecting: .pending, event: NewEvent(kind: .note, detail: "x"), at: Date())) == nil
        #expect(refused, "a row for a disk that does not exist is refused")
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        let orphans = try queue.write { db -> Bool in
            try db.execute(sql: "PRAGMA foreign_keys = ON")
            do {
                try db.execute(sql: "INSERT INTO events (plan_id, disk_id, at, kind, detail) VALUES (999, 999, 0, 'note', 'x')")
                return true
            } catch {
                return false
            }
        }
        #expect(!orphans, "events still refer to disks by a foreign key")
    }

    static func eventCounts(_ path: String) throws -> (total: Int, ofDisks: Int) {
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        return try queue.read { db in
            (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM events") ?? 0,
             try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM events WHERE disk_id IS NOT NULL") ?? 0)
        }
    }
}
