import Foundation
import NIOCore
import NIOPosix
import QMP
import Synchronization

/// What a `FakeQMPPeer` sends first when a client connects.
public enum FakeGreeting: Sendable {
    /// A greeting like QEMU 7.2's: `{"QMP": {"version": …, "capabilities": ["oob"]}}`.
    case standard
    /// These bytes, verbatim (add `"\r\n"` yourself when the line should be complete).
    case raw(String)
    /// Nothing at all, like a QEMU monitor that is busy with another client.
    case none
}

/// How a `FakeQMPPeer` answers one command.
public enum FakeReply: Sendable {
    /// `{"return": value, "id": …}`.
    case `return`(JSONValue)
    /// `{"error": {"class": …, "desc": …}, "id": …}`.
    case error(class: String, desc: String)
    /// No answer at all (answer later with `FakeQMPPeer.reply(to:with:)`, or never).
    case noReply
    /// These bytes, verbatim: garbage, truncated JSON, several lines… Add `"\r\n"` yourself.
    case raw(String)
    /// Close the client's connection instead of answering.
    case closeConnection
    /// The `return` reply, with events sent just before and just after it.
    case returnWithEvents(JSONValue, before: [QMPEvent], after: [QMPEvent])
}

/// One command a `FakeQMPPeer` received.
public struct FakeCommand: Sendable, Hashable {
    /// The `execute` member.
    public let name: String
    /// The `arguments` member, nil when absent.
    public let arguments: JSONValue?
    /// The `id` member, nil when absent.
    public let id: JSONValue?

    public init(name: String, arguments: JSONValue?, id: JSONValue?) {
        self.name = name
        self.arguments = arguments
        self.id = id
    }
}

/// Decides the answer to each command: `(name, arguments, id)`. Return nil for the default
/// behaviour (`FakeQMPPeer.defaultReply`: QEMU 7.2's answers to the commands a client
/// sends at connect, `CommandNotFound` to anything else). It runs on
/// the peer's event loop, so it must be quick and must not block.
public typealias FakeQMPHandler = @Sendable (_ name: String, _ arguments: JSONValue?, _ id: JSONValue?) -> FakeReply?

/// Errors of `FakeQMPPeer` itself.
public enum FakeQMPPeerError: Error, Sendable, CustomStringConvertible {
    /// A `waitFor…` call ran out of time.
    case timeout(String)
    /// The peer was stopped while something waited on it.
    case stopped
    /// The temporary directory for the socket could not be created.
    case cannotCreateDirectory(String)

    public var description: String {
        switch self {
        case .timeout(let what): return "FakeQMPPeer: timed out waiting for \(what)"
        case .stopped: return "FakeQMPPeer: stopped"
        case .cannotCreateDirectory(let why): return "FakeQMPPeer: cannot create a temporary directory: \(why)"
        }
    }
}

/// A scripted QMP server on a UNIX socket in a fresh temporary directory, for tests.
///
/// ```swift
/// let peer = try await FakeQMPPeer.start { name, arguments, id in
///     name == "query-version" ? .return(["qemu": ["major": 7]]) : nil
/// }
/// defer { peer.stop() }
/// let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
/// ```
///
/// Each client gets the greeting (see `FakeGreeting`), then every line it sends is parsed as
/// a command, recorded in `receivedCommands`, and answered as the handler says. At any
/// time the test can push events or raw bytes to the connected clients, answer a command
/// it left unanswered, or drop the clients. The peer accepts any number of clients (QEMU
/// accepts one at a time; `FakeGreeting.none` imitates the waiting one).
///
/// Thread-safe; everything mutable is behind one lock.
// @unchecked: test fake; its State (with waiters' non-Sendable conditions) is behind `lock`, reached only through `withState`.
public final class FakeQMPPeer: @unchecked Sendable {
    /// The socket's path; connect here.
    public let socketPath: String
    /// The temporary directory holding the socket, removed by `stop()`.
    public let directory: String

    private let serverChannel: Channel
    private let lock = NSLock()
    private var state: State

    private struct State {
        var greeting: FakeGreeting
        var handler: FakeQMPHandler
        var clients: [ObjectIdentifier: Channel] = [:]
        var connectionCount = 0
        var commands: [FakeCommand] = []
        var waiters: [Int: Waiter] = [:]
        var nextWaiterKey = 0
        var stopped = false
    }

    /// Someone waiting for a condition on the peer's state.
    private struct Waiter {
        let isSatisfied: (State) -> Bool
        let continuation: CheckedContinuation<Void, Error>
        var timer: Scheduled<Void>?
    }

    /// The `QMP` member of `FakeGreeting.standard`.
    public static let standardGreeting: JSONValue = [
        "QMP": [
            "version": [
                "qemu": ["micro": 22, "minor": 2, "major": 7],
                "package": "Debian 1:7.2+dfsg-7+deb12u16 (fake)",
            ],
            "capabilities": ["oob"],
        ]
    ]

