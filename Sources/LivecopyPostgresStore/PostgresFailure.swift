// Which failures of PostgreSQL are the connection's (retried on a new one) and which are
// the statement's (reported at once), and the one line each becomes.

import Foundation
import LivecopyModel
import NIOCore
import PostgresNIO

/// What a failure means for the store: the connection was lost (or never made), so the
/// statement may be retried on a new one; or the server refused the statement.
enum PostgresFailure {
    /// SQLSTATEs of a connection ended by the server: class 08 (connection exception), and
    /// `admin_shutdown`, `crash_shutdown`, `cannot_connect_now` (a server starting or stopping).
    static let connectionStates: Set<String> = ["57P01", "57P02", "57P03"]

    /// Whether `error` lost the connection (closed, refused, reset, or the server going
    /// down): the work may be retried on a new connection.
    static func isConnectionLost(_ error: any Error) -> Bool {
        if error is LostCommitReply { return true }
        if let error = error as? PSQLError {
            if error.code == .server {
                guard let state = error.serverInfo?[.sqlState] else { return false }
                return state.hasPrefix("08") || connectionStates.contains(state)
            }
            let lost: [PSQLError.Code] = [.serverClosedConnection, .clientClosedConnection, .connectionError, .uncleanShutdown,
                                          .messageDecodingFailure, .unexpectedBackendMessage]
            return lost.contains(error.code)
        }
        return error is IOError || error is ChannelError || error is NIOConnectionError
    }

    /// The server's SQLSTATE, if the server refused the statement.
    static func sqlState(_ error: any Error) -> String? {
        (error as? PSQLError)?.serverInfo?[.sqlState]
    }

    /// One line for the operator.
    static func reason(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                let state = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                return oneLine(message + state)
            }
            if let underlying = error.underlying { return oneLine("\(error.code): \(underlying)") }
            return oneLine("\(error.code)")
        }
        if let error = error as? LostCommitReply { return error.description }
        return oneLine(String(describing: error))
    }

    static func oneLine(_ text: String) -> String {
        text.replacingOccurrences(of: "\n", with: " ")
    }
}

/// The reply to a COMMIT never came (the connection died after it was sent); whether the
/// transaction committed is found out from its write receipt. Also what the tests' fault
/// injection throws to simulate it.
struct LostCommitReply: Error, CustomStringConvertible {
    var description: String { "the connection was lost before the reply to COMMIT" }
}
