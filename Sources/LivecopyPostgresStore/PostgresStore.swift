// The fleet store itself: opening (pool, migrations, old receipts), and the read and
// transaction helpers every query goes through, with reconnection and write receipts.
// The queries are extensions in PostgresStore+*.swift.

import Foundation
import Logging
import LivecopyModel
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// The fleet store on PostgreSQL (`FleetStore`): hand-written SQL over postgres-nio, its
/// own small connection pool, and the migrations of `Migrations/postgres`.
///
/// - Synchronous calls (reads, the CLI's writes) send each statement and wait for its
///   reply on the calling thread (`EventLoopFuture.wait`), never needing the concurrency pool.
/// - The engine's `async` writes run the same transaction on a thread of the store's own
///   `NIOThreadPool` and await its future: no thread of the concurrency pool waits for the server.
/// - A lost connection (closed, refused, reset; SQLSTATE class 08, 57P01-57P03) is retried
///   on a new one with backoff (0.1 s doubling to 2 s) for up to `reconnectFor` seconds,
///   logged once per outage. Other errors are not retried.
/// - Every write transaction first records a random write receipt: when the reply to its
///   COMMIT is lost, the retry looks the receipt up and reports success if it is there
///   instead of running the transaction again. A write is thus applied once, and a
///   compare-and-set never reports its own commit as a conflict.
public final class PostgresStore: FleetStore, Sendable {
    /// `PlanStore.location`: the URL, without a password.
    public let location: String
    /// How long a lost connection is retried before the call fails.
    public let reconnectFor: TimeInterval
    /// A plan's lease held from another host counts as gone only when its heartbeat is older than this.
    public let leaseTimeout: TimeInterval
    let pool: ConnectionPool
    let threads: NIOThreadPool
    let logger: Logger
    let counter = RoundTripCounter()
    /// True while connections are failing (so the outage is logged once).
    private let inOutage = Atomic<Bool>(false)
    /// Tests: the next this many COMMITs succeed but their reply is treated as lost.
    let commitRepliesToLose = Atomic<Int>(0)
    /// When this store last deleted old write receipts (`sweepReceiptsIfDue`).
    private let receiptsSweptAt = Mutex<Date>(.distantPast)

    /// Deletes the write receipts older than a day, at most once an hour per store, in the
    /// caller's transaction: the agents do it as they renew their hosts' leases, so no
    /// command pays for it when it opens the store.
    func sweepReceiptsIfDue(_ statements: Statements, now: Date) throws {
        let due = receiptsSweptAt.withLock { last -> Bool in
            guard now.timeIntervalSince(last) >= 3600 else { return false }
            last = now
            return true
        }
        if due { try statements.execute("DELETE FROM write_receipts WHERE at < \(now.timeIntervalSince1970 - 86_400)") }
    }

    /// Statements sent to the server so far (the benchmark's store round trips).
    public var roundTrips: Int { counter.value }

    /// Connects to `location` and brings its schema up to date (`PostgresMigrator`).
    public init(_ location: PostgresLocation, reconnectFor: TimeInterval = 300, leaseTimeout: TimeInterval = 15,
                logger: Logger = Logger(label: "livecopy.store.postgres"),
                migrations: [PostgresMigration] = PostgresMigration.embedded) throws {
        self.location = location.redacted
        self.reconnectFor = reconnectFor
        self.leaseTimeout = leaseTimeout
        self.logger = logger
        pool = try ConnectionPool(location: location, logger: logger)
        threads = NIOThreadPool(numberOfThreads: 8)
        threads.start()
        do {
            try PostgresMigrator(migrations: migrations, location: self.location).migrate(self)
        } catch {
            shutdown()
            throw error
        }
    }

    /// A store let go without `shutdown` (a command's, at its end) closes its connections
    /// itself: PostgresNIO requires every connection closed before it is freed.
    deinit {
        shutdown()
    }

    /// Closes the connections and stops the store's threads. The store is unusable afterwards.
    public func shutdown() {
        pool.shutdown()
        try? threads.syncShutdownGracefully()
    }

    // MARK: Running statements

    /// Runs `body` on a leased connection outside a transaction (reads), retried on a new
    /// connection when the connection is lost.
    func read<T>(_ body: (Statements) throws -> T) throws -> T {
        try retryingConnection { connection in
            try body(Statements(connection: connection, logger: logger, roundTrips: counter))
        }
    }

