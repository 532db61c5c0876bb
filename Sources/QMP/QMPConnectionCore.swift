// The shared state of one QMP connection (the lock-protected `State`, pending commands,
// subscribers) and what happens to it when a message arrives or the connection ends.
// The greeting, command and event bookkeeping are extensions in QMPConnectionCore+*.swift.

import Foundation
import Logging
import NIOCore
import Synchronization

/// The shared state of one connection, used by both `QMPConnection` (callers' threads)
/// and `QMPChannelHandler` (the event loop). Everything mutable is behind one lock, and
/// continuations are resumed and streams finished only after the lock is released.
final class QMPConnectionCore: Sendable {
    /// What the handler should do after a message.
    enum ReceiveOutcome {
        case keepOpen
        case close
    }

    /// A command waiting for its reply.
    struct PendingCommand {
        let command: String
        let seconds: Double
        let continuation: CheckedContinuation<Result<JSONValue, QMPErrorReply>, Error>
        var timer: Scheduled<Void>?
    }

    /// Where the greeting stands during the handshake.
    enum GreetingState {
        /// Not arrived; the waiter, once `waitForGreeting` has been called.
        case waiting(CheckedContinuation<JSONValue, Error>?)
        /// Settled before anyone waited.
        case settled(Result<JSONValue, Error>)
        /// Handed to the waiter.
        case delivered
    }

    struct State {
        var greeting: GreetingState = .waiting(nil)
        var greeted = false
        /// Events that came before the greeting (skipped), by name: QEMU 7.2 can write an
        /// event it emits while accepting a client (`RESUME` as the VM starts) ahead of its
        /// greeting on that new connection.
        var eventsBeforeGreeting: [String] = []
        /// Why the connection is closed; nil while it is open.
        var closedReason: String?
        var nextCommandNumber: UInt64 = 1
        var pending: [String: PendingCommand] = [:]
        /// Ids whose callers gave up (timeout, cancellation): a late reply is dropped quietly.
        var abandoned: Set<String> = []
        var subscribers: [UInt64: AsyncStream<QMPEvent>.Continuation] = [:]
        var nextSubscriberKey: UInt64 = 0
        var eventBuffers: QMPEventBufferStats
    }

    let path: String
    /// The most unread events one subscription holds (`.bufferingNewest`).
    let eventBufferLimit: Int
    /// Not reentrant: never call back into the owner (resume continuations, finish
    /// streams, run user code) while holding it.
    let state: Mutex<State>

    init(path: String, eventBufferLimit: Int = QMPConnection.defaultEventBufferLimit) {
        self.path = path
        self.eventBufferLimit = eventBufferLimit
        self.state = Mutex(State(eventBuffers: QMPEventBufferStats(bound: eventBufferLimit)))
    }

    var isClosed: Bool {
        state.withLock { $0.closedReason != nil }
    }

    // MARK: Incoming

    /// Handles one decoded message from the event loop.
    func receive(_ message: QMPMessage) -> ReceiveOutcome {
        enum Action {
            case none
            case greet(JSONValue)
            case notGreeting
            case reply(PendingCommand, Result<JSONValue, QMPErrorReply>)
            case violation(String)
            case event([AsyncStream<QMPEvent>.Continuation], QMPEvent)
        }
        let action = state.withLock { state -> Action in
            guard state.closedReason == nil else { return .none }
            switch message {
            case .greeting(let greeting):
                if state.greeted {
                    return .violation("a second greeting")
                }
                state.greeted = true
                return .greet(greeting)
            case .reply(let id, let result):
                guard state.greeted else { return .notGreeting }
                if let command = state.pending.removeValue(forKey: id) {
                    return .reply(command, result)
                }
                if state.abandoned.remove(id) != nil {
                    return .none
                }
                return .violation("a reply with the unknown id \(id)")
            case .event(let event):
                guard state.greeted else {
                    // Skipped, up to a few: they predate the session. Many are not QEMU.
                    guard state.eventsBeforeGreeting.count < Self.eventsBeforeGreetingLimit else { return .notGreeting }
                    state.eventsBeforeGreeting.append(event.name)
                    return .none
                }
                return .event(Array(state.subscribers.values), event)
            }
        }
        switch action {
        case .none:
            return .keepOpen
        case .greet(let greeting):
            settleGreeting(.success(greeting))
            return .keepOpen
        case .notGreeting:
            shutDown(
                reason: "the first message was not a QMP greeting",
                commandError: .protocolViolation("the first message was not a QMP greeting"),
                greetingError: .notQMP(path: path, reason: "the first message is not a QMP greeting: \(describe(message))"))
            return .close
        case .reply(let command, let result):
            command.timer?.cancel()
            command.continuation.resume(returning: result)
            return .keepOpen
        case .violation(let what):
            protocolViolation(.protocolViolation(what))
            return .close
        case .event(let subscribers, let event):
            deliver(event, to: subscribers)
            return .keepOpen
        }
    }

    /// The peer broke the protocol: fail everything with `error`. The caller closes the channel.
    func protocolViolation(_ error: QMPClientError) {
        shutDown(
            reason: error.description,
            commandError: error,
            greetingError: .notQMP(path: path, reason: "the first message is not a QMP greeting: \(error)"))
    }

    /// The connection is gone (peer closed, read or write failed).
    func connectionLost(reason: String) {
        shutDown(
            reason: reason,
            commandError: .connectionLost(reason: reason),
            greetingError: .notQMP(path: path, reason: "\(reason) before the QMP greeting"))
    }

    /// Marks the connection closed, fails every command in flight with `commandError`, a
    /// greeting still awaited with `greetingError`, and finishes every event stream.
    /// Only the first call does anything; it returns whether this was it.
    @discardableResult
    func shutDown(reason: String, commandError: QMPClientError, greetingError: QMPClientError) -> Bool {
        let taken = state.withLock { state -> (commands: [PendingCommand], subscribers: [AsyncStream<QMPEvent>.Continuation])? in
            guard state.closedReason == nil else { return nil }
            state.closedReason = reason
            defer {
                state.pending = [:]
                state.subscribers = [:]
                state.abandoned = []
            }
            return (Array(state.pending.values), Array(state.subscribers.values))
        }
        guard let taken else { return false }
        logger.debug("QMP connection closed", metadata: ["socket": "\(path)", "reason": "\(reason)", "commandsFailed": "\(taken.commands.count)"])
        settleGreeting(.failure(greetingError))
        for command in taken.commands {
            command.timer?.cancel()
            command.continuation.resume(throwing: commandError)
        }
        for subscriber in taken.subscribers {
            subscriber.finish()
        }
        return true
    }

    /// How many events before the greeting are skipped before the peer counts as not QEMU.
    static let eventsBeforeGreetingLimit = 8

    private func describe(_ message: QMPMessage) -> String {
        switch message {
        case .greeting: return "a greeting"
        case .reply(let id, _): return "a reply to \(id)"
        case .event(let event): return "the event \(event.name)"
        }
    }
}
