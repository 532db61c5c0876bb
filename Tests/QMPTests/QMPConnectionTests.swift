import Foundation
import Testing
import TestSupport

@testable import QMP

/// `QMPConnection` against the scripted `FakeQMPPeer`.
@Suite("QMPConnection with a fake peer")
struct QMPConnectionTests {
    private static let stop = QMPEvent(name: "STOP", data: [:], timestamp: 1_700_000_000.5)
    private static let resume = QMPEvent(name: "RESUME", data: [:], timestamp: 1_700_000_001)
    private static func job(_ status: String) -> QMPEvent {
        QMPEvent(name: "JOB_STATUS_CHANGE", data: ["id": "j1", "status": .string(status)], timestamp: 1_700_000_002.25)
    }

    // MARK: Handshake

    @Test func handshakeNegotiatesCapabilities() async throws {
        let peer = try await FakeQMPPeer.start()
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        #expect(connection.greeting["version"]?["qemu"]?["major"] == 7)
        #expect(!connection.isClosed)
        let commands = peer.receivedCommands
        #expect(commands.map(\.name) == ["qmp_capabilities"])
        #expect(commands.first?.arguments == nil)
        #expect(commands.first?.id == "lc-1")
        await connection.close()
        #expect(connection.isClosed)
        try await peer.waitUntilNoClients()
    }

    @Test func commandsCarryArgumentsAndIncreasingIds() async throws {
        let peer = try await FakeQMPPeer.start { name, arguments, _ in
            name == "echo" ? .return(arguments ?? "no arguments") : nil
        }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        defer { Task { await connection.close() } }
        let arguments: [String: JSONValue] = ["device": "drive0", "speed": 1_048_576, "auto-dismiss": false, "path": "/a/b"]
        #expect(try await connection.execute("echo", arguments) == .object(arguments))
        #expect(try await connection.execute("echo") == "no arguments")
        let commands = peer.receivedCommands
        #expect(commands.map(\.id) == ["lc-1", "lc-2", "lc-3"])
        #expect(commands[1].arguments == .object(arguments))
    }

