// The SQLite store itself: opening the database (directory, file mode, WAL, synchronous=FULL,
// migrations), error wording, and the read/write/batch helpers every query goes through.
// The queries are extensions in SQLiteStore+*.swift.

import Foundation
import GRDB
import Logging
import LivecopyModel
import Synchronization

/// The SQLite store: WAL, `synchronous=FULL`, a busy timeout, and the schema from the
/// migrations embedded in the binary.
///
/// The engine's writes (`WorkflowStore`'s `async` methods) run on GRDB's writer queue and
/// are awaited, so the commit's `fsync` never holds a thread of the concurrency pool. The
/// same writes also exist synchronously, for `batch` and for tools (the benchmark's
/// synthesiser) that write many records from one thread.
public final class SQLiteStore: PlanStore, Sendable {
    private let queue: DatabaseQueue
    public let path: String
    /// `PlanStore.location`: the database file.
    public var location: String { path }
    /// Opened to read only (`readingOnly`): every write is refused.
    private let readOnly: Bool
    /// A copy in memory (`readingOnly` of an older schema, or of no database): it does not
    /// see later writes to the file, so a reader that refreshes must open it again.
    public let isCopy: Bool

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
                logger.debug("database opened", metadata: ["path": "\(path)", "schema": "\(migrations.last?.version ?? 0)"])
                queue = opened
                readOnly = false
                isCopy = false
                return
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && Date() < deadline {
                logger.notice("database busy while opening; retrying", metadata: ["path": "\(path)"])
                usleep(20_000)
            } catch let error as StoreError {
                throw error
            } catch {
                throw StoreError("cannot open database \(path): \(Self.reason(error))")
            }
        }
    }

    /// A store over a connection already opened and checked, to read only
    /// (`SQLiteStore+Reading`).
    init(readingOnly opened: DatabaseQueue, path: String, isCopy: Bool) {
        self.queue = opened
        self.path = path
        self.readOnly = true
        self.isCopy = isCopy
    }

    /// Throws when the store was opened to read only.
    private func refuseWriteIfReadOnly() throws {
        if readOnly { throw StoreError("database \(path) is open to read only; nothing may be written through it") }
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
    // @unchecked: GRDB's `Database` is not Sendable; it is handed back only to the thread running the batch.
    private struct OpenBatch: @unchecked Sendable {
        let database: Database
        let thread: pthread_t
    }
    private let openBatch = Mutex<OpenBatch?>(nil)

    /// The open batch's connection, if the calling thread is the one running `batch`.
    private func currentBatch() -> Database? {
        openBatch.withLock { batch in
            guard let batch, pthread_equal(batch.thread, pthread_self()) != 0 else {
                return nil
            }
            return batch.database
        }
    }

    /// Runs `body` with every store call it makes on this thread inside one transaction,
    /// committed at the end (rolled back if `body` throws). Each call still applies as a
    /// unit (a savepoint), so a `.conflict` `StoreError` leaves nothing half-written. For tools that
    /// write many records at once (the benchmark's synthesiser): one commit, one fsync.
    public func batch<T>(_ body: () throws -> T) throws -> T {
        try refuseWriteIfReadOnly()
        var result: T?
        do {
            try queue.inTransaction(.immediate) { db in
                openBatch.withLock { $0 = OpenBatch(database: db, thread: pthread_self()) }
                defer { openBatch.withLock { $0 = nil } }
                result = try body()
                return .commit
            }
        } catch let error as DatabaseError {
            throw StoreError("database \(path): \(Self.reason(error))")
        }
        return result!
    }

    /// Runs a write, turning database errors into `StoreError`s.
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        try refuseWriteIfReadOnly()
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
        } catch let error as StoreError {
            throw error
        } catch let error as DatabaseError {
            throw StoreError("database \(path): \(Self.reason(error))")
        }
    }

    /// A write in an IMMEDIATE transaction: the write lock is taken before the first read,
    /// so what `body` reads cannot change (in this or another process) before it writes.
    func writeImmediate<T>(_ body: (Database) throws -> T) throws -> T {
        try refuseWriteIfReadOnly()
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
    func writeAwaiting<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try refuseWriteIfReadOnly()
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

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            if let db = currentBatch() { return try body(db) }
            return try queue.read(body)
        } catch let error as DatabaseError {
            throw StoreError("database \(path): \(Self.reason(error))")
        }
    }
}
