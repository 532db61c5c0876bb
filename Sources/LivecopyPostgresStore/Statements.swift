// One leased connection as the store's queries see it: each statement sent and its reply
// waited for on the calling thread, counted as a round trip.

import Foundation
import Logging
import LivecopyModel
import PostgresNIO
import Synchronization

/// The statements of one unit of work (a transaction, or a read) on the connection it holds.
/// Each call sends one statement and blocks the calling thread (never an event loop, never
/// a thread of the concurrency pool: see `PostgresStore.writeAwaiting`) until its reply.
struct Statements {
    let connection: PostgresConnection
    let logger: Logger
    let roundTrips: RoundTripCounter

    /// Runs `query`, returning its rows.
    @discardableResult
    func query(_ query: PostgresQuery) throws -> [PostgresRow] {
        roundTrips.add()
        return try connection.query(query, logger: logger).wait().rows
    }

    /// Runs `query`, returning how many rows it changed.
    @discardableResult
    func execute(_ query: PostgresQuery) throws -> Int {
        roundTrips.add()
        return try connection.query(query, logger: logger).wait().metadata.rows ?? 0
    }

    /// The first row of `query`, if any.
    func row(_ query: PostgresQuery) throws -> PostgresRow? {
        try self.query(query).first
    }
}

/// Statements sent to the server (`PostgresStore.roundTrips`).
final class RoundTripCounter: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
