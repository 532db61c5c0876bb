import Foundation
import GRDB
import LivecopyModel
import LivecopyStore
import TestSupport
import Testing

/// Database faults through the built binary: an unwritable location, a full disk, a
/// write lock held by another process, a corrupt or foreign file, rows of the wrong
/// type, a newer schema. Each gives one line on stderr and a non-zero exit — never a
/// crash, never a hang. Every message seen is printed (`DatabaseFaultTests [case]`).
@Suite(.serialized)
struct DatabaseFaultTests {
    // MARK: - Helpers

    /// Runs `livecopy ARGS`; expects exit 2 (a run still going after `within` seconds, a
    /// watchdog, is killed and so fails the exit check) and one stderr line
    /// containing one of `fragments`. Returns that line and how long the run took.
    @discardableResult
    static func expectFault(
        _ livecopy: LivecopyProcess, _ arguments: [String], _ fragments: [String], case name: String,
        within: Double = 120, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> (message: String, seconds: Double) {
        let clock = ContinuousClock()
        let started = clock.now
        let running = try livecopy.start(arguments)
        let result = try await running.wait(timeout: within)
        let elapsed = clock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let message = result.stderr.trimmingCharacters(in: .newlines)
        print("DatabaseFaultTests [\(name)] livecopy \(arguments.joined(separator: " ")) → exit \(result.status) "
              + "after \(String(format: "%.1f", seconds)) s: \(message)")
        #expect(running.process.terminationReason == .exit, "[\(name)] killed by a signal", sourceLocation: sourceLocation)
        #expect(result.status == 2, "[\(name)] exit \(result.status): \(message)", sourceLocation: sourceLocation)
        #expect(!message.isEmpty && !message.contains("\n"), "[\(name)] one line: \(message)", sourceLocation: sourceLocation)
        #expect(message.hasPrefix("livecopy: error: "), "[\(name)] \(message)", sourceLocation: sourceLocation)
        #expect(fragments.contains { message.contains($0) }, "[\(name)] expected one of \(fragments): \(message)",
                sourceLocation: sourceLocation)
        for noise in ["Fatal error", "Error Domain=", "DecodingError", "recover picks it up"] {
            #expect(!message.contains(noise), "[\(name)] \(message)", sourceLocation: sourceLocation)
        }
        return (message, seconds)
    }

    /// Runs `livecopy ARGS` and expects success.
    @discardableResult
    static func expectSuccess(_ livecopy: LivecopyProcess, _ arguments: [String],
                              sourceLocation: SourceLocation = #_sourceLocation) async throws -> String {
        let result = try await livecopy.run(arguments)
        #expect(result.status == 0, "livecopy \(arguments): exit \(result.status): \(result.stderr)", sourceLocation: sourceLocation)
        return result.stdout
    }

