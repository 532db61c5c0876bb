import Foundation
import GRDB
import LivecopyModel

/// A one-line error about the database, for the operator.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The SQLite store: WAL, `synchronous=FULL`, a busy timeout, and the schema from the
/// migrations embedded in the binary.
///
/// The engine's writes (`WorkflowStore`'s `async` methods) run on GRDB's writer queue and
/// are awaited, so the commit's `fsync` never holds a thread of the concurrency pool. The
/// same writes also exist synchronously, for `batch` and for tools (the benchmark's
/// synthesiser) that write many records from one thread.
public final class SQLiteStore: WorkflowStore, @unchecked Sendable {
    private let queue: DatabaseQueue
    public let path: String

    /// Opens (creating if needed) the database at `path`. Its directory is created with
    /// owner-only permissions when missing, and so is the file.
    public init(path: String, busyTimeout: Double = 5, migrations: [Migration] = Migration.embedded) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty && !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw StoreError("cannot create database directory \(directory): \(Self.reason(error))")
            }
        }
        if !FileManager.default.fileExists(atPath: path) {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if fd < 0 && errno != EEXIST {
                throw StoreError("cannot create database \(path): \(String(cString: strerror(errno)))")
            }
            if fd >= 0 { close(fd) }
        }
        var config = Configuration()
        config.journalMode = .wal
        config.busyMode = .timeout(busyTimeout)
        config.foreignKeysEnabled = true
        // Opening is retried while another process holds the database busy: switching a new
        // database to WAL answers SQLITE_BUSY at once, without the busy timeout's wait.
        let deadline = Date().addingTimeInterval(busyTimeout)
        while true {
            do {
                let opened = try DatabaseQueue(path: path, configuration: config)
                // After the queue is open: GRDB's WAL set-up runs after `prepareDatabase` and
                // sets `synchronous = NORMAL`, which would let a power cut lose the last commits.
                try opened.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
                try Migrator(migrations: migrations).migrate(opened, path: path)
                queue = opened
                return
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && Date() < deadline {
                usleep(20_000)
            } catch let error as StoreError {
                throw error
            } catch {
                throw StoreError("cannot open database \(path): \(Self.reason(error))")
            }
        }
    }

    /// The connection's `PRAGMA synchronous` level (2 = FULL, what every commit uses).
    public func synchronousLevel() throws -> Int {
        try read { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }

    /// A short, one-line reason for a database or file error.
    static func reason(_ error: Error) -> String {
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_NOTADB: return "not an SQLite database"
            case .SQLITE_CORRUPT: return "the database file is corrupt"
            case .SQLITE_BUSY, .SQLITE_LOCKED: return "the database is locked by another process (busy timeout expired)"
            case .SQLITE_CANTOPEN: return "cannot open the file (missing directory, no permission, or a read-only file system)"
            case .SQLITE_READONLY: return "the database is read-only (no permission to write)"
            case .SQLITE_PERM, .SQLITE_AUTH: return "permission denied"
            case .SQLITE_FULL: return "the disk is full"
            default: return (error.message ?? "\(error.resultCode)").replacingOccurrences(of: "\n", with: " ")
            }
        }
        if let error = error as? CocoaError, let underlying = error.underlying {
            // On Linux the underlying error is a `POSIXError`, not an `NSError`.
            if let posix = underlying as? POSIXError { return String(cString: strerror(posix.code.rawValue)) }
            return (underlying as NSError).localizedDescription
        }
        return String(describing: error).replacingOccurrences(of: "\n", with: " ")
    }

    /// The connection of the batch under way (see `batch`) and the thread running it.
    private let batchLock = NSLock()
    private var batchDatabase: Database?
    private var batchThread: pthread_t?

    /// The open batch's connection, if the calling thread is the one running `batch`.
    private func currentBatch() -> Database? {
        batchLock.withLock {
            guard let database = batchDatabase, let thread = batchThread, pthread_equal(thread, pthread_self()) != 0 else {
                return nil
            }
            return database
        }
    }

    /// Runs `body` with every store call it makes on this thread inside one transaction,
    /// committed at the end (rolled back if `body` throws). Each call still applies as a
    /// unit (a savepoint), so a `StoreConflict` leaves nothing half-written. For tools that
    /// write many records at once (the benchmark's synthesiser): one commit, one fsync.
    public func batch<T>(_ body: () throws -> T) throws -> T {
        var result: T?
        do {
            try queue.inTransaction(.immediate) { db in
                batchLock.withLock {
                    batchDatabase = db
                    batchThread = pthread_self()
                }
                defer {
                    batchLock.withLock {
                        batchDatabase = nil
                        batchThread = nil
                    }
                }
                result = try body()
                return .commit
            }
        } catch let error as DatabaseError {
            throw StoreError("database \(path): \(Self.reason(error))")
        }
        return result!
    }

    /// Runs a write, turning database errors into `StoreError`s.
    private func write<T>(_ body: (Database) throws -> T) throws -> T {
        if let db = currentBatch() {
            do {
                var result: T?
                try db.inSavepoint {
                    result = try body(db)
                    return .commit
                }
                return result!
            } catch let error as DatabaseError {
                throw StoreError("database \(path): \(Self.reason(error))")
            }
        }
        do {
            return try queue.write(body)
        } catch let error as StoreConflict {
            throw error
        } catch let error as LeaseHeld {
            throw error
        } catch let error as DatabaseError {
            throw StoreError("database \(path): \(Self.reason(error))")
        }
    }

    /// A write in an IMMEDIATE transaction: the write lock is taken before the first read,
    /// so what `body` reads cannot change (in this or another process) before it writes.
    private func writeImmediate<T>(_ body: (Database) throws -> T) throws -> T {
        if currentBatch() != nil { return try write(body) }  // the batch's transaction is immediate
        do {
            return try queue.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        } catch let error as DatabaseError {
            throw StoreError("database \(path): \(Self.reason(error))")
        }
    }

    /// Runs a write on GRDB's writer queue (`asyncWrite`) and awaits its commit, turning
    /// database errors into `StoreError`s. The calling task is suspended meanwhile, and no
    /// thread waits for the `fsync`. Cancelling the task does not abandon the write: a
    /// ledger write that was asked for completes (or fails) as it would synchronously,
    /// since the engine records each step before it goes on, cancelled or not.
    private func writeAwaiting<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let path = self.path
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            queue.asyncWrite(body) { _, result in
                switch result {
                case .success(let value):
                    continuation.resume(returning: value)
                case .failure(let error as DatabaseError):
                    continuation.resume(throwing: StoreError("database \(path): \(Self.reason(error))"))
                case .failure(let error):
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    private func read<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            if let db = currentBatch() { return try body(db) }
            return try queue.read(body)
        } catch let error as DatabaseError {
            throw StoreError("database \(path): \(Self.reason(error))")
        }
    }

    // MARK: - WorkflowStore

    public func insertPlan(_ plan: NewPlan, at: Date) throws -> (PlanRecord, [DiskRecord]) {
        let policyJSON = String(decoding: try JSONEncoder().encode(plan.policy), as: UTF8.self)
        let planId: Int64 = try writeImmediate { db in
            // Checked in the transaction that records the plan: of two plans submitted at
            // once that claim the same destination or VM disk, exactly one is recorded.
            if !plan.state.isFinal { try Self.refuseClaimed(db, plan.disks) }
            try db.executeCached(
                sql: """
                    INSERT INTO plans (name, policy_reference, policy_json, state, created_at, finished_at, error)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [plan.name, plan.policyReference, policyJSON, plan.state.rawValue, at.timeIntervalSince1970,
                            plan.state.isFinal ? at.timeIntervalSince1970 : nil, plan.error])
            let planId = db.lastInsertedRowID
            for disk in plan.disks {
                try db.executeCached(
                    sql: """
                        INSERT INTO disks (plan_id, vm_name, qmp_socket, device, destination, source, source_format,
                                           qmp_device, state, updated_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)
                        """,
                    arguments: [planId, disk.vmName, disk.qmpSocket, disk.device, disk.destination, disk.source,
                                disk.sourceFormat, disk.qmpDevice, at.timeIntervalSince1970])
            }
            let detail = plan.error.map { "plan \(plan.state.rawValue): \($0)" }
                ?? "plan recorded with \(plan.disks.count) disk(s), policy \(plan.policyReference ?? "default")"
            try Self.insertEvent(db, planId: planId, diskId: nil,
                                 event: NewEvent(kind: .transition, from: nil, to: plan.state.rawValue, detail: detail), at: at)
            return planId
        }
        guard let record = try self.plan(id: planId) else { throw StoreError("plan \(planId) vanished after insert") }
        return (record, try disks(ofPlan: planId))
    }

    /// Disks that may still change, as migration 0004's partial index names them (word
    /// for word: SQLite uses a partial index only for a query repeating its WHERE term).
    static let diskNotFinal = "state NOT IN ('completed', 'rolled_back')"

    /// Throws `ClaimConflict` when a plan not yet final has a disk not yet final with one
    /// of `disks`' destinations, or on the same VM disk (QMP socket and device).
    private static func refuseClaimed(_ db: Database, _ disks: [NewPlan.Disk]) throws {
        let planStates = ClaimConflict.claimingPlanStates.map { "'\($0.rawValue)'" }.joined(separator: ", ")
        for disk in disks {
            for (sameDestination, match) in [(true, "destination = ?"), (false, "qmp_socket = ? AND device = ?")] {
                let row = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT p.id AS plan_id, p.state AS plan_state
                        FROM disks d JOIN plans p ON p.id = d.plan_id
                        WHERE d.\(match) AND d.\(diskNotFinal) AND p.state IN (\(planStates))
                        ORDER BY p.id LIMIT 1
                        """,
                    arguments: sameDestination ? [disk.destination] : [disk.qmpSocket, disk.device])
                guard let row else { continue }
                let stateText: String = try column(row, "plan_state", of: "plans")
                guard let state = PlanState(rawValue: stateText) else { throw StoreError("plan has unknown state '\(stateText)'") }
                throw ClaimConflict(vmName: disk.vmName, device: disk.device,
                                    claim: sameDestination ? .destination(disk.destination) : .vmDisk,
                                    otherPlanId: try column(row, "plan_id", of: "plans"), otherPlanState: state)
            }
        }
    }

    public func plan(id: Int64) throws -> PlanRecord? {
        try read { db in
            try Row.fetchOneCached(db, sql: "SELECT * FROM plans WHERE id = ?", arguments: [id]).map(Self.planRecord)
        }
    }

    public func disks(ofPlan planId: Int64) throws -> [DiskRecord] {
        try read { db in
            try Row.fetchAllCached(db, sql: "SELECT * FROM disks WHERE plan_id = ? ORDER BY id", arguments: [planId])
                .map(Self.diskRecord)
        }
    }

    public func disk(id: Int64) throws -> DiskRecord? {
        try read { db in
            try Row.fetchOneCached(db, sql: "SELECT * FROM disks WHERE id = ?", arguments: [id]).map(Self.diskRecord)
        }
    }

    public func events(ofPlan planId: Int64) throws -> [EventRecord] {
        try read { db in
            try Row.fetchAllCached(db, sql: "SELECT * FROM events WHERE plan_id = ? ORDER BY id", arguments: [planId])
                .map(Self.eventRecord)
        }
    }

    public func plans(states: Set<PlanState>?, vm: String?, limit: Int?) throws -> [PlanRecord] {
        var clauses: [String] = []
        var arguments: StatementArguments = []
        if let states {
            clauses.append("state IN (\(states.map { _ in "?" }.joined(separator: ", ")))")
            for state in states.sorted(by: { $0.rawValue < $1.rawValue }) { _ = arguments.append(contentsOf: [state.rawValue]) }
        }
        if let vm {
            clauses.append("id IN (SELECT plan_id FROM disks WHERE vm_name = ?)")
            _ = arguments.append(contentsOf: [vm])
        }
        var sql = "SELECT * FROM plans"
        if !clauses.isEmpty { sql += " WHERE " + clauses.joined(separator: " AND ") }
        sql += " ORDER BY id DESC"
        if let limit {
            sql += " LIMIT ?"
            _ = arguments.append(contentsOf: [limit])
        }
        return try read { db in try Row.fetchAllCached(db, sql: sql, arguments: arguments).map(Self.planRecord) }
    }

    public func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) async throws {
        try await writeAwaiting { db in try Self.save(db, disk: disk, expecting: expecting, event: event, at: at) }
    }

    /// `save(disk:expecting:event:at:)` on the calling thread (for `batch` and tools).
    public func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) throws {
        try write { db in try Self.save(db, disk: disk, expecting: expecting, event: event, at: at) }
    }

    private static func save(_ db: Database, disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) throws {
        try db.executeCached(
            sql: """
                UPDATE disks SET source = ?, source_format = ?, qmp_device = ?, state = ?, bytes_done = ?,
                    bytes_total = ?, error = ?, intent = ?, destination_created = ?, updated_at = ?
                WHERE id = ? AND state = ?
                """,
            arguments: [disk.source, disk.sourceFormat, disk.qmpDevice, disk.state.rawValue, disk.bytesDone,
                        disk.bytesTotal, disk.error, disk.intent?.rawValue, disk.destinationCreated,
                        at.timeIntervalSince1970, disk.id, expecting.rawValue])
        guard db.changesCount == 1 else {
            throw StoreConflict("disk \(disk.id) is no longer \(expecting.rawValue)")
        }
        if let event {
            try insertEvent(db, planId: disk.planId, diskId: disk.id, event: event, at: at)
        }
    }

    public func save(plan: PlanRecord, expecting: PlanState, event: NewEvent?, at: Date) async throws {
        try await writeAwaiting { db in try Self.save(db, plan: plan, expecting: expecting, event: event, at: at) }
    }

    /// `save(plan:expecting:event:at:)` on the calling thread (for `batch` and tools).
    public func save(plan: PlanRecord, expecting: PlanState, event: NewEvent?, at: Date) throws {
        try write { db in try Self.save(db, plan: plan, expecting: expecting, event: event, at: at) }
    }

    private static func save(_ db: Database, plan: PlanRecord, expecting: PlanState, event: NewEvent?, at: Date) throws {
        try db.executeCached(
            sql: "UPDATE plans SET state = ?, finished_at = ?, error = ? WHERE id = ? AND state = ?",
            arguments: [plan.state.rawValue, plan.finishedAt?.timeIntervalSince1970, plan.error, plan.id,
                        expecting.rawValue])
        guard db.changesCount == 1 else {
            throw StoreConflict("plan \(plan.id) is no longer \(expecting.rawValue)")
        }
        if let event {
            try insertEvent(db, planId: plan.id, diskId: nil, event: event, at: at)
        }
    }

    public func saveProgress(diskId: Int64, bytesDone: Int64, bytesTotal: Int64, at: Date) async throws {
        try await writeAwaiting { db in try Self.saveProgress(db, diskId: diskId, bytesDone: bytesDone, bytesTotal: bytesTotal, at: at) }
    }

    /// `saveProgress(diskId:bytesDone:bytesTotal:at:)` on the calling thread (for `batch` and tools).
    public func saveProgress(diskId: Int64, bytesDone: Int64, bytesTotal: Int64, at: Date) throws {
        try write { db in try Self.saveProgress(db, diskId: diskId, bytesDone: bytesDone, bytesTotal: bytesTotal, at: at) }
    }

    private static func saveProgress(_ db: Database, diskId: Int64, bytesDone: Int64, bytesTotal: Int64, at: Date) throws {
        try db.executeCached(
            sql: "UPDATE disks SET bytes_done = ?, bytes_total = ?, updated_at = ? WHERE id = ?",
            arguments: [bytesDone, bytesTotal, at.timeIntervalSince1970, diskId])
    }

    public func appendEvent(planId: Int64, diskId: Int64?, event: NewEvent, at: Date) async throws {
        try await writeAwaiting { db in try Self.insertEvent(db, planId: planId, diskId: diskId, event: event, at: at) }
    }

    /// `appendEvent(planId:diskId:event:at:)` on the calling thread (for `batch` and tools).
    public func appendEvent(planId: Int64, diskId: Int64?, event: NewEvent, at: Date) throws {
        try write { db in try Self.insertEvent(db, planId: planId, diskId: diskId, event: event, at: at) }
    }

    // MARK: - Ownership and cancellation

    public func owner(ofPlan planId: Int64) throws -> PlanOwner? {
        try read { db in
            try Row.fetchOneCached(db, sql: "SELECT owner_pid, owner_host, owner_heartbeat FROM plans WHERE id = ?", arguments: [planId])
                .flatMap(Self.owner)
        }
    }

    public func acquireLease(planId: Int64, owner: PlanOwner, isGone: @escaping @Sendable (PlanOwner) -> Bool) async throws -> PlanOwner? {
        try await writeAwaiting { db in try Self.acquireLease(db, planId: planId, owner: owner, isGone: isGone) }
    }

    /// `acquireLease(planId:owner:isGone:)` on the calling thread (for `batch` and tools).
    @discardableResult
    public func acquireLease(planId: Int64, owner: PlanOwner, isGone: (PlanOwner) -> Bool) throws -> PlanOwner? {
        try write { db in try Self.acquireLease(db, planId: planId, owner: owner, isGone: isGone) }
    }

    private static func acquireLease(_ db: Database, planId: Int64, owner: PlanOwner, isGone: (PlanOwner) -> Bool) throws -> PlanOwner? {
        guard let row = try Row.fetchOne(
            db, sql: "SELECT owner_pid, owner_host, owner_heartbeat FROM plans WHERE id = ?", arguments: [planId])
        else { throw StoreError("no plan with id \(planId)") }
        let current = try Self.owner(row)
        if let current, current.pid != owner.pid || current.host != owner.host, !isGone(current) {
            throw LeaseHeld(planId: planId, owner: current)
        }
        try db.executeCached(
            sql: "UPDATE plans SET owner_pid = ?, owner_host = ?, owner_heartbeat = ? WHERE id = ?",
            arguments: [owner.pid, owner.host, owner.heartbeat.timeIntervalSince1970, planId])
        let detail = current.map { "lease taken over from \($0) by \(owner)" } ?? "lease taken by \(owner)"
        try insertEvent(db, planId: planId, diskId: nil, event: NewEvent(kind: .note, detail: detail), at: owner.heartbeat)
        return current
    }

    public func renewLease(planId: Int64, owner: PlanOwner, at: Date) async throws -> Bool {
        try await writeAwaiting { db in try Self.renewLease(db, planId: planId, owner: owner, at: at) }
    }

    /// `renewLease(planId:owner:at:)` on the calling thread (for `batch` and tools).
    public func renewLease(planId: Int64, owner: PlanOwner, at: Date) throws -> Bool {
        try write { db in try Self.renewLease(db, planId: planId, owner: owner, at: at) }
    }

    private static func renewLease(_ db: Database, planId: Int64, owner: PlanOwner, at: Date) throws -> Bool {
        try db.executeCached(
            sql: "UPDATE plans SET owner_heartbeat = ? WHERE id = ? AND owner_pid = ? AND owner_host = ?",
            arguments: [at.timeIntervalSince1970, planId, owner.pid, owner.host])
        return db.changesCount == 1
    }

    public func releaseLease(planId: Int64, owner: PlanOwner) async throws {
        try await writeAwaiting { db in try Self.releaseLease(db, planId: planId, owner: owner) }
    }

    /// `releaseLease(planId:owner:)` on the calling thread (for `batch` and tools).
    public func releaseLease(planId: Int64, owner: PlanOwner) throws {
        try write { db in try Self.releaseLease(db, planId: planId, owner: owner) }
    }

    private static func releaseLease(_ db: Database, planId: Int64, owner: PlanOwner) throws {
        try db.executeCached(
            sql: "UPDATE plans SET owner_pid = NULL, owner_host = NULL, owner_heartbeat = NULL WHERE id = ? AND owner_pid = ? AND owner_host = ?",
            arguments: [planId, owner.pid, owner.host])
    }

    public func requestCancel(planId: Int64, at: Date) throws {
        try write { db in
            try db.executeCached(sql: "UPDATE plans SET cancel_requested = 1 WHERE id = ?", arguments: [planId])
            try Self.insertEvent(db, planId: planId, diskId: nil,
                                 event: NewEvent(kind: .note, detail: "cancel requested by pid \(getpid())"), at: at)
        }
    }

    public func isCancelRequested(planId: Int64) throws -> Bool {
        try read { db in
            try Bool.fetchOne(db, sql: "SELECT cancel_requested FROM plans WHERE id = ?", arguments: [planId]) ?? false
        }
    }

    // MARK: - Operator controls

    public func controls(ofPlan planId: Int64) throws -> PlanControls {
        try read { db in
            guard let row = try Row.fetchOneCached(db, sql: "SELECT id, speed_override, paused FROM plans WHERE id = ?", arguments: [planId])
            else { return PlanControls() }
            return PlanControls(speedOverride: try Self.column(row, "speed_override", of: "plans"),
                                paused: try Self.column(row, "paused", of: "plans"))
        }
    }

    public func requestControl(planId: Int64, _ action: OperatorAction, by requester: String, at: Date) throws -> OperatorRequest {
        let id: Int64 = try write { db in
            switch action {
            case .throttle(let speed):
                try db.executeCached(sql: "UPDATE plans SET speed_override = ? WHERE id = ?", arguments: [speed, planId])
            case .pause:
                try db.executeCached(sql: "UPDATE plans SET paused = 1 WHERE id = ?", arguments: [planId])
            case .resume:
                try db.executeCached(sql: "UPDATE plans SET paused = 0 WHERE id = ?", arguments: [planId])
            }
            guard db.changesCount == 1 else { throw StoreError("no plan with id \(planId)") }
            var speed: Int64?
            if case .throttle(let value) = action { speed = value }
            try db.executeCached(
                sql: "INSERT INTO operator_requests (plan_id, action, speed, requested_at, requested_by) VALUES (?, ?, ?, ?, ?)",
                arguments: [planId, action.name, speed, at.timeIntervalSince1970, requester])
            let id = db.lastInsertedRowID
            try Self.insertEvent(db, planId: planId, diskId: nil,
                                 event: NewEvent(kind: .note, detail: "\(action) requested by \(requester) (request \(id))"), at: at)
            return id
        }
        guard let request = try controlRequest(id: id) else { throw StoreError("operator request \(id) vanished after insert") }
        return request
    }

    public func openControlRequests(planId: Int64) throws -> [OperatorRequest] {
        try read { db in
            try Row.fetchAllCached(db, sql: "SELECT * FROM operator_requests WHERE plan_id = ? AND finished_at IS NULL ORDER BY id",
                             arguments: [planId]).map(Self.operatorRequest)
        }
    }

    public func controlRequest(id: Int64) throws -> OperatorRequest? {
        try read { db in
            try Row.fetchOneCached(db, sql: "SELECT * FROM operator_requests WHERE id = ?", arguments: [id]).map(Self.operatorRequest)
        }
    }

    public func finishControlRequest(id: Int64, planId: Int64, ok: Bool, outcome: String, at: Date) async throws {
        try await writeAwaiting { db in try Self.finishControlRequest(db, id: id, planId: planId, ok: ok, outcome: outcome, at: at) }
    }

    /// `finishControlRequest(id:planId:ok:outcome:at:)` on the calling thread (for `batch` and tools).
    public func finishControlRequest(id: Int64, planId: Int64, ok: Bool, outcome: String, at: Date) throws {
        try write { db in try Self.finishControlRequest(db, id: id, planId: planId, ok: ok, outcome: outcome, at: at) }
    }

    private static func finishControlRequest(_ db: Database, id: Int64, planId: Int64, ok: Bool, outcome: String, at: Date) throws {
        try db.executeCached(
            sql: "UPDATE operator_requests SET finished_at = ?, ok = ?, outcome = ? WHERE id = ? AND finished_at IS NULL",
            arguments: [at.timeIntervalSince1970, ok, outcome, id])
        guard db.changesCount == 1 else { return }
        try insertEvent(db, planId: planId, diskId: nil,
                        event: NewEvent(kind: .outcome, detail: "request \(id): \(outcome)"), at: at)
    }

    private static func operatorRequest(_ row: Row) throws -> OperatorRequest {
        func value<Value: DatabaseValueConvertible>(_ name: String) throws -> Value { try column(row, name, of: "operator_requests") }
        let name: String = try value("action")
        let action: OperatorAction
        switch name {
        case "throttle": action = .throttle(speed: try value("speed") as Int64? ?? 0)
        case "pause": action = .pause
        case "resume": action = .resume
        default: throw StoreError("operator request has unknown action '\(name)'")
        }
        return OperatorRequest(
            id: try value("id"), planId: try value("plan_id"), action: action,
            requestedAt: try date(row, "requested_at", of: "operator_requests") ?? Date(),
            requestedBy: try value("requested_by"), finishedAt: try date(row, "finished_at", of: "operator_requests"),
            ok: try value("ok"), outcome: try value("outcome"))
    }

    // MARK: - Rows

    private static func owner(_ row: Row) throws -> PlanOwner? {
        guard let pid = try column(row, "owner_pid", of: "plans") as Int32?,
              let host = try column(row, "owner_host", of: "plans") as String?,
              let heartbeat = try column(row, "owner_heartbeat", of: "plans") as Double? else { return nil }
        return PlanOwner(pid: pid, host: host, heartbeat: Date(timeIntervalSince1970: heartbeat))
    }

    private static func insertEvent(_ db: Database, planId: Int64, diskId: Int64?, event: NewEvent, at: Date) throws {
        try db.executeCached(
            sql: "INSERT INTO events (plan_id, disk_id, at, kind, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            arguments: [planId, diskId, at.timeIntervalSince1970, event.kind.rawValue, event.from, event.to, event.detail])
    }

    /// A column's value. GRDB's subscripts trap on a value of the wrong type (text in a REAL
    /// column, a blob that is not UTF-8): a database edited by hand or damaged must give an
    /// error, not a crash.
    private static func column<Value: DatabaseValueConvertible>(_ row: Row, _ name: String, of table: String) throws -> Value {
        do {
            return try row.decode(Value.self, forColumn: name)
        } catch {
            let id = row["id"] as DatabaseValue
            let value = row[name] as DatabaseValue
            throw StoreError("\(table) row \(id) has an unreadable \(name) (\(value)); the database was edited or is damaged")
        }
    }

    private static func date(_ row: Row, _ name: String, of table: String) throws -> Date? {
        (try column(row, name, of: table) as Double?).map(Date.init(timeIntervalSince1970:))
    }

    private static func planRecord(_ row: Row) throws -> PlanRecord {
        func value<Value: DatabaseValueConvertible>(_ name: String) throws -> Value { try column(row, name, of: "plans") }
        let stateText: String = try value("state")
        guard let state = PlanState(rawValue: stateText) else { throw StoreError("plan has unknown state '\(stateText)'") }
        let policyJSON: String = try value("policy_json")
        let policy: Policy
        do {
            policy = try JSONDecoder().decode(Policy.self, from: Data(policyJSON.utf8))
        } catch {
            throw StoreError("plans row \(row["id"] as DatabaseValue) has an unreadable policy_json; the database was edited or is damaged")
        }
        return PlanRecord(
            id: try value("id"), name: try value("name"), policyReference: try value("policy_reference"), policy: policy,
            state: state, createdAt: try date(row, "created_at", of: "plans") ?? Date(timeIntervalSince1970: 0),
            finishedAt: try date(row, "finished_at", of: "plans"), error: try value("error"))
    }

    private static func diskRecord(_ row: Row) throws -> DiskRecord {
        func value<Value: DatabaseValueConvertible>(_ name: String) throws -> Value { try column(row, name, of: "disks") }
        let stateText: String = try value("state")
        guard let state = DiskState(rawValue: stateText) else { throw StoreError("disk has unknown state '\(stateText)'") }
        let intentText: String? = try value("intent")
        let intent = try intentText.map { text in
            guard let intent = DiskIntent(rawValue: text) else { throw StoreError("disk has unknown intent '\(text)'") }
            return intent
        }
        return DiskRecord(
            id: try value("id"), planId: try value("plan_id"), vmName: try value("vm_name"), qmpSocket: try value("qmp_socket"),
            device: try value("device"), destination: try value("destination"), source: try value("source"),
            sourceFormat: try value("source_format"), qmpDevice: try value("qmp_device"), state: state,
            bytesDone: try value("bytes_done"), bytesTotal: try value("bytes_total"), error: try value("error"),
            intent: intent, destinationCreated: try value("destination_created"),
            updatedAt: try date(row, "updated_at", of: "disks") ?? Date())
    }

    private static func eventRecord(_ row: Row) throws -> EventRecord {
        func value<Value: DatabaseValueConvertible>(_ name: String) throws -> Value { try column(row, name, of: "events") }
        let kindText: String = try value("kind")
        guard let kind = EventKind(rawValue: kindText) else { throw StoreError("event has unknown kind '\(kindText)'") }
        return EventRecord(
            id: try value("id"), planId: try value("plan_id"), diskId: try value("disk_id"),
            at: try date(row, "at", of: "events") ?? Date(), kind: kind,
            from: try value("from_state"), to: try value("to_state"), detail: try value("detail"))
    }
}

/// Statements the store runs again and again are prepared once per connection.
extension Database {
    fileprivate func executeCached(sql: String, arguments: StatementArguments = []) throws {
        try cachedStatement(sql: sql).execute(arguments: arguments)
    }
}

extension Row {
    fileprivate static func fetchAllCached(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [Row] {
        try fetchAll(db.cachedStatement(sql: sql), arguments: arguments)
    }

    fileprivate static func fetchOneCached(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> Row? {
        try fetchOne(db.cachedStatement(sql: sql), arguments: arguments)
    }
}
