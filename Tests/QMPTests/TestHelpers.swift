import Foundation
import QMP

/// Raised by `withTimeout` when the body takes too long.
struct TestTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out: \(what)" }
}

/// Runs `body`, failing with `TestTimeout` after `seconds` (the body is then cancelled).
func withTimeout<T: Sendable>(
    _ seconds: Double, _ what: String = "operation",
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            throw TestTimeout(what: what)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// The first `count` events of `stream` (fewer if it finishes), waiting at most `seconds`.
func collect(_ count: Int, from stream: AsyncStream<QMPEvent>, within seconds: Double = 5) async throws -> [QMPEvent] {
    try await withTimeout(seconds, "\(count) events") {
        var events: [QMPEvent] = []
        for await event in stream {
            events.append(event)
            if events.count == count { break }
        }
        return events
    }
}

/// Waits for `stream` to finish, returning the events it still delivered.
func drainUntilFinished(_ stream: AsyncStream<QMPEvent>, within seconds: Double = 5) async throws -> [QMPEvent] {
    try await withTimeout(seconds, "event stream to finish") {
        var events: [QMPEvent] = []
        for await event in stream {
            events.append(event)
        }
        return events
    }
}

/// Seconds since `start`.
func elapsed(since start: Date) -> Double {
    Date().timeIntervalSince(start)
}
