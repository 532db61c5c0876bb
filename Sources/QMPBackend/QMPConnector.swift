// How the QMP backend opens QMP sessions: real sockets, or scripted peers in tests.

import QMP

/// Opens QMP sessions. `RealQMPConnector` makes real `QMPConnection`s; tests may pass
/// one that makes scripted peers.
public protocol QMPConnector: Sendable {
    func connect(socketPath: String, commandTimeout: Double) async throws -> any QMPSession
}

/// Connects to real QMP sockets.
public struct RealQMPConnector: QMPConnector {
    public init() {}

    public func connect(socketPath: String, commandTimeout: Double) async throws -> any QMPSession {
        try await QMPConnection.connect(socketPath: socketPath, connectTimeout: 5, commandTimeout: commandTimeout)
    }
}
