import Foundation
import GRDB
import LivecopyModel
@testable import LivecopyStore
import Testing

/// `SQLiteStore.readingOnly` (what `validate` reads): no file is created, an older schema
/// is read through a migrated copy in memory and left as it was, nothing can be written,
/// and a newer schema is refused as everywhere.
struct ReadingOnlyStoreTests {
    /// The release before migration 0007 (Tests/Fixtures/databases; its README).
    static let olderFixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/databases/0006-interrupted-mid-stream.db").path

    /// Every file of the directory with its bytes.
    static func contents(of directory: String) throws -> [String: Data] {
        var all: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            all[name] = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))
        }
        return all
    }

    @Test func noDatabaseReadsAsAnEmptyOneAndCreatesNothing() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/missing/livecopy.db"
        let store = try SQLiteStore.readingOnly(at: path)
        #expect(try store.plans(states: nil, vm: nil, limit: nil).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/missing"))
    }

    @Test func aDatabaseOfThisSchemaIsReadInPlaceAndNeitherWrittenNorLeftWithSideFiles() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/livecopy.db"
        do {
            let writer = try SQLiteStore(path: path)
            let policy = try Policy.resolve(nil)
            _ = try writer.insertPlan(NewPlan(name: "p", policyReference: nil, policy: policy, state: .pending, disks: [
                NewPlan.Disk(vmName: "vm", vmAddress: "/q", device: "d", destination: "/d", allocatedBytes: 42),
            ]), at: Date())
        }
        let before = try Self.contents(of: scratch.path)
        do {
            let store = try SQLiteStore.readingOnly(at: path)
            #expect(try store.disks(ofPlan: 1).map(\.allocatedBytes) == [42])
            #expect(throws: StoreError.self) { try store.requestCancel(planId: 1, at: Date()) }
        }
        #expect(try Self.contents(of: scratch.path) == before, "the same files, byte for byte")
    }

    @Test func anOlderSchemaIsMigratedInMemoryOnly() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/livecopy.db"
        try FileManager.default.copyItem(atPath: Self.olderFixture, toPath: path)
        let before = try Self.contents(of: scratch.path)
        do {
            let store = try SQLiteStore.readingOnly(at: path)
            let disks = try store.disks(ofPlan: 1)
            #expect(disks.map(\.state) == [.streaming])
            #expect(disks.map(\.allocatedBytes) == [nil], "the column exists in the copy, unknown for an older plan")
        }
        #expect(try Self.contents(of: scratch.path) == before, "the file keeps its schema")
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        #expect(try queue.read { db in try Int.fetchOne(db, sql: "SELECT MAX(version) FROM schema_migrations") } == 6)
    }

    @Test func aNewerSchemaIsRefused() throws {
        let scratch = try Scratch()
        let path = try scratch.databaseOfANewerSchema()
        #expect {
            _ = try SQLiteStore.readingOnly(at: path)
        } throws: { error in
            (error as? StoreError)?.description.contains("newer livecopy") == true
        }
    }
}