    /// The commands QEMU 7.2 offers that livecopy sends (and a few more), for the default
    /// `query-commands` answer.
    public static let qemu72Commands: [String] = [
        "qmp_capabilities", "query-version", "query-commands", "query-status", "query-block", "query-jobs",
        "query-block-jobs", "query-migrate", "transaction", "blockdev-snapshot-sync", "block-stream", "job-finalize",
        "job-dismiss", "human-monitor-command", "block-commit", "drive-mirror", "block-job-complete", "block-job-cancel",
        "block-job-pause", "block-job-resume", "block-job-set-speed", "blockdev-add", "blockdev-del", "blockdev-mirror",
    ]

    /// The default answers, like QEMU 7.2's: `qmp_capabilities` → `{}`, `query-version` →
    /// 7.2.22, `query-commands` → `qemu72Commands`; anything else → `CommandNotFound`.
    public static func defaultReply(name: String) -> FakeReply {
        switch name {
        case "qmp_capabilities":
            return .return([:])
        case "query-version":
            return .return(["qemu": ["micro": 22, "minor": 2, "major": 7], "package": "Debian 1:7.2+dfsg-7+deb12u16 (fake)"])
        case "query-commands":
            return .return(.array(qemu72Commands.map { ["name": .string($0)] }))
        default:
            return .error(class: "CommandNotFound", desc: "The command \(name) has not been found")
        }
    }

