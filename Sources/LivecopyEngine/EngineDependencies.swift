import Foundation
import LivecopyModel
import QMP

/// Opens QMP sessions. The CLI passes one that makes real `QMPConnection`s; tests may
/// pass one that makes scripted peers.
public protocol QMPConnector: Sendable {
    func connect(socketPath: String, commandTimeout: Double) async throws -> any QMPSession
}

/// Told what the engine does, for progress display. Calls arrive from many tasks.
public protocol EngineObserver: Sendable {
    /// A disk moved from `from` to its current state.
    func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String)
    /// A running job reported progress.
    func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64)
    /// Something worth telling the operator that changes no state.
    func note(_ disk: DiskRecord?, _ message: String)
}

/// An observer that ignores everything.
public struct SilentObserver: EngineObserver {
    public init() {}
    public func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String) {}
    public func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64) {}
    public func note(_ disk: DiskRecord?, _ message: String) {}
}

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

    func closeAll() async {
        for task in sessions.values {
            if let session = try? await task.value { await session.close() }
        }
        sessions = [:]
    }
}