    /// Runs a system tool; its exit status and output.
    @discardableResult
    static func tool(_ path: String, _ arguments: [String]) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch { return (-1, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Writes zeros to `path` until the file system is full.
    static func fill(_ path: String) {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: path) else { return }
        defer { try? handle.close() }
        let chunk = Data(count: 4096)
        for _ in 0..<100_000 {
            guard (try? handle.write(contentsOf: chunk)) != nil else { return }
        }
    }

    static func mount(_ options: String, at directory: String) -> Bool {
        tool("/bin/mount", ["-t", "tmpfs", "-o", options, "tmpfs", directory]).status == 0
    }

    static func unmount(_ directory: String) {
        tool("/bin/umount", [directory])
    }

    /// Runs SQL on `path` with a connection of its own, closed on return.
    static func sql(_ path: String, _ statements: String) throws {
        let queue = try DatabaseQueue(path: path)
        try queue.writeWithoutTransaction { db in try db.execute(sql: statements) }
        try queue.close()
    }

    /// A fake VM with a `drive0` (it answers queries only), and a plan file for it.
    struct Rig {
        let scratch: TemporaryDirectory
        let vm: FakeQMPPeer
        let livecopy: LivecopyProcess

        init(_ prefix: String, database: String? = nil) async throws {
            scratch = try TemporaryDirectory(prefix: prefix)
            vm = try await BadInputTests.fakeVM(source: scratch.appending("src.qcow2"))
            livecopy = LivecopyProcess(database: database ?? scratch.appending("livecopy.db"))
        }

        /// A plan file copying `drive<firstDevice>`… of the VM to new images in the scratch directory.
        func plan(_ name: String, disks: Int = 1, firstDevice: Int = 0) throws -> String {
            let path = scratch.appending("\(name).yaml")
            var text = "vms:\n  - name: vm1\n    qmp: \(vm.socketPath)\n    disks:\n"
            for index in 0..<disks {
                let padding = String(repeating: "x", count: disks > 1 ? 100 : 0)
                text += "      - device: drive\(firstDevice + index)\n        destination: \(scratch.appending("\(name)-\(index)\(padding).qcow2"))\n"
            }
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        func stop() {
            vm.stop()
            scratch.remove()
        }
    }

    // MARK: - Unwritable locations

    @Test func unwritableLocationsWithoutPrivileges() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-dbpath")
        defer { scratch.remove() }
        let file = scratch.appending("a-file")
        try "x".write(toFile: file, atomically: true, encoding: .utf8)
        try await Self.expectFault(LivecopyProcess(database: file + "/livecopy.db"), ["recover"], ["Not a directory"],
                                   case: "parent is a file")
        try await Self.expectFault(LivecopyProcess(database: file + "/sub/livecopy.db"), ["recover"],
                                   ["cannot create database directory"], case: "grandparent is a file")
        try await Self.expectFault(LivecopyProcess(database: "/proc/livecopy-test/livecopy.db"), ["recover"],
                                   ["cannot create database directory /proc/livecopy-test"], case: "under /proc")
        let directory = scratch.appending("a-directory.db")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        try await Self.expectFault(LivecopyProcess(database: directory), ["history"], ["cannot open the file"],
                                   case: "database path is a directory")
    }

    @Test(.requires(.tmpfs))
    func readOnlyFileSystem() async throws {
        let rig = try await Rig("lc-rofs")
        defer { rig.stop() }
        let mountPoint = rig.scratch.appending("ro")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: false)
        #expect(Self.mount("ro,size=1m", at: mountPoint))
        defer { Self.unmount(mountPoint) }
        try await Self.expectFault(LivecopyProcess(database: mountPoint + "/livecopy.db"), ["recover"],
                                   ["cannot create database", "Read-only file system"], case: "read-only fs, new database")
        try await Self.expectFault(LivecopyProcess(database: mountPoint + "/sub/livecopy.db"), ["recover"],
                                   ["cannot create database directory \(mountPoint)/sub: Read-only file system"],
                                   case: "read-only fs, new directory")

        // A database made while the file system was writable, then remounted read-only.
        Self.unmount(mountPoint)
        #expect(Self.mount("size=1m", at: mountPoint))
        let livecopy = LivecopyProcess(database: mountPoint + "/livecopy.db")
        try await Self.expectSuccess(livecopy, ["submit", "--detach", try rig.plan("p1")])
        #expect(Self.tool("/bin/mount", ["-o", "remount,ro", mountPoint]).status == 0)
        try await Self.expectFault(livecopy, ["history"], ["cannot open the file"], case: "remounted read-only, history")
        try await Self.expectFault(livecopy, ["submit", "--detach", try rig.plan("p2")], ["cannot open the file"],
                                   case: "remounted read-only, submit --detach")
    }

