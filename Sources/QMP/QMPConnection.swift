// The public QMP client: connecting (greeting and capabilities negotiation), commands,
// event subscriptions and closing. The shared bookkeeping behind it is `QMPConnectionCore`
// (QMPConnectionCore*.swift); the socket reader is `QMPChannelHandler`.

import Foundation
import Logging
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
public final class QMPConnection: QMPSession, Sendable {
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
        let sentAt = ContinuousClock.now
        logger.debug("QMP command sent", metadata: ["command": "\(command)", "id": "\(id)", "socket": "\(socketPath)"])

        let result: Result<JSONValue, QMPErrorReply>
        do {
            result = try await send(payload, id: id, command: command, seconds: seconds)
        } catch let error as QMPClientError {
            switch error {
            case .timeout, .connectionLost: QMPMetrics.recordFailure(.noReply)
            case .connectFailed, .notQMP, .protocolViolation: break
            }
            throw error
        }
        QMPMetrics.recordRoundTrip(command: command, elapsed: ContinuousClock.now - sentAt)
        let replied = if case .failure(let reply) = result { "error \(reply.errorClass)" } else { "return" }
        logger.debug("QMP reply", metadata: [
            "command": "\(command)", "id": "\(id)", "socket": "\(socketPath)",
            "seconds": "\(Self.seconds(since: sentAt))", "reply": "\(replied)",
        ])
        switch result {
        case .success(let value):
            return value
        case .failure(let reply):
            QMPMetrics.recordFailure(.errorReply)
            throw QMPCommandError(command: command, errorClass: reply.errorClass, desc: reply.desc)
        }
    }

    /// Writes the command's frame and waits for its reply, its timeout or the connection's end.
    private func send(_ payload: ByteBuffer, id: String, command: String, seconds: Double) async throws
        -> Result<JSONValue, QMPErrorReply> {
        let core = self.core
        let channel = self.channel
        return try await withTaskCancellationHandler {
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
    }

    /// Seconds elapsed since `start`, to the millisecond (for logs).
    static func seconds(since start: ContinuousClock.Instant) -> String {
        let elapsed = (ContinuousClock.now - start).components
        return String(format: "%.3f", Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
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
}
