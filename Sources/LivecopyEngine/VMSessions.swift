// The engine's VM sessions, one per VM address (`VMAddress` in its stored form).

import LivecopyBackend

/// One session per VM, shared by all of that VM's disks: QEMU serves one client per
/// monitor socket, so a second connection would wait forever.
public actor VMSessions {
    /// The hypervisor the sessions are opened through.
    public nonisolated let hypervisor: any Hypervisor
    private let commandTimeout: Double
    private var sessions: [String: Task<any VMSession, Error>] = [:]

    public init(hypervisor: any Hypervisor, commandTimeout: Double) {
        self.hypervisor = hypervisor
        self.commandTimeout = commandTimeout
    }

    /// The live session for the VM at `address`, connecting (once, even with concurrent
    /// callers) if needed, with `commandTimeout` (else the pool's). Engines sharing the
    /// pool (`serve`) share the connection, and the timeout of the one that opened it.
    func session(for address: String, commandTimeout ownTimeout: Double? = nil) async throws -> any VMSession {
        if let pending = sessions[address], let session = try? await pending.value, !session.isClosed {
            return session
        }
        let hypervisor = self.hypervisor
        let timeout = ownTimeout ?? commandTimeout
        let task = Task { try await hypervisor.connect(to: address, commandTimeout: timeout) }
        sessions[address] = task
        do {
            return try await task.value
        } catch {
            sessions[address] = nil
            throw error
        }
    }

    /// The session already open for `address`, if any (never connects).
    func existing(for address: String) async -> (any VMSession)? {
        guard let pending = sessions[address], let session = try? await pending.value, !session.isClosed else { return nil }
        return session
    }

    public func closeAll() async {
        for task in sessions.values {
            if let session = try? await task.value { await session.close() }
        }
        sessions = [:]
    }
}
