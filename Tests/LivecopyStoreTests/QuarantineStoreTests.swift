import Foundation
import GRDB
import LivecopyModel
import LivecopyStore
import Testing

/// `quarantined_images` (migration 0009): the row written in the same transaction as its
/// disk's move to `completed`, once per disk; its states moved by compare-and-set, each
/// with an event in the disk's timeline; the queries `purge` and `status` make.
struct QuarantineStoreTests {
    /// A store with one plan of one disk moved to `retiring`.
    static func retiringDisk(_ scratch: Scratch) async throws -> (SQLiteStore, DiskRecord) {
        let store = try SQLiteStore(path: scratch.path + "/livecopy.db")
        return (store, try await retiringDisk(in: store))
    }

    /// One plan of one disk moved to `retiring`, in `store`.
    static func retiringDisk(in store: any PlanStore) async throws -> DiskRecord {
        var policy = try Policy.resolve(nil)
        policy.retireSource = .quarantine
        let (_, disks) = try store.insertPlan(
            NewPlan(name: "q", policyReference: nil, policy: policy, state: .running, disks: [
                NewPlan.Disk(vmName: "vm", vmAddress: "/run/vm.qmp", device: "drive0", destination: "/d/dst.qcow2",
                             source: "/s/src.qcow2"),
            ]), at: Date())
        var disk = try #require(disks.first)
        for next in [DiskState.snapshotting, .streaming, .retiring] {
            let previous = disk.state
            disk.state = next
            try await store.save(disk: disk, expecting: previous, event: nil, at: Date())
        }
        return disk
    }

    static func image(expiresIn seconds: Double, now: Date = Date()) -> NewQuarantinedImage {
        NewQuarantinedImage(originalPath: "/s/src.qcow2", quarantinePath: "/s/.livecopy-quarantine/1-1-src.qcow2",
                            sizeBytes: 8 << 20, device: UInt64.max - 1, inode: 1 << 63, quarantinedAt: now,
                            expiresAt: now.addingTimeInterval(seconds))
    }

    @Test func aRowRefusedRollsTheDisksMoveBack() async throws {
        let scratch = try Scratch()
        let (store, retiring) = try await Self.retiringDisk(scratch)
        var completed = retiring
        completed.state = .completed
        // A row for this disk already (made by hand): the unique index refuses a second one,
        // and the disk's move to completed, in the same transaction, is undone with it.
        let queue = try DatabaseQueue(path: scratch.path + "/livecopy.db")
        try await queue.write { db in
            try db.execute(sql: """
                INSERT INTO quarantined_images (disk_id, plan_id, original_path, quarantine_path, size_bytes, device, inode,
                                                quarantined_at, expires_at)
                VALUES (?, ?, '/x', '/y', 0, 1, 2, 0, 0)
                """, arguments: [retiring.id, retiring.planId])
        }
        try queue.close()
        await #expect(throws: StoreError.self) {
            try await store.save(disk: completed, expecting: .retiring, event: nil, quarantining: Self.image(expiresIn: 60), at: Date())
        }
        #expect(try store.disk(id: retiring.id)?.state == .retiring, "the disk's move was rolled back with the row")
    }

    @Test func theStatesAndTheirMovesAreThoseOfTheMigration() throws {
        let sql = try #require(Migration.embedded.first { $0.version == 9 }?.sql)
        for state in QuarantineState.allCases { #expect(sql.contains("'\(state.rawValue)'"), "\(state.rawValue)") }
        #expect(QuarantineState.held.allowedNext == [.purging, .restoring])
        #expect(QuarantineState.purged.isFinal && QuarantineState.restored.isFinal)
    }
}

/// Quarantine's part of the store contract, on both backends.
extension StoreContractTests {
    @Test(arguments: StoreBackend.allCases)
    func theRowIsWrittenWithTheMoveToCompletedAndOnlyOnce(backend: StoreBackend) async throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        let retiring = try await QuarantineStoreTests.retiringDisk(in: store)
        var completed = retiring
        completed.state = .completed
        let event = NewEvent(kind: .transition, from: "retiring", to: "completed", detail: "source quarantined")
        try await store.save(disk: completed, expecting: .retiring, event: event, quarantining: QuarantineStoreTests.image(expiresIn: 60), at: Date())

        let image = try #require(try store.quarantinedImage(ofDisk: retiring.id))
        #expect(image.state == .held && image.endedAt == nil)
        #expect(image.device == UInt64.max - 1 && image.inode == 1 << 63, "the unsigned numbers read back whole")
        #expect(image.planId == retiring.planId && image.originalPath == "/s/src.qcow2")
        #expect(try store.disk(id: retiring.id)?.state == .completed)
        #expect(try store.quarantinedImages(ofPlan: retiring.planId).map(\.id) == [image.id])

        // The disk's write refused (no longer retiring): no second row either.
        await #expect(throws: StoreError.self) {
            try await store.save(disk: completed, expecting: .retiring, event: event, quarantining: QuarantineStoreTests.image(expiresIn: 60), at: Date())
        }
        #expect(try store.quarantinedImages(ofPlan: retiring.planId).count == 1)
    }

    @Test(arguments: StoreBackend.allCases)
    func statesMoveByCompareAndSetWithAnEventInTheDisksTimeline(backend: StoreBackend) async throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        let retiring = try await QuarantineStoreTests.retiringDisk(in: store)
        var completed = retiring
        completed.state = .completed
        let now = Date()
        try await store.save(disk: completed, expecting: .retiring, event: nil, quarantining: QuarantineStoreTests.image(expiresIn: -1, now: now), at: now)
        let image = try #require(try store.quarantinedImage(ofDisk: retiring.id))

        #expect(try store.quarantinedImages(in: [.held], expiredBy: now).map(\.id) == [image.id])
        #expect(try store.quarantinedImages(in: [.held], expiredBy: now.addingTimeInterval(-10)).isEmpty)
        let summary = try store.quarantineSummary()
        #expect(summary.count == 1 && summary.bytes == 8 << 20)
        #expect(abs((summary.nextExpiry?.timeIntervalSince1970 ?? 0) - now.addingTimeInterval(-1).timeIntervalSince1970) < 0.01)

        try await store.saveQuarantine(id: image.id, state: .purging, expecting: .held,
                                       event: NewEvent(kind: .intent, detail: "purge: it"), at: Date())
        await #expect(throws: StoreError.self) {
            try await store.saveQuarantine(id: image.id, state: .purging, expecting: .held,
                                           event: NewEvent(kind: .intent, detail: "purge: again"), at: Date())
        }
        #expect(try store.quarantinedImages(in: [.purging], expiredBy: nil).map(\.id) == [image.id])
        #expect(try store.quarantineSummary().nextExpiry == nil, "no held image: no next expiry")
        #expect(try store.quarantineSummary().count == 1, "a purge under way still holds the space")

        try await store.saveQuarantine(id: image.id, state: .purged, expecting: .purging,
                                       event: NewEvent(kind: .outcome, detail: "purge: deleted it"), at: Date())
        let purged = try #require(try store.quarantinedImage(ofDisk: retiring.id))
        #expect(purged.state == .purged && purged.endedAt != nil)
        #expect(try store.quarantineSummary() == QuarantineSummary(count: 0, bytes: 0, nextExpiry: nil))
        let details = try store.events(ofDisk: retiring.id, planId: retiring.planId).map(\.detail)
        #expect(details.suffix(2) == ["purge: it", "purge: deleted it"], "\(details)")
    }
}
