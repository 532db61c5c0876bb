// The handshake's first step: waiting for QEMU's greeting (capabilities are then
// negotiated by `QMPConnection.connect`).

import Foundation
import NIOCore

extension QMPConnectionCore {
    /// Waits for the greeting, at most `timeout` seconds.
    func waitForGreeting(timeout: Double, on eventLoop: EventLoop) async throws -> JSONValue {
        let path = self.path
        let timer = eventLoop.scheduleTask(in: QMPConnection.timeAmount(seconds: timeout)) { [self] in
            let skipped = state.withLock { $0.eventsBeforeGreeting }
            let reason = skipped.isEmpty
                ? "no QMP greeting within \(formatSeconds(timeout)) s (is another client connected to this monitor?)"
                : "no QMP greeting within \(formatSeconds(timeout)) s, only \(skipped.map { "the event \($0)" }.joined(separator: ", "))"
            settleGreeting(.failure(QMPClientError.notQMP(path: path, reason: reason)))
        }
        defer { timer.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let settled: Result<JSONValue, Error>? = state.withLock { state in
                    switch state.greeting {
                    case .waiting:
                        state.greeting = .waiting(continuation)
                        return nil
                    case .settled(let result):
                        state.greeting = .delivered
                        return result
                    case .delivered:
                        return .failure(QMPClientError.protocolViolation("the greeting was awaited twice"))
                    }
                }
                if let settled {
                    continuation.resume(with: settled)
                }
            }
        } onCancel: {
            self.settleGreeting(.failure(CancellationError()))
        }
    }

    /// Records the outcome of the handshake's first step; only the first outcome counts.
    func settleGreeting(_ result: Result<JSONValue, Error>) {
        let waiter: CheckedContinuation<JSONValue, Error>? = state.withLock { state in
            switch state.greeting {
            case .waiting(let waiter?):
                state.greeting = .delivered
                return waiter
            case .waiting(nil):
                state.greeting = .settled(result)
                return nil
            case .settled, .delivered:
                return nil
            }
        }
        waiter?.resume(with: result)
    }
}
