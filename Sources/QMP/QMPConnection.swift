import Foundation
import NIOCore
import NIOPosix

/// A QMP client for one QEMU monitor socket (a UNIX domain socket), built on SwiftNIO.
///
/// `connect` checks the path, connects, reads QEMU's greeting and negotiates capabilities
/// (`qmp_capabilities`); the connection is then ready for commands. Commands carry the
/// ids `lc-1`, `lc-2`, … and replies are matched by id, so any number of commands may be
/// in flight from any number of tasks. Events interleave with replies on the wire and are
/// delivered to every `events()` stream; each stream buffers at most `eventBufferLimit`
/// unread events and then drops the oldest (see `QMPEventBufferStats`).
///
/// Failure rules:
/// - each command has a timeout (its own or `commandTimeout`), failing it with
///   `QMPClientError.timeout`; a reply that arrives later is dropped quietly;
/// - an error reply fails the command with `QMPCommandError`;
/// - when the peer closes or a read fails, every command in flight fails with
///   `connectionLost`, later commands fail the same way at once, and event streams finish;
/// - when the peer breaks the protocol (garbage, an overlong line, a reply with an id
///   never sent, …), commands in flight fail with `protocolViolation` and the connection
///   is closed, since it can no longer be trusted;
/// - cancelling the task that awaits `execute` fails that call with `CancellationError`
///   (QEMU still runs the command; its reply is dropped).
///
/// A QEMU monitor serves one client at a time: a second client is connected by the
/// kernel but greeted only when the first leaves, which `connect` reports as `notQMP`
/// once `connectTimeout` passes.
///
/// The class is thread-safe: all mutable state sits behind one lock.
public final class QMPConnection: QMPSession, @unchecked Sendable {
    /// The monitor socket's path.
    public let socketPath: String
    /// The `QMP` member of QEMU's greeting (`version`, `capabilities`).
    public let greeting: JSONValue
    /// The timeout of commands that do not name their own, in seconds.
    public let defaultCommandTimeout: Double
    /// The most unread events an `events()` subscription holds before it drops the oldest.
    public static let defaultEventBufferLimit = 1024

    private let channel: Channel
    private let core: QMPConnectionCore

    private init(socketPath: String, greeting: JSONValue, defaultCommandTimeout: Double, channel: Channel, core: QMPConnectionCore) {
        self.socketPath = socketPath
        self.greeting = greeting
        self.defaultCommandTimeout = defaultCommandTimeout
        self.channel = channel
        self.core = core
    }

    deinit {
        if core.shutDown(
            reason: "the QMPConnection was released",
            commandError: .connectionLost(reason: "the QMPConnection was released"),
            greetingError: .connectionLost(reason: "the QMPConnection was released"))
        {
            channel.close(promise: nil)
        }
    }

