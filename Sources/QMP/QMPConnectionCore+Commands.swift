// Commands in flight: ids, registration, timeouts and completion.

import Foundation
import Logging
import NIOCore

extension QMPConnectionCore {
    /// The next command id.
    func makeCommandID() -> String {
        state.withLock { state in
            defer { state.nextCommandNumber += 1 }
            return "lc-\(state.nextCommandNumber)"
        }
    }

    /// Records a command as in flight; returns the error to fail it with instead when the
    /// connection is closed or the task already cancelled.
    func register(
        id: String, command: String, seconds: Double,
        continuation: CheckedContinuation<Result<JSONValue, QMPErrorReply>, Error>
    ) -> Error? {
        state.withLock { state in
            if let reason = state.closedReason {
                return QMPClientError.connectionLost(reason: reason)
            }
            // Checked under the lock: a cancellation handler that ran before this point
            // found nothing to cancel, but the flag is already set.
            if Task.isCancelled {
                return CancellationError()
            }
            state.pending[id] = PendingCommand(command: command, seconds: seconds, continuation: continuation)
            return nil
        }
    }

    /// Gives the command its timeout timer (or cancels the timer if the command is over).
    func attach(timer: Scheduled<Void>, to id: String) {
        let stillPending = state.withLock { state -> Bool in
            guard state.pending[id] != nil else { return false }
            state.pending[id]?.timer = timer
            return true
        }
        if !stillPending {
            timer.cancel()
        }
    }

    /// Fails command `id` with a timeout, if it is still waiting.
    func timeOut(id: String) {
        let command = state.withLock { state -> PendingCommand? in
            guard let command = state.pending.removeValue(forKey: id) else { return nil }
            state.abandoned.insert(id)
            return command
        }
        guard let command else { return }
        logger.debug("QMP command timed out", metadata: ["command": "\(command.command)", "id": "\(id)", "seconds": "\(command.seconds)"])
        command.continuation.resume(throwing: QMPClientError.timeout(command: command.command, seconds: command.seconds))
    }

    /// Ends command `id` with `result`, if it is still waiting. With `expectLateReply`,
    /// a reply that still arrives is dropped quietly rather than called a violation.
    func finish(id: String, with result: Result<Result<JSONValue, QMPErrorReply>, Error>, expectLateReply: Bool) {
        let command = state.withLock { state -> PendingCommand? in
            guard let command = state.pending.removeValue(forKey: id) else { return nil }
            if expectLateReply {
                state.abandoned.insert(id)
            }
            return command
        }
        guard let command else { return }
        command.timer?.cancel()
        command.continuation.resume(with: result)
    }
}
