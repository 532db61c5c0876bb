import Foundation
import GRDB
import LivecopyModel
import LivecopyStore
import QMP
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Databases written by earlier releases (Tests/Fixtures/databases, made by
/// scripts/make-db-fixture): this livecopy opens each, migrates it, and recovers the plan
/// the earlier release left interrupted, against real QEMU after a "host reboot".
@Suite(.serialized, .requires(.qemu))
struct OlderDatabaseTests {
    /// One fixture file: a database of schema `schema` holding one plan interrupted
    /// mid-stream, whose recorded paths all lie under `placeholder`.
    struct Fixture: Sendable, CustomTestStringConvertible {
        let fileName: String
        let schema: Int

        /// The scratch directory scripts/make-db-fixture used; every recorded path starts with it.
        var placeholder: String { "/tmp/livecopy-fixture-\(String(format: "%04d", schema))" }
        var path: String { OlderDatabaseTests.fixturesDirectory.appendingPathComponent(fileName).path }
        /// The column of the disk's VM address in this schema (0005 renamed it).
        var addressColumn: String { schema < 5 ? "qmp_socket" : "vm_address" }
        /// The columns that hold absolute paths, per Migrations/*.sql up to this schema.
        var pathColumns: [(table: String, column: String)] {
            [("disks", addressColumn), ("disks", "source"), ("disks", "destination"), ("plans", "policy_reference")]
        }
        var testDescription: String { fileName }
    }

    /// Tests/Fixtures/databases, found from this file (no resource bundle needed).
    static let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/databases")

    /// Every fixture, oldest schema first. Each schema change adds one (see the README there).
    static let fixtures = [
        Fixture(fileName: "0004-interrupted-mid-stream.db", schema: 4),
        Fixture(fileName: "0005-interrupted-mid-stream.db", schema: 5),
        Fixture(fileName: "0006-interrupted-mid-stream.db", schema: 6),
        Fixture(fileName: "0007-interrupted-mid-stream.db", schema: 7),
        Fixture(fileName: "0008-interrupted-mid-stream.db", schema: 8),
    ]

    // MARK: - The convention

    @Test func everyFixtureFileIsListedAndEverySchemaSinceTheFirstHasOne() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.fixturesDirectory.path).filter { $0.hasSuffix(".db") }
        #expect(Set(files) == Set(Self.fixtures.map(\.fileName)),
                "the .db files in \(Self.fixturesDirectory.path) and OlderDatabaseTests.fixtures differ: files \(files.sorted())")
        let newest = Migration.embedded.last?.version ?? 0
        let first = Self.fixtures.map(\.schema).min() ?? newest
        let missing = (first..<max(first, newest)).filter { schema in !Self.fixtures.contains { $0.schema == schema } }
        #expect(missing.isEmpty,
                "no fixture for schema \(missing): every schema change adds one made by the last release before it (scripts/make-db-fixture)")
    }

    // MARK: - Recovery of an older release's plan

    @Test(.timeLimit(.minutes(3)), arguments: fixtures)
    func recoverFinishesAPlanAnOlderReleaseLeftMidStream(_ fixture: Fixture) async throws {
        try #require(FileManager.default.fileExists(atPath: fixture.path),
                     "fixture \(fixture.path) is missing (made by scripts/make-db-fixture at the release that wrote schema \(fixture.schema))")
        let scratch = try TemporaryDirectory(prefix: "lc-olddb")
        defer { scratch.remove() }
        let database = scratch.appending("livecopy.db")
        try FileManager.default.copyItem(atPath: fixture.path, toPath: database)

        // The database as the older release left it, read without migrating it.
        let before = try Self.rewritePaths(database, of: fixture, to: scratch.path)
        #expect(before.versions == Array(1...fixture.schema), "the fixture's schema_migrations: \(before.versions)")
        #expect(before.planState == "running", "the fixture's plan is \(before.planState)")
        #expect(before.diskState == "streaming", "the fixture's disk is \(before.diskState)")
        #expect(!before.events.isEmpty, "the fixture holds the plan's events")

        // The paths now name this test's directory, as the recorded layout had them.
        let source = scratch.appending("src.qcow2")
        let destination = scratch.appending("new/dst.qcow2")
        #expect(before.source == source, "recorded source after the rewrite: \(before.source ?? "none")")
        #expect(before.destination == destination, "recorded destination after the rewrite: \(before.destination)")

        // The world after the reboot: the source with its data, the destination overlay on
        // it holding a guest write, and the VM started by the operator on the destination.
        try QEMUImage.create(source, size: "64M")
        try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "8M")
        try FileManager.default.createDirectory(atPath: scratch.appending("new"), withIntermediateDirectories: true)
        try QEMUImage.create(destination, size: "64M", backing: source, backingFormat: "qcow2")
        #expect(chmod(destination, 0o600) == 0)
        try QEMUImage.write(destination, pattern: 0x22, offset: "4M", length: "64k")
        try QEMUImage.write(destination, pattern: 0x33, offset: "40M", length: "64k")
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: destination, format: "qcow2")])
        defer { vm.kill() }
        #expect(vm.livecopySocket == before.vmAddress, "the VM's socket \(vm.livecopySocket) is the recorded \(before.vmAddress)")
        try await vm.guestWrite(drive: "drive0", pattern: 0x44, offset: "6M", length: "64k")

        let recover = try await LivecopyProcess(database: database).run(["recover"])
        #expect(recover.status == 0, "recover exited \(recover.status):\n\(recover.stderr)\(recover.stdout)")

        let store = try SQLiteStore(path: database)
        let plan = try #require(try store.plan(id: before.planId), "plan \(before.planId) is gone after recover")
        #expect(plan.state == .completed, "plan \(plan.id) is \(plan.state.rawValue): \(plan.error ?? "")\n\(recover.stderr)")
        let disks = try store.disks(ofPlan: before.planId)
        #expect(disks.map(\.state) == [.completed], "disks: \(disks.map { "\($0.state.rawValue) \($0.error ?? "")" })")
        #expect(disks.map(\.vmAddress) == [before.vmAddress], "the recorded socket is the disk's VM address")

        // The schema is this release's, and the older release's history is intact.
        let after = try Self.schemaMigrations(database)
        #expect(after.map(\.version) == Migration.embedded.map(\.version), "schema_migrations after recover: \(after.map(\.version))")
        #expect(after.map(\.checksum) == Migration.embedded.map(\.checksum), "the applied migrations are this release's")
        let events = try store.events(ofPlan: before.planId)
        let kept = events.prefix(before.events.count).map { Self.EventSummary(id: $0.id, kind: $0.kind.rawValue, detail: $0.detail) }
        #expect(Array(kept) == before.events, "the earlier events are kept, in order")
        #expect(events.count > before.events.count, "recover recorded its own events after the earlier ones")

        let active = try await vm.testMonitor().queryBlock().first { $0.device == "drive0" }?.inserted
        #expect(active?.file == destination, "the VM runs on \(active?.file ?? "no image")")
        #expect(active?.backingFile == nil, "the destination still has backing \(active?.backingFile ?? "")")
        #expect(FileManager.default.fileExists(atPath: source + ".retired"), "the source was renamed to .retired")
        #expect(!FileManager.default.fileExists(atPath: source), "the source is no longer at \(source)")

        await vm.stop()
        let verified = try RecoveryIntegrationTests.verify(destination, [
            (0x11, "0", "4M"), (0x22, "4M", "64k"), (0x11, "4160k", "1984k"), (0x44, "6M", "64k"),
            (0x11, "6208k", "1984k"), (0, "8M", "32M"), (0x33, "40M", "64k"), (0, "41024k", "24512k"),
        ])
        #expect(verified.ok, "the destination's data:\n\(verified.output)")
        #expect(try QEMUImage.info(destination).backingFilename == nil, "the destination stands alone")
    }

    // MARK: - Helpers

    /// An event as the fixture recorded it.
    struct EventSummary: Equatable, CustomStringConvertible {
        let id: Int64
        let kind: String
        let detail: String
        var description: String { "#\(id) \(kind): \(detail)" }
    }

    /// What the fixture holds, read after its paths were rewritten.
    struct FixtureContents {
        let versions: [Int]
        let planId: Int64
        let planState: String
        let diskState: String
        let vmAddress: String
        let source: String?
        let destination: String
        let events: [EventSummary]
    }

    /// Rewrites the placeholder prefix of every recorded path of `fixture`, copied to
    /// `path`, to `to`, with plain SQL (no migration: the schema stays as the older
    /// release wrote it), and returns what it holds. Throws when any path column still
    /// names the placeholder afterwards, or when the fixture does not hold exactly one
    /// plan with one disk.
    static func rewritePaths(_ path: String, of fixture: Fixture, to: String) throws -> FixtureContents {
        let from = fixture.placeholder
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        return try queue.write { db in
            for (table, column) in fixture.pathColumns {
                try db.execute(sql: "UPDATE \(table) SET \(column) = replace(\(column), ?, ?)", arguments: [from, to])
                let left = try Int.fetchOne(
                    db, sql: "SELECT count(*) FROM \(table) WHERE instr(\(column), ?) > 0", arguments: [from]) ?? 0
                guard left == 0 else { throw FixtureError("\(table).\(column) still names \(from) in \(left) rows after the rewrite") }
            }
            // The dead owner's lease is as old as the fixture; on a machine whose clock is
            // behind the one that made it, it would look fresh, so it is aged to an hour ago.
            try db.execute(sql: "UPDATE plans SET owner_heartbeat = min(owner_heartbeat, ?)",
                           arguments: [Date().addingTimeInterval(-3600).timeIntervalSince1970])
            let versions = try Int.fetchAll(db, sql: "SELECT version FROM schema_migrations ORDER BY version")
            let plans = try Row.fetchAll(db, sql: "SELECT id, state FROM plans")
            let disks = try Row.fetchAll(db, sql: "SELECT state, \(fixture.addressColumn) AS address, source, destination FROM disks")
            guard plans.count == 1, disks.count == 1 else {
                throw FixtureError("the fixture holds \(plans.count) plans and \(disks.count) disks, not one of each")
            }
            let planId: Int64 = plans[0]["id"]
            let events = try Row.fetchAll(db, sql: "SELECT id, kind, detail FROM events WHERE plan_id = ? ORDER BY id", arguments: [planId])
                .map { EventSummary(id: $0["id"], kind: $0["kind"], detail: $0["detail"]) }
            return FixtureContents(
                versions: versions, planId: planId, planState: plans[0]["state"], diskState: disks[0]["state"],
                vmAddress: disks[0]["address"], source: disks[0]["source"], destination: disks[0]["destination"], events: events)
        }
    }

    /// `schema_migrations` as applied, oldest first.
    static func schemaMigrations(_ path: String) throws -> [(version: Int, checksum: String)] {
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        return try queue.read { db in
            try Row.fetchAll(db, sql: "SELECT version, checksum FROM schema_migrations ORDER BY version").map { ($0["version"], $0["checksum"]) }
        }
    }

    /// The fixture is not what the test expects of it.
    struct FixtureError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