    /// Connects to the QMP monitor at `socketPath` and completes the handshake.
    ///
    /// - Parameters:
    ///   - connectTimeout: seconds allowed for connecting, for the greeting, and for the
    ///     reply to `qmp_capabilities`.
    ///   - commandTimeout: the default timeout of `execute`, in seconds.
    ///   - eventBufferLimit: the most unread events one `events()` subscription holds; past
    ///     it the oldest is dropped (at least 1).
    /// - Throws: `QMPClientError.connectFailed` when the path is missing, is not a socket,
    ///   or refuses the connection; `QMPClientError.notQMP` when no greeting arrives in
    ///   time, the first message is not a greeting, or capabilities negotiation fails.
    public static func connect(
        socketPath: String,
        connectTimeout: Double = 5,
        commandTimeout: Double = 30,
        eventBufferLimit: Int = defaultEventBufferLimit,
        eventLoopGroup: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> QMPConnection {
        try checkSocket(at: socketPath)
        let core = QMPConnectionCore(path: socketPath, eventBufferLimit: max(1, eventBufferLimit))
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: eventLoopGroup)
                .connectTimeout(timeAmount(seconds: connectTimeout))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(QMPChannelHandler(core: core))
                    }
                }
                .connect(unixDomainSocketPath: socketPath)
                .get()
        } catch {
            throw QMPClientError.connectFailed(path: socketPath, reason: describeConnectError(error))
        }

        let greeting: JSONValue
        do {
            greeting = try await core.waitForGreeting(timeout: connectTimeout, on: channel.eventLoop)
        } catch {
            channel.close(promise: nil)
            throw error
        }
        let connection = QMPConnection(
            socketPath: socketPath, greeting: greeting, defaultCommandTimeout: commandTimeout,
            channel: channel, core: core)
        do {
            _ = try await connection.execute("qmp_capabilities", arguments: nil, timeout: connectTimeout)
        } catch let error as QMPCommandError {
            await connection.close()
            throw QMPClientError.notQMP(
                path: socketPath, reason: "qmp_capabilities failed: \(error.errorClass): \(error.desc)")
        } catch QMPClientError.timeout {
            await connection.close()
            throw QMPClientError.notQMP(
                path: socketPath, reason: "no reply to qmp_capabilities within \(formatSeconds(connectTimeout)) s")
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    /// Sends `command` and waits for its reply's `return` member.
    ///
    /// - Throws: `QMPCommandError` for an error reply; `QMPClientError.timeout`,
    ///   `.connectionLost` or `.protocolViolation` otherwise (`.protocolViolation` also when
    ///   the arguments cannot be encoded as JSON, e.g. a NaN); `CancellationError` when
    ///   the calling task is cancelled.
    public func execute(_ command: String, arguments: [String: JSONValue]?, timeout: Double?) async throws -> JSONValue {
        let seconds = timeout ?? defaultCommandTimeout
        let id = core.makeCommandID()
        var members: [String: JSONValue] = ["execute": .string(command), "id": .string(id)]
        if let arguments {
            members["arguments"] = .object(arguments)
        }
        var frame: ByteBuffer
        do {
            frame = channel.allocator.buffer(bytes: try JSONEncoder().encode(JSONValue.object(members)))
        } catch {
            throw QMPClientError.protocolViolation("cannot encode the arguments of \(command) as JSON: \(error)")
        }
        frame.writeString("\r\n")
        let payload = frame

        let core = self.core
        let channel = self.channel
        let result: Result<JSONValue, QMPErrorReply> = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                if let refusal = core.register(id: id, command: command, seconds: seconds, continuation: continuation) {
                    continuation.resume(throwing: refusal)
                    return
                }
                let timer = channel.eventLoop.scheduleTask(in: Self.timeAmount(seconds: seconds)) {
                    core.timeOut(id: id)
                }
                core.attach(timer: timer, to: id)
                channel.writeAndFlush(payload).whenFailure { error in
                    core.finish(
                        id: id,
                        with: .failure(QMPClientError.connectionLost(reason: "cannot send \(command): \(error)")),
                        expectLateReply: false)
                }
            }
        } onCancel: {
            core.finish(id: id, with: .failure(CancellationError()), expectLateReply: true)
        }
        switch result {
        case .success(let value):
            return value
        case .failure(let reply):
            throw QMPCommandError(command: command, errorClass: reply.errorClass, desc: reply.desc)
        }
    }

    /// A new subscription to every event that arrives from now on. It finishes when the
    /// connection closes or is lost; cancelling its consumer unsubscribes it. It holds at
    /// most `eventBufferLimit` unread events, then drops the oldest.
    public func events() -> AsyncStream<QMPEvent> {
        core.subscribe()
    }

    /// The event buffers' bound, drops and high-water mark so far.
    public var eventBufferStats: QMPEventBufferStats {
        core.eventBufferStats
    }

    /// True once the connection has been closed or lost.
    public var isClosed: Bool {
        core.isClosed
    }

    /// The number of live `events()` subscriptions (for tests).
    var subscriberCountForTesting: Int {
        core.subscriberCount
    }

    /// Closes the connection. Commands in flight fail with `connectionLost`, event streams
    /// finish. Closing twice is harmless.
    public func close() async {
        core.shutDown(
            reason: "the connection was closed by the client",
            commandError: .connectionLost(reason: "the connection was closed by the client"),
            greetingError: .connectionLost(reason: "the connection was closed by the client"))
        try? await channel.close().get()
    }

    // MARK: - Helpers

    /// Checks that `path` exists and is a socket, so the common mistakes get clear messages.
    private static func checkSocket(at path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let code = errno
            let reason = code == ENOENT ? "no such file" : String(cString: strerror(code))
            throw QMPClientError.connectFailed(path: path, reason: reason)
        }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw QMPClientError.connectFailed(path: path, reason: "not a socket")
        }
    }

    /// The system's wording for a failed connect ("Connection refused"), when there is one.
    private static func describeConnectError(_ error: Error) -> String {
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode))
        }
        if let error = error as? SocketAddressError, case .unixDomainSocketPathTooLong = error {
            return "the path is longer than a UNIX socket address allows"
        }
        if let error = error as? ChannelError, case .connectTimeout(let amount) = error {
            return "connect timed out after \(formatSeconds(Double(amount.nanoseconds) / 1e9)) s"
        }
        return String(describing: error)
    }

    /// Seconds as a NIO `TimeAmount`, clamped to [0, 10⁹ s] (NaN counts as 0).
    static func timeAmount(seconds: Double) -> TimeAmount {
        let clamped = seconds.isNaN ? 0 : min(max(seconds, 0), 1e9)
        return .nanoseconds(Int64((clamped * 1e9).rounded()))
    }
}

/// Seconds for messages: `5` rather than `5.0`, `0.3` as is.
func formatSeconds(_ seconds: Double) -> String {
    if seconds.isFinite, seconds == seconds.rounded(), abs(seconds) < 1e15 {
        return String(Int64(seconds))
    }
    return String(seconds)
}