    /// Runs `body` in one transaction (BEGIN, the write receipt, `body`, COMMIT) on one
    /// leased connection. When the connection is lost the whole transaction runs again on
    /// a new one; when it was lost after COMMIT was sent, the receipt says whether it
    /// committed, and a committed one returns the result `body` gave. An error `body`
    /// throws rolls the transaction back and is rethrown. Without `receipt` (the migrations,
    /// which run before `write_receipts` exists and are idempotent on their own) a lost
    /// COMMIT runs the transaction again.
    @discardableResult
    func transaction<T>(receipt withReceipt: Bool = true, _ body: (Statements) throws -> T) throws -> T {
        let receipt = UUID()
        var committedResult: T?   // what `body` returned, once COMMIT was sent
        return try retryingConnection { connection in
            let statements = Statements(connection: connection, logger: logger, roundTrips: counter)
            if let result = committedResult, withReceipt {
                // The reply to the last COMMIT was lost: did it commit?
                if try statements.row("SELECT 1 FROM write_receipts WHERE id = \(receipt)") != nil {
                    logger.debug("a lost COMMIT had committed", metadata: ["receipt": "\(receipt)"])
                    return result
                }
                committedResult = nil
            }
            try statements.execute("BEGIN")
            let result: T
            do {
                if withReceipt {
                    try statements.execute("INSERT INTO write_receipts (id, at) VALUES (\(receipt), \(Date().timeIntervalSince1970))")
                }
                result = try body(statements)
            } catch {
                if !PostgresFailure.isConnectionLost(error) { _ = try? statements.execute("ROLLBACK") }
                throw error
            }
            committedResult = result
            try statements.execute("COMMIT")
            if commitRepliesToLose.load(ordering: .relaxed) > 0 {
                commitRepliesToLose.subtract(1, ordering: .relaxed)
                throw LostCommitReply()
            }
            return result
        }
    }

    /// `transaction` on a thread of the store's pool, awaited: the engine's writes.
    @discardableResult
    func writeAwaiting<T: Sendable>(_ body: @escaping @Sendable (Statements) throws -> T) async throws -> T {
        try await threads.runIfActive(eventLoop: pool.group.next()) { [self] in
            try transaction(body)
        }.get()
    }

    /// `read` on a thread of the store's pool, awaited.
    func readAwaiting<T: Sendable>(_ body: @escaping @Sendable (Statements) throws -> T) async throws -> T {
        try await threads.runIfActive(eventLoop: pool.group.next()) { [self] in
            try read(body)
        }.get()
    }

    /// Leases a connection and runs `work` on it; a lost connection is discarded and
    /// `work` retried on a new one with backoff until `reconnectFor` has passed. Errors
    /// become one-line `StoreError`s.
    private func retryingConnection<T>(_ work: (PostgresConnection) throws -> T) throws -> T {
        let deadline = Date().addingTimeInterval(reconnectFor)
        var delay = 0.1
        while true {
            var leased: PostgresConnection?
            do {
                let connection = try pool.lease()
                leased = connection
                let result = try work(connection)
                pool.giveBack(connection)
                if inOutage.exchange(false, ordering: .relaxed) {
                    logger.notice("PostgreSQL is reachable again", metadata: ["database": "\(location)"])
                }
                return result
            } catch {
                if PostgresFailure.isConnectionLost(error) {
                    if let leased { pool.discard(leased) }
                    guard Date() < deadline else {
                        throw StoreError("database \(location): connection lost for \(Int(reconnectFor)) s: \(PostgresFailure.reason(error))")
                    }
                    if !inOutage.exchange(true, ordering: .relaxed) {
                        logger.warning("connection to PostgreSQL lost; retrying",
                                       metadata: ["database": "\(location)", "reason": "\(PostgresFailure.reason(error))",
                                                  "for": "\(Int(reconnectFor)) s"])
                    }
                    Thread.sleep(forTimeInterval: min(delay, max(0, deadline.timeIntervalSinceNow)))
                    delay = min(delay * 2, 2)
                    continue
                }
                if let leased { pool.giveBack(leased) }
                if let error = error as? StoreError { throw error }
                throw StoreError("database \(location): \(PostgresFailure.reason(error))")
            }
        }
    }
}