    @Test(.requires(.chattr))
    func immutableDatabaseFile() async throws {
        let rig = try await Rig("lc-immutable")
        defer { rig.stop() }
        let database = rig.livecopy.database
        try await Self.expectSuccess(rig.livecopy, ["submit", "--detach", try rig.plan("p1")])
        #expect(Self.tool("/usr/bin/chattr", ["+i", database]).status == 0)
        defer { Self.tool("/usr/bin/chattr", ["-i", database]) }
        try await Self.expectFault(rig.livecopy, ["history"], ["the database is read-only"], case: "immutable file, history")
        try await Self.expectFault(rig.livecopy, ["submit", "--detach", try rig.plan("p2")], ["the database is read-only"],
                                   case: "immutable file, submit --detach")
        Self.tool("/usr/bin/chattr", ["-i", database])
        #expect(try await Self.expectSuccess(rig.livecopy, ["history"]).contains("pending"), "the plan is intact")

        let directory = rig.scratch.appending("frozen")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        #expect(Self.tool("/usr/bin/chattr", ["+i", directory]).status == 0)
        defer { Self.tool("/usr/bin/chattr", ["-i", directory]) }
        try await Self.expectFault(LivecopyProcess(database: directory + "/livecopy.db"), ["recover"],
                                   ["cannot create database \(directory)/livecopy.db: Operation not permitted"],
                                   case: "immutable directory, new database")
    }