/// The shared state of one connection, used by both `QMPConnection` (callers' threads)
/// and `QMPChannelHandler` (the event loop). Everything mutable is behind one lock, and
/// continuations are resumed and streams finished only after the lock is released.
final class QMPConnectionCore: @unchecked Sendable {
    /// What the handler should do after a message.
    enum ReceiveOutcome {
        case keepOpen
        case close
    }

    /// A command waiting for its reply.
    private struct PendingCommand {
        let command: String
        let seconds: Double
        let continuation: CheckedContinuation<Result<JSONValue, QMPErrorReply>, Error>
        var timer: Scheduled<Void>?
    }

    /// Where the greeting stands during the handshake.
    private enum GreetingState {
        /// Not arrived; the waiter, once `waitForGreeting` has been called.
        case waiting(CheckedContinuation<JSONValue, Error>?)
        /// Settled before anyone waited.
        case settled(Result<JSONValue, Error>)
        /// Handed to the waiter.
        case delivered
    }

    private struct State {
        var greeting: GreetingState = .waiting(nil)
        var greeted = false
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
    private let state: LockedBox<State>

    init(path: String, eventBufferLimit: Int = QMPConnection.defaultEventBufferLimit) {
        self.path = path
        self.eventBufferLimit = eventBufferLimit
        self.state = LockedBox(State(eventBuffers: QMPEventBufferStats(bound: eventBufferLimit)))
    }

    var isClosed: Bool {
        state.withLock { $0.closedReason != nil }
    }

    // MARK: Greeting

    /// Waits for the greeting, at most `timeout` seconds.
    func waitForGreeting(timeout: Double, on eventLoop: EventLoop) async throws -> JSONValue {
        let path = self.path
        let timer = eventLoop.scheduleTask(in: QMPConnection.timeAmount(seconds: timeout)) { [self] in
            settleGreeting(.failure(QMPClientError.notQMP(
                path: path,
                reason: "no QMP greeting within \(formatSeconds(timeout)) s (is another client connected to this monitor?)")))
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
    private func settleGreeting(_ result: Result<JSONValue, Error>) {
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

    // MARK: Commands

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

    // MARK: Events

    func subscribe() -> AsyncStream<QMPEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: QMPEvent.self, bufferingPolicy: .bufferingNewest(eventBufferLimit))
        let key = state.withLock { state in
            defer { state.nextSubscriberKey += 1 }
            return state.nextSubscriberKey
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { state in
                state.subscribers[key] = nil
            }
        }
        let added = state.withLock { state -> Bool in
            guard state.closedReason == nil else { return false }
            state.subscribers[key] = continuation
            return true
        }
        if !added {
            continuation.finish()
        }
        return stream
    }

    /// The number of live event subscriptions (for tests).
    var subscriberCount: Int {
        state.withLock { $0.subscribers.count }
    }

    var eventBufferStats: QMPEventBufferStats {
        state.withLock { $0.eventBuffers }
    }

    /// Hands `event` to every subscriber and records what their buffers did with it.
    /// Called on the event loop only, so one event's yields are never interleaved with
    /// another's.
    private func deliver(_ event: QMPEvent, to subscribers: [AsyncStream<QMPEvent>.Continuation]) {
        var dropped = 0
        var fullest = 0
        for subscriber in subscribers {
            switch subscriber.yield(event) {
            case .enqueued(let remaining):
                fullest = max(fullest, eventBufferLimit - remaining)
            case .dropped:
                dropped += 1
                fullest = eventBufferLimit
            case .terminated:
                continue
            @unknown default:
                continue
            }
        }
        guard dropped > 0 || fullest > 0 else { return }
        state.withLock { state in
            state.eventBuffers.dropped += dropped
            state.eventBuffers.highWaterMark = max(state.eventBuffers.highWaterMark, fullest)
        }
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
                guard state.greeted else { return .notGreeting }
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

    private func describe(_ message: QMPMessage) -> String {
        switch message {
        case .greeting: return "a greeting"
        case .reply(let id, _): return "a reply to \(id)"
        case .event(let event): return "the event \(event.name)"
        }
    }
}

/// Reads the socket: splits bytes into lines, parses them and hands the messages to the
/// connection's core. Closes the channel on a protocol violation.
final class QMPChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let core: QMPConnectionCore
    private var framer = QMPLineFramer()
    /// Set after a violation: nothing more is read from a stream that cannot be trusted.
    private var broken = false

    init(core: QMPConnectionCore) {
        self.core = core
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !broken else { return }
        let buffer = unwrapInboundIn(data)
        do {
            for line in try framer.feed(buffer.readableBytesView) {
                let outcome = core.receive(try QMPMessage.parse(line: line))
                switch outcome {
                case .keepOpen:
                    continue
                case .close:
                    broken = true
                    context.close(promise: nil)
                    return
                }
            }
        } catch {
            broken = true
            core.protocolViolation(error as? QMPClientError ?? .protocolViolation(String(describing: error)))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        core.connectionLost(reason: "the peer closed the connection")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        core.connectionLost(reason: "reading failed: \(error)")
        context.close(promise: nil)
    }
}