    /// Starts a peer listening on `<temporary directory>/qmp.sock`.
    public static func start(
        greeting: FakeGreeting = .standard,
        eventLoopGroup: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        handler: @escaping FakeQMPHandler = { _, _, _ in nil }
    ) async throws -> FakeQMPPeer {
        let directory = try makeTemporaryDirectory()
        let socketPath = directory + "/qmp.sock"
        let box = PeerBox()
        let serverChannel: Channel
        do {
            serverChannel = try await ServerBootstrap(group: eventLoopGroup)
                .serverChannelOption(.backlog, value: 16)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(FakeQMPClientHandler(box: box))
                    }
                }
                .bind(unixDomainSocketPath: socketPath)
                .get()
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        // Owner-only whatever the umask: livecopy refuses a socket that others may write to.
        _ = chmod(socketPath, 0o700)
        let peer = FakeQMPPeer(
            socketPath: socketPath, directory: directory, serverChannel: serverChannel,
            greeting: greeting, handler: handler)
        box.set(peer)
        return peer
    }

    private init(socketPath: String, directory: String, serverChannel: Channel, greeting: FakeGreeting, handler: @escaping FakeQMPHandler) {
        self.socketPath = socketPath
        self.directory = directory
        self.serverChannel = serverChannel
        self.state = State(greeting: greeting, handler: handler)
    }

    deinit {
        stop()
    }

    // MARK: Scripting

    /// Replaces the handler for commands received from now on.
    public func setHandler(_ handler: @escaping FakeQMPHandler) {
        withState { $0.handler = handler }
    }

    /// Replaces the greeting for clients connecting from now on.
    public func setGreeting(_ greeting: FakeGreeting) {
        withState { $0.greeting = greeting }
    }

    /// Sends an event to every connected client.
    public func send(event: QMPEvent) {
        sendRaw(Self.line(for: event))
    }

    /// Sends an event named `name` with `data` and the current time to every connected client.
    public func send(event name: String, data: JSONValue = [:]) {
        send(event: QMPEvent(name: name, data: data, timestamp: Date().timeIntervalSince1970))
    }

    /// Sends bytes, verbatim, to every connected client.
    public func sendRaw(_ text: String) {
        for client in connectedClients() {
            client.writeAndFlush(client.allocator.buffer(string: text), promise: nil)
        }
    }

    /// Answers a command later (for example one the handler left with `.noReply`), as if
    /// the handler had returned `reply` for the command with this `id`. Goes to every
    /// connected client.
    public func reply(to id: JSONValue?, with reply: FakeReply) {
        for client in connectedClients() {
            Self.perform(reply, id: id, on: client)
        }
    }

    /// Closes every client connection; the peer keeps listening.
    public func disconnectClients() {
        for client in connectedClients() {
            client.close(promise: nil)
        }
    }

    /// Stops listening, drops the clients, fails anyone waiting, and removes the directory.
    /// Closing and removing happen in the background (moments later); calling it again is
    /// harmless.
    public func stop() {
        let (alreadyStopped, clients, waiters) = withState { state -> (Bool, [Channel], [Waiter]) in
            defer {
                state.stopped = true
                state.clients = [:]
                state.waiters = [:]
            }
            return (state.stopped, Array(state.clients.values), Array(state.waiters.values))
        }
        guard !alreadyStopped else { return }
        // The directory goes once the listener is closed: removing it while the close
        // is still unlinking the socket would race and could leave it behind.
        let directory = self.directory
        serverChannel.close().whenComplete { _ in
            try? FileManager.default.removeItem(atPath: directory)
        }
        for client in clients {
            client.close(promise: nil)
        }
        for waiter in waiters {
            waiter.timer?.cancel()
            waiter.continuation.resume(throwing: FakeQMPPeerError.stopped)
        }
    }

    // MARK: Observing

    /// Every command received so far, in order, from all clients.
    public var receivedCommands: [FakeCommand] {
        withState { $0.commands }
    }

    /// The names of `receivedCommands`.
    public var receivedCommandNames: [String] {
        receivedCommands.map(\.name)
    }

    /// The number of clients connected now.
    public var connectedClientCount: Int {
        withState { $0.clients.count }
    }

    /// The number of clients that ever connected.
    public var connectionCount: Int {
        withState { $0.connectionCount }
    }

    /// Waits until at least `count` commands have arrived, and returns them all.
    @discardableResult
    public func waitForCommands(count: Int, timeout: Double = 5) async throws -> [FakeCommand] {
        try await waitUntil("\(count) commands", timeout: timeout) { $0.commands.count >= count }
        return receivedCommands
    }

    /// Waits until a command named `name` has arrived (its `occurrence`-th one, counting
    /// from 1), and returns it.
    @discardableResult
    public func waitForCommand(named name: String, occurrence: Int = 1, timeout: Double = 5) async throws -> FakeCommand {
        try await waitUntil("command \(name) #\(occurrence)", timeout: timeout) { state in
            state.commands.filter { $0.name == name }.count >= occurrence
        }
        return receivedCommands.filter { $0.name == name }[occurrence - 1]
    }

    /// Waits until at least `count` clients have ever connected.
    public func waitForConnections(count: Int = 1, timeout: Double = 5) async throws {
        try await waitUntil("\(count) connections", timeout: timeout) { $0.connectionCount >= count }
    }

    /// Waits until no client is connected.
    public func waitUntilNoClients(timeout: Double = 5) async throws {
        try await waitUntil("all clients to leave", timeout: timeout) { $0.clients.isEmpty }
    }

    // MARK: Wire format

    /// The QEMU greeting line of `FakeGreeting.standard`, with its `"\r\n"`.
    public static var standardGreetingLine: String {
        standardGreeting.compactText + "\r\n"
    }

    /// The wire line for an event, with its `"\r\n"`.
    public static func line(for event: QMPEvent) -> String {
        let seconds = event.timestamp.rounded(.down)
        let microseconds = ((event.timestamp - seconds) * 1_000_000).rounded(.down)
        let object: JSONValue = [
            "event": .string(event.name),
            "data": event.data,
            "timestamp": ["seconds": .int(Int64(seconds)), "microseconds": .int(Int64(microseconds))],
        ]
        return object.compactText + "\r\n"
    }

    /// The wire line for a `return` or `error` reply, with its `"\r\n"`.
    public static func replyLine(_ body: (key: String, value: JSONValue), id: JSONValue?) -> String {
        var members: [String: JSONValue] = [body.key: body.value]
        if let id {
            members["id"] = id
        }
        return JSONValue.object(members).compactText + "\r\n"
    }

    // MARK: Internals (called by the client handler on the event loop)

    fileprivate func clientConnected(_ channel: Channel) {
        let greeting = withState { state -> FakeGreeting? in
            guard !state.stopped else { return nil }
            state.clients[ObjectIdentifier(channel)] = channel
            state.connectionCount += 1
            return state.greeting
        }
        guard let greeting else {
            channel.close(promise: nil)
            return
        }
        switch greeting {
        case .standard:
            channel.writeAndFlush(channel.allocator.buffer(string: Self.standardGreetingLine), promise: nil)
        case .raw(let text):
            channel.writeAndFlush(channel.allocator.buffer(string: text), promise: nil)
        case .none:
            break
        }
        stateChanged()
    }

    fileprivate func clientDisconnected(_ channel: Channel) {
        withState { state in
            state.clients[ObjectIdentifier(channel)] = nil
        }
        stateChanged()
    }

    /// Handles one line from a client: records the command and answers it.
    fileprivate func received(line: [UInt8], on channel: Channel) {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(line)),
            case .string(let name) = value["execute"]
        else {
            // QEMU answers an unparsable line with a GenericError without id.
            Self.perform(.error(class: "GenericError", desc: "JSON parse error, or not a command"), id: nil, on: channel)
            return
        }
        let command = FakeCommand(name: name, arguments: value["arguments"], id: value["id"])
        let handler = withState { state -> FakeQMPHandler in
            state.commands.append(command)
            return state.handler
        }
        stateChanged()
        let reply = handler(command.name, command.arguments, command.id) ?? Self.defaultReply(name: command.name)
        Self.perform(reply, id: command.id, on: channel)
    }

    private static func perform(_ reply: FakeReply, id: JSONValue?, on channel: Channel) {
        func write(_ text: String) {
            channel.writeAndFlush(channel.allocator.buffer(string: text), promise: nil)
        }
        switch reply {
        case .return(let value):
            write(replyLine(("return", value), id: id))
        case .error(let errorClass, let desc):
            write(replyLine(("error", ["class": .string(errorClass), "desc": .string(desc)]), id: id))
        case .noReply:
            break
        case .raw(let text):
            write(text)
        case .closeConnection:
            channel.close(promise: nil)
        case .returnWithEvents(let value, let before, let after):
            write(before.map(line(for:)).joined() + replyLine(("return", value), id: id) + after.map(line(for:)).joined())
        }
    }

    private func connectedClients() -> [Channel] {
        withState { Array($0.clients.values) }
    }

    private func withState<Result>(_ body: (inout State) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&state)
    }

    /// Waits until `condition` holds, at most `timeout` seconds.
    private func waitUntil(_ what: String, timeout: Double, _ condition: @escaping (State) -> Bool) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            enum Registration {
                case done
                case failed(Error)
                case waiting(Int)
            }
            let registration = withState { state -> Registration in
                if state.stopped { return .failed(FakeQMPPeerError.stopped) }
                if condition(state) { return .done }
                let key = state.nextWaiterKey
                state.nextWaiterKey += 1
                state.waiters[key] = Waiter(isSatisfied: condition, continuation: continuation)
                return .waiting(key)
            }
            switch registration {
            case .done:
                continuation.resume()
            case .failed(let error):
                continuation.resume(throwing: error)
            case .waiting(let key):
                let nanoseconds = Int64((max(0, min(timeout, 1e6)) * 1e9).rounded())
                let timer = serverChannel.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) { [self] in
                    let waiter = withState { $0.waiters.removeValue(forKey: key) }
                    waiter?.continuation.resume(throwing: FakeQMPPeerError.timeout(what))
                }
                let stillWaiting = withState { state -> Bool in
                    guard state.waiters[key] != nil else { return false }
                    state.waiters[key]?.timer = timer
                    return true
                }
                if !stillWaiting {
                    timer.cancel()
                }
            }
        }
    }

    /// Wakes the waiters whose condition now holds.
    private func stateChanged() {
        let satisfied = withState { state -> [Waiter] in
            let keys = state.waiters.filter { $0.value.isSatisfied(state) }.map(\.key)
            return keys.compactMap { state.waiters.removeValue(forKey: $0) }
        }
        for waiter in satisfied {
            waiter.timer?.cancel()
            waiter.continuation.resume()
        }
    }

    /// A fresh directory with a short path (socket paths are limited to about 100 bytes).
    private static func makeTemporaryDirectory() throws -> String {
        var base = NSTemporaryDirectory()
        if base.utf8.count > 60 {
            base = "/tmp/"
        }
        if !base.hasSuffix("/") {
            base += "/"
        }
        var template = Array((base + "fakeqmp.XXXXXX").utf8CString)
        let created = template.withUnsafeMutableBufferPointer { buffer in
            mkdtemp(buffer.baseAddress!)
        }
        guard created != nil else {
            throw FakeQMPPeerError.cannotCreateDirectory(String(cString: strerror(errno)))
        }
        return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

/// Hands the peer to client handlers created before the peer object exists.
private final class PeerBox: Sendable {
    private struct Weak {
        weak var peer: FakeQMPPeer?
    }
    private let peer = Mutex(Weak())

    func set(_ peer: FakeQMPPeer) {
        self.peer.withLock { $0.peer = peer }
    }

    func get() -> FakeQMPPeer? {
        peer.withLock { $0.peer }
    }
}

/// One client connection of a `FakeQMPPeer`: greets it, splits its bytes into lines and
/// passes them to the peer.
private final class FakeQMPClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let box: PeerBox
    private var framer = QMPLineFramer()

    init(box: PeerBox) {
        self.box = box
    }

    func channelActive(context: ChannelHandlerContext) {
        if let peer = box.get() {
            peer.clientConnected(context.channel)
        } else {
            // Connected in the instant between bind and `start` returning, or after the
            // peer was released; the test will not be talking to this client.
            context.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let peer = box.get() else { return }
        guard let lines = try? framer.feed(buffer.readableBytesView) else {
            context.close(promise: nil)
            return
        }
        for line in lines {
            peer.received(line: line, on: context.channel)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        box.get()?.clientDisconnected(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