    @Test(.requires(.tmpfs))
    func fullDisk() async throws {
        let rig = try await Rig("lc-full")
        defer { rig.stop() }
        let mountPoint = rig.scratch.appending("full")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: false)
        #expect(Self.mount("size=256k", at: mountPoint))
        defer { Self.unmount(mountPoint) }
        let livecopy = LivecopyProcess(database: mountPoint + "/livecopy.db")
        try await Self.expectSuccess(livecopy, ["recover"])  // creates the database
        // Leave 48 KiB: enough to open (the 32 KiB -shm), too little for a plan of 400 disks.
        var stats = statvfs()
        #expect(statvfs(mountPoint, &stats) == 0)
        let free = Int(stats.f_bavail) * Int(stats.f_frsize)
        try Data(count: max(0, free - 48 * 1024)).write(to: URL(fileURLWithPath: mountPoint + "/filler"))
        let big = try rig.plan("big", disks: 400)
        try await Self.expectFault(livecopy, ["submit", "--detach", big], ["the disk is full", "disk I/O error"],
                                   case: "disk nearly full, submit --detach")
        // Reading still works, and nothing was half-written.
        #expect(try await Self.expectSuccess(livecopy, ["history"]).contains("no plans"), "nothing half-written")
        // No -shm file (nobody has the database open) and not a byte free: even opening fails.
        try? FileManager.default.removeItem(atPath: mountPoint + "/livecopy.db-shm")
        Self.fill(mountPoint + "/filler2")
        try await Self.expectFault(livecopy, ["history"], ["the disk is full", "disk I/O error"], case: "disk full, no -shm, history")
        try FileManager.default.removeItem(atPath: mountPoint + "/filler")
        try? FileManager.default.removeItem(atPath: mountPoint + "/filler2")
        try await Self.expectSuccess(livecopy, ["submit", "--detach", try rig.plan("p1")])
        #expect(try await Self.expectSuccess(livecopy, ["history"]).contains("pending"), "works again once there is room")
    }

    // MARK: - Locks

    /// Another process holds the write lock: commands wait the busy timeout (5 s), then
    /// fail in one line; once the lock is released everything works.
    @Test(arguments: ["BEGIN EXCLUSIVE", "locking_mode=EXCLUSIVE"])
    func aLongWriteLockGivesTheBusyTimeoutError(lock: String) async throws {
        let rig = try await Rig("lc-lock")
        defer { rig.stop() }
        let database = rig.livecopy.database
        try await Self.expectSuccess(rig.livecopy, ["submit", "--detach", try rig.plan("p1")])

        var configuration = Configuration()
        configuration.allowsUnsafeTransactions = true
        let holder = try DatabaseQueue(path: database, configuration: configuration)
        try await holder.writeWithoutTransaction { db in
            if lock == "locking_mode=EXCLUSIVE" { try db.execute(sql: "PRAGMA locking_mode = EXCLUSIVE") }
            try db.execute(sql: "BEGIN EXCLUSIVE")
            try db.execute(sql: "UPDATE plans SET name = 'held' WHERE id = 1")
        }
        // Both at once, so the suite waits one busy timeout, not two.
        let plan = try rig.plan("p2", firstDevice: 1)
        async let history = Self.expectFault(rig.livecopy, ["history"], ["the database is locked by another process (busy timeout expired)"],
                                             case: "\(lock) held, history")
        async let submit = Self.expectFault(rig.livecopy, ["submit", "--detach", plan],
                                            ["the database is locked by another process (busy timeout expired)"],
                                            case: "\(lock) held, submit --detach")
        for (_, seconds) in try await [history, submit] {
            #expect(seconds >= 4.5, "waited \(seconds) s; the busy timeout is 5 s")
        }

        try await holder.writeWithoutTransaction { db in try db.execute(sql: "ROLLBACK") }
        try holder.close()
        let after = try await Self.expectSuccess(rig.livecopy, ["history"])
        #expect(after.contains("pending") && !after.contains("held"))
        try await Self.expectSuccess(rig.livecopy, ["submit", "--detach", plan])
    }

    // MARK: - Damaged files

    /// A real database of 150 plans, checkpointed into its main file.
    static func populatedDatabase(at path: String) throws {
        let store = try SQLiteStore(path: path)
        for index in 0..<150 {
            _ = try store.insertPlan(NewPlan(
                name: "plan-\(index)", policyReference: nil, policy: try Policy.shippedDefault(), state: .pending,
                disks: (0..<2).map {
                    NewPlan.Disk(vmName: "vm\(index)", vmAddress: "/run/vm\(index).qmp", device: "drive\($0)",
                                 destination: "/srv/new/vm\(index)-\($0)-\(String(repeating: "x", count: 200)).qcow2")
                }), at: Date())
        }
        let queue = try DatabaseQueue(path: path)
        try queue.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        try queue.close()
        try? FileManager.default.removeItem(atPath: path + "-wal")
        try? FileManager.default.removeItem(atPath: path + "-shm")
    }

    @Test func corruptAndForeignFiles() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-corrupt")
        defer { scratch.remove() }
        let pristinePath = scratch.appending("pristine.db")
        try Self.populatedDatabase(at: pristinePath)
        let pristine = try Data(contentsOf: URL(fileURLWithPath: pristinePath))
        let pageSize = Int(pristine[16]) << 8 | Int(pristine[17])
        let pages = pristine.count / pageSize
        #expect(pages > 20, "\(pages) pages")
        var rng = SplitMix64(seed: 7)
        func random(_ count: Int) -> Data { Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }) }

        var variants: [(name: String, data: Data, fragments: [String])] = []
        var middle = pristine
        middle.replaceSubrange(pageSize..<(pristine.count - pageSize), with: random(pristine.count - 2 * pageSize))
        variants.append(("middle pages random", middle, ["the database file is corrupt", "not an SQLite database"]))
        var zeroed = pristine
        zeroed.replaceSubrange((pages / 3 * pageSize)..<(2 * pages / 3 * pageSize), with: Data(count: (2 * pages / 3 - pages / 3) * pageSize))
        variants.append(("middle third zeroed", zeroed, ["the database file is corrupt"]))
        var schema = pristine
        schema.replaceSubrange(100..<pageSize, with: random(pageSize - 100))
        variants.append(("schema page random", schema, ["the database file is corrupt", "not an SQLite database"]))
        variants.append(("truncated to half", pristine.prefix(pages / 2 * pageSize), ["the database file is corrupt"]))
        var header = pristine
        header.replaceSubrange(0..<16, with: Data("NOT SQLITE AT ALL".utf8.prefix(16)))
        variants.append(("magic overwritten", header, ["not an SQLite database"]))
        variants.append(("random bytes", random(64 * 1024), ["not an SQLite database"]))
        variants.append(("text", Data(String(repeating: "not sqlite\n", count: 500).utf8), ["not an SQLite database"]))
        variants.append(("SQLite magic then junk", Data("SQLite format 3\0".utf8) + random(8 * 1024),
                         ["not an SQLite database", "the database file is corrupt"]))

        for variant in variants {
            let path = scratch.appending("\(variant.name.replacingOccurrences(of: " ", with: "-")).db")
            try variant.data.write(to: URL(fileURLWithPath: path))
            let livecopy = LivecopyProcess(database: path)
            // Every plan, so every page of the plans table is read.
            try await Self.expectFault(livecopy, ["history", "--limit", "1000"], variant.fragments, case: "\(variant.name), history")
            try await Self.expectFault(livecopy, ["show", "75"], variant.fragments + ["no plan with id 75"],
                                       case: "\(variant.name), show")
        }

        // An empty file is an empty database: livecopy sets it up.
        let empty = scratch.appending("empty.db")
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        #expect(try await Self.expectSuccess(LivecopyProcess(database: empty), ["history"]).contains("no plans"))
    }

    /// Rows edited by hand: SQLite keeps a value of the wrong type (text in a REAL column,
    /// a blob in a TEXT one); GRDB's subscripts trapped on them (a crash, before the fix).
    @Test(arguments: [
        ("UPDATE plans SET created_at = 'yesterday' WHERE id = 150", ["history"], "plans row 150 has an unreadable created_at"),
        ("UPDATE plans SET name = x'00ff80' WHERE id = 150", ["history"], "plans row 150 has an unreadable name"),
        ("UPDATE plans SET policy_json = '{}' WHERE id = 150", ["history"], "plans row 150 has an unreadable policy_json"),
        ("PRAGMA ignore_check_constraints = ON; UPDATE plans SET state = 'bogus' WHERE id = 150", ["history", "--all"],
         "plan has unknown state 'bogus'"),
        ("UPDATE disks SET bytes_done = 'lots' WHERE plan_id = 150", ["show", "150"], "has an unreadable bytes_done"),
        ("UPDATE events SET at = x'01' WHERE plan_id = 150", ["show", "150"], "has an unreadable at"),
        ("UPDATE schema_migrations SET checksum = 12 WHERE version = 1", ["history"], "differs from the one applied (checksum 12,"),
        ("UPDATE schema_migrations SET checksum = x'00ff' WHERE version = 1", ["history"], "cannot open database"),
    ])
    func rowsOfTheWrongType(statement: String, arguments: [String], fragment: String) async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-rows")
        defer { scratch.remove() }
        let path = scratch.appending("livecopy.db")
        try Self.populatedDatabase(at: path)
        try Self.sql(path, statement)
        try await Self.expectFault(LivecopyProcess(database: path), arguments, [fragment], case: statement)
    }

    // MARK: - Schema

    @Test func aNewerOrEditedSchemaIsRefused() async throws {
        let rig = try await Rig("lc-schema")
        defer { rig.stop() }
        let database = rig.livecopy.database
        try await Self.expectSuccess(rig.livecopy, ["submit", "--detach", try rig.plan("p1")])
        let newest = Migration.embedded.last!.version
        try Self.sql(database, "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (9999, 'future', 'x', 0)")
        let expected = "database \(database) was written by a newer livecopy (schema version 9999, this one knows up to \(newest)); upgrade livecopy"
        try await Self.expectFault(rig.livecopy, ["history"], [expected], case: "schema 9999, history")
        try await Self.expectFault(rig.livecopy, ["submit", "--detach", try rig.plan("p2")], [expected],
                                   case: "schema 9999, submit --detach")
        try await Self.expectFault(rig.livecopy, ["status"], [expected], case: "schema 9999, status")

        try Self.sql(database, "DELETE FROM schema_migrations WHERE version = 9999; UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        try await Self.expectFault(rig.livecopy, ["history"], ["differs from the one applied (checksum edited"],
                                   case: "edited migration checksum")
        let plans = try await DatabaseQueue(path: database).read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM plans") }
        #expect(plans == 1, "nothing was recorded")
    }
}
