// The engine's QMP sessions, one per VM monitor socket.

import QMP

/// One QMP session per VM socket, shared by all of that VM's disks: QEMU serves one
/// client per monitor socket, so a second connection would wait forever.
actor VMSessions {
    private let connector: any QMPConnector
    private let commandTimeout: Double
    private var sessions: [String: Task<any QMPSession, Error>] = [:]

    init(connector: any QMPConnector, commandTimeout: Double) {
        self.connector = connector
        self.commandTimeout = commandTimeout
    }

    /// The live session for `socket`, connecting (once, even with concurrent callers) if needed.
    func session(for socket: String) async throws -> any QMPSession {
        if let pending = sessions[socket], let session = try? await pending.value, !session.isClosed {
            return session
        }
        let connector = self.connector
        let timeout = commandTimeout
        let task = Task { try await connector.connect(socketPath: socket, commandTimeout: timeout) }
        sessions[socket] = task
        do {
            return try await task.value
        } catch {
            sessions[socket] = nil
            throw error
        }
    }

    /// The session already open for `socket`, if any (never connects).
    func existing(for socket: String) async -> (any QMPSession)? {
        guard let pending = sessions[socket], let session = try? await pending.value, !session.isClosed else { return nil }
        return session
    }

    func closeAll() async {
        for task in sessions.values {
            if let session = try? await task.value { await session.close() }
        }
        sessions = [:]
    }
}
