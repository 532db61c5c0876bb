import Foundation
import GRDB
import LivecopyModel
@testable import LivecopyStore
import Testing

/// Migration 0005 renames `disks.qmp_socket` to `vm_address`: a database of the release
/// before it opens with each disk's socket as its VM address, and 0004's partial index,
/// which the claim check of every new plan relies on, follows the column.
struct VMAddressMigrationTests {
    /// The previous release's database (Tests/Fixtures/databases; its README).
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/databases/0004-interrupted-mid-stream.db").path

    @Test func aDatabaseOfThePreviousReleaseKeepsItsSocketsAsVMAddresses() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/livecopy.db"
        try FileManager.default.copyItem(atPath: Self.fixture, toPath: path)
        let store = try SQLiteStore(path: path)
        let disks = try store.disks(ofPlan: 1)
        #expect(disks.map(\.vmAddress) == ["/tmp/livecopy-fixture-0004/vm.qmp"])
        #expect(disks.map(\.state) == [.streaming])

        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        let columns = try queue.read { db in try db.columns(in: "disks").map(\.name) }
        #expect(columns.contains("vm_address") && !columns.contains("qmp_socket"), "\(columns)")
        try Self.expectClaimIndex(queue)
    }

    @Test func aNewDatabaseHasTheClaimIndexOnTheVMAddress() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/livecopy.db"
        _ = try SQLiteStore(path: path)
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        try Self.expectClaimIndex(queue)
    }

    /// `disks_claiming_vm_disk` covers (vm_address, device) for disks not final, and the
    /// claim check's query uses it.
    static func expectClaimIndex(_ queue: DatabaseQueue, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try queue.read { db in
            let sql = try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'disks_claiming_vm_disk'")
            #expect(sql == "CREATE INDEX disks_claiming_vm_disk ON disks (vm_address, device) WHERE \(SQLiteStore.diskNotFinal)",
                    sourceLocation: sourceLocation)
            let plan = try Row.fetchAll(
                db, sql: "EXPLAIN QUERY PLAN SELECT 1 FROM disks d WHERE d.vm_address = ? AND d.device = ? AND d.\(SQLiteStore.diskNotFinal)",
                arguments: ["/run/vm.qmp", "drive0"]
            ).map { $0["detail"] as String }
            #expect(plan.contains { $0.contains("USING INDEX disks_claiming_vm_disk") }, "\(plan)", sourceLocation: sourceLocation)
        }
    }
}