    @Test func capabilitiesErrorIsNotQMP() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            name == "qmp_capabilities" ? .error(class: "GenericError", desc: "nope") : nil
        }
        defer { peer.stop() }
        await #expect(throws: QMPClientError.notQMP(path: peer.socketPath, reason: "qmp_capabilities failed: GenericError: nope")) {
            _ = try await QMPConnection.connect(socketPath: peer.socketPath)
        }
    }

    // MARK: Replies

    @Test func repliesAreCorrelatedByIdWhenAnsweredOutOfOrder() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            name == "first" || name == "second" ? .noReply : nil
        }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        defer { Task { await connection.close() } }

        let first = Task { try await connection.execute("first") }
        let firstCommand = try await peer.waitForCommand(named: "first")
        let second = Task { try await connection.execute("second") }
        let secondCommand = try await peer.waitForCommand(named: "second")

        peer.reply(to: secondCommand.id, with: .return("answer to second"))
        #expect(try await second.value == "answer to second")
        peer.reply(to: firstCommand.id, with: .return("answer to first"))
        #expect(try await first.value == "answer to first")
    }

    @Test func manyConcurrentCommandsGetTheirOwnReplies() async throws {
        let peer = try await FakeQMPPeer.start { name, arguments, _ in
            name == "echo" ? .return(arguments?["n"] ?? .null) : nil
        }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        defer { Task { await connection.close() } }
        try await withThrowingTaskGroup(of: (Int64, JSONValue).self) { group in
            for n in Int64(0)..<200 {
                group.addTask { (n, try await connection.execute("echo", ["n": .int(n)])) }
            }
            for try await (n, reply) in group {
                #expect(reply == .int(n))
            }
        }
    }

    @Test func errorReplyBecomesQMPCommandError() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            name == "block-stream" ? .error(class: "DeviceNotFound", desc: "Device 'drive9' not found") : nil
        }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        defer { Task { await connection.close() } }
        await #expect(throws: QMPCommandError(command: "block-stream", errorClass: "DeviceNotFound", desc: "Device 'drive9' not found")) {
            try await connection.execute("block-stream", ["device": "drive9"])
        }
        await #expect(throws: QMPCommandError(command: "no-such-thing", errorClass: "CommandNotFound", desc: "The command no-such-thing has not been found")) {
            try await connection.execute("no-such-thing")
        }
        #expect(!connection.isClosed)
    }

    // MARK: Events

    @Test func eventsInterleavedWithRepliesReachEverySubscriber() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            switch name {
            case "query-jobs": return .returnWithEvents([], before: [Self.job("created"), Self.job("running")], after: [Self.job("concluded")])
            case "slow": return .noReply
            default: return nil
            }
        }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        defer { Task { await connection.close() } }
        let one = connection.events()
        let two = connection.events()

        let slow = Task { try await connection.execute("slow") }
        let slowCommand = try await peer.waitForCommand(named: "slow")
        peer.send(event: Self.stop)  // while "slow" is in flight
        // Received before the next command goes out: the fake peer's event loop may
        // otherwise write its answer to that command before this queued event.
        #expect(try await collect(1, from: one) == [Self.stop])
        #expect(try await collect(1, from: two) == [Self.stop])
        #expect(try await connection.execute("query-jobs") == [])
        peer.reply(to: slowCommand.id, with: .returnWithEvents("done", before: [Self.resume], after: []))
        #expect(try await slow.value == "done")

        let expected = [Self.job("created"), Self.job("running"), Self.job("concluded"), Self.resume]
        #expect(try await collect(4, from: one) == expected)
        #expect(try await collect(4, from: two) == expected)

        // A late subscriber sees only what comes after it subscribed.
        let late = connection.events()
        peer.send(event: "BLOCK_JOB_READY", data: ["device": "r1"])
        let lateEvents = try await collect(1, from: late)
        #expect(lateEvents.map(\.name) == ["BLOCK_JOB_READY"])
        #expect(lateEvents.first?.data == ["device": "r1"])
    }

    @Test func cancelledSubscriberIsRemoved() async throws {
        let peer = try await FakeQMPPeer.start()
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        defer { Task { await connection.close() } }
        let kept = connection.events()
        let cancelled = connection.events()
        #expect(connection.subscriberCountForTesting == 2)
        let consumer = Task {
            for await _ in cancelled {}
        }
        consumer.cancel()
        await consumer.value
        #expect(connection.subscriberCountForTesting == 1)
        peer.send(event: Self.stop)
        #expect(try await collect(1, from: kept) == [Self.stop])
    }

    @Test func eventsStreamsFinishOnClose() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in name == "slow" ? .noReply : nil }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        let events = connection.events()
        let slow = Task { try await connection.execute("slow") }
        _ = try await peer.waitForCommand(named: "slow")
        await connection.close()
        await #expect(throws: QMPClientError.connectionLost(reason: "the connection was closed by the client")) {
            try await slow.value
        }
        #expect(try await drainUntilFinished(events).isEmpty)
        #expect(connection.isClosed)
        // Subscribing after the close gives a finished stream; closing again is harmless.
        #expect(try await drainUntilFinished(connection.events()).isEmpty)
        await connection.close()
        try await peer.waitUntilNoClients()
    }

    // MARK: Failures

    @Test func peerDisconnectingMidCommandLosesTheConnection() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in name == "block-stream" ? .closeConnection : nil }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        let events = connection.events()
        let error = await #expect(throws: QMPClientError.self) {
            try await connection.execute("block-stream", ["device": "drive0"])
        }
        guard case .connectionLost? = error else {
            Issue.record("expected connectionLost, got \(String(describing: error))")
            return
        }
        #expect(connection.isClosed)
        let later = await #expect(throws: QMPClientError.self) { try await connection.execute("query-jobs") }
        guard case .connectionLost? = later else {
            Issue.record("expected connectionLost, got \(String(describing: later))")
            return
        }
        #expect(try await drainUntilFinished(events).isEmpty)
    }

    @Test func peerDisconnectingFailsEveryCommandInFlight() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in name.hasPrefix("slow") ? .noReply : nil }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        let one = Task { try await connection.execute("slow-1") }
        let two = Task { try await connection.execute("slow-2") }
        try await peer.waitForCommands(count: 3)
        peer.disconnectClients()
        let reason = "the peer closed the connection"
        await #expect(throws: QMPClientError.connectionLost(reason: reason)) { try await one.value }
        await #expect(throws: QMPClientError.connectionLost(reason: reason)) { try await two.value }
        await #expect(throws: QMPClientError.connectionLost(reason: reason)) { try await connection.execute("query-jobs") }
        #expect(connection.isClosed)
    }

    @Test func unansweredCommandTimesOutAndALateReplyIsDropped() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in name == "hang" ? .noReply : nil }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath, commandTimeout: 0.3)
        defer { Task { await connection.close() } }
        let start = Date()
        await #expect(throws: QMPClientError.timeout(command: "hang", seconds: 0.3)) {
            try await connection.execute("hang")
        }
        #expect(elapsed(since: start) >= 0.25)
        // The per-call timeout overrides the default.
        await #expect(throws: QMPClientError.timeout(command: "hang", seconds: 0.1)) {
            try await connection.execute("hang", arguments: nil, timeout: 0.1)
        }
        // Late replies to both are dropped quietly; the connection keeps working.
        for command in peer.receivedCommands where command.name == "hang" {
            peer.reply(to: command.id, with: .return("too late"))
        }
        await #expect(throws: QMPCommandError.self) { try await connection.execute("anything") }
        #expect(!connection.isClosed)
    }

    @Test func cancellingACallFailsItAndKeepsTheConnection() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in name == "hang" ? .noReply : nil }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        defer { Task { await connection.close() } }
        let call = Task { try await connection.execute("hang") }
        let command = try await peer.waitForCommand(named: "hang")
        call.cancel()
        await #expect(throws: CancellationError.self) { try await call.value }
        peer.reply(to: command.id, with: .return("too late"))
        await #expect(throws: QMPCommandError.self) { try await connection.execute("anything") }
        #expect(!connection.isClosed)
    }

    @Test func garbageLineIsAProtocolViolation() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            switch name {
            case "query-block": return .raw("this is not JSON\r\n")
            case "slow": return .noReply
            default: return nil
            }
        }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        let events = connection.events()
        let slow = Task { try await connection.execute("slow") }
        _ = try await peer.waitForCommand(named: "slow")
        let error = await #expect(throws: QMPClientError.self) { try await connection.execute("query-block") }
        guard case .protocolViolation(let what)? = error else {
            Issue.record("expected protocolViolation, got \(String(describing: error))")
            return
        }
        #expect(what.contains("not valid JSON"))
        // Every command in flight fails the same way, and the connection is closed.
        await #expect(throws: QMPClientError.protocolViolation(what)) { try await slow.value }
        #expect(connection.isClosed)
        #expect(try await drainUntilFinished(events).isEmpty)
        try await peer.waitUntilNoClients()
        let later = await #expect(throws: QMPClientError.self) { try await connection.execute("query-jobs") }
        guard case .connectionLost? = later else {
            Issue.record("expected connectionLost, got \(String(describing: later))")
            return
        }
    }

    @Test func replyWithUnknownIdIsAProtocolViolation() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            name == "query-block" ? .raw(#"{"return": {}, "id": "someone-else"}"# + "\r\n") : nil
        }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        await #expect(throws: QMPClientError.protocolViolation("a reply with the unknown id someone-else")) {
            try await connection.execute("query-block")
        }
        #expect(connection.isClosed)
    }

    @Test func truncatedReplyThenCloseIsConnectionLost() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            name == "query-block" ? .raw(#"{"return": [{"device": "dri"#) : nil
        }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        let reply = Task { try await connection.execute("query-block") }
        _ = try await peer.waitForCommand(named: "query-block")
        peer.disconnectClients()
        await #expect(throws: QMPClientError.connectionLost(reason: "the peer closed the connection")) { try await reply.value }
    }

    @Test func overlongLineIsAProtocolViolation() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            name == "huge" ? .raw(#"{"return": ""# + String(repeating: "x", count: QMPMessage.maxLineLength + 10)) : nil
        }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        let error = await #expect(throws: QMPClientError.self) { try await connection.execute("huge") }
        guard case .protocolViolation(let what)? = error else {
            Issue.record("expected protocolViolation, got \(String(describing: error))")
            return
        }
        #expect(what.contains("exceeds the limit"))
        #expect(connection.isClosed)
    }

    @Test func unencodableArgumentsAreRefusedLocally() async throws {
        let peer = try await FakeQMPPeer.start()
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath)
        defer { Task { await connection.close() } }
        await #expect(throws: QMPClientError.self) { try await connection.execute("x", ["speed": .double(.nan)]) }
        #expect(!connection.isClosed)
        #expect(peer.receivedCommandNames == ["qmp_capabilities"])
    }

    // MARK: Connecting

    @Test func missingSocketPathIsConnectFailed() async throws {
        let path = NSTemporaryDirectory() + "/livecopy-no-such-\(UUID().uuidString).qmp"
        await #expect(throws: QMPClientError.connectFailed(path: path, reason: "no such file")) {
            _ = try await QMPConnection.connect(socketPath: path)
        }
    }

    @Test func regularFileIsNotASocket() async throws {
        let path = NSTemporaryDirectory() + "/livecopy-regular-\(UUID().uuidString).qmp"
        #expect(FileManager.default.createFile(atPath: path, contents: Data("hello".utf8)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        await #expect(throws: QMPClientError.connectFailed(path: path, reason: "not a socket")) {
            _ = try await QMPConnection.connect(socketPath: path)
        }
    }

    @Test func staleSocketIsConnectionRefused() async throws {
        let path = try makeStaleSocket()
        defer { unlink(path) }
        await #expect(throws: QMPClientError.connectFailed(path: path, reason: "Connection refused")) {
            _ = try await QMPConnection.connect(socketPath: path)
        }
    }

    @Test func missingGreetingIsNotQMPWithinTheConnectTimeout() async throws {
        let peer = try await FakeQMPPeer.start(greeting: .none)
        defer { peer.stop() }
        let start = Date()
        let reason = "no QMP greeting within 0.5 s (is another client connected to this monitor?)"
        await #expect(throws: QMPClientError.notQMP(path: peer.socketPath, reason: reason)) {
            _ = try await QMPConnection.connect(socketPath: peer.socketPath, connectTimeout: 0.5)
        }
        #expect(elapsed(since: start) >= 0.45)
        try await peer.waitUntilNoClients()
    }

    /// QEMU 7.2 can write an event it emits while accepting a client (RESUME as the VM
    /// starts) ahead of its greeting: skipped, and the session goes on (seen once in a CI run).
    @Test func eventsBeforeTheGreetingAreSkipped() async throws {
        let peer = try await FakeQMPPeer.start(greeting: .raw(FakeQMPPeer.line(for: Self.resume) + FakeQMPPeer.standardGreetingLine))
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath, connectTimeout: 5)
        defer { Task { await connection.close() } }
        #expect(!connection.isClosed)
        // The session works: the fake peer's answer to a command it does not know comes back.
        await #expect(throws: QMPCommandError.self) { try await connection.execute("query-status") }
        #expect(!connection.isClosed)
    }

    @Test func anEventAloneWithNoGreetingIsNotQMP() async throws {
        let peer = try await FakeQMPPeer.start(greeting: .raw(FakeQMPPeer.line(for: Self.stop)))
        defer { peer.stop() }
        let error = await #expect(throws: QMPClientError.self) {
            _ = try await QMPConnection.connect(socketPath: peer.socketPath, connectTimeout: 2)
        }
        guard case .notQMP(let path, let reason)? = error else {
            Issue.record("expected notQMP, got \(String(describing: error))")
            return
        }
        #expect(path == peer.socketPath)
        #expect(reason.contains("the event STOP"))
    }

    @Test func garbageGreetingIsNotQMP() async throws {
        let peer = try await FakeQMPPeer.start(greeting: .raw("SSH-2.0-OpenSSH_9.2\r\n"))
        defer { peer.stop() }
        let error = await #expect(throws: QMPClientError.self) {
            _ = try await QMPConnection.connect(socketPath: peer.socketPath, connectTimeout: 2)
        }
        guard case .notQMP(_, let reason)? = error else {
            Issue.record("expected notQMP, got \(String(describing: error))")
            return
        }
        #expect(reason.contains("not valid JSON"))
    }

    @Test func peerClosingBeforeGreetingIsNotQMP() async throws {
        let peer = try await FakeQMPPeer.start(greeting: .none)
        defer { peer.stop() }
        let attempt = Task {
            _ = try await QMPConnection.connect(socketPath: peer.socketPath, connectTimeout: 5)
        }
        try await peer.waitForConnections()
        peer.disconnectClients()
        let reason = "the peer closed the connection before the QMP greeting"
        await #expect(throws: QMPClientError.notQMP(path: peer.socketPath, reason: reason)) { try await attempt.value }
    }

    /// A socket file nobody listens on, like the one a killed QEMU leaves behind.
    private func makeStaleSocket() throws -> String {
        let path = NSTemporaryDirectory() + "/lc-stale-\(UInt32.random(in: 0...UInt32.max)).sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            let bytes = Array(path.utf8.prefix(buffer.count - 1))
            buffer.copyBytes(from: bytes)
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(result == 0, "bind: \(String(cString: strerror(errno)))")
        return path
    }
}
