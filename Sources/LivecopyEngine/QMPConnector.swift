// How the engine opens QMP sessions: the `QMPConnector` protocol the CLI and tests implement.

import QMP

/// Opens QMP sessions. The CLI passes one that makes real `QMPConnection`s; tests may
/// pass one that makes scripted peers.
public protocol QMPConnector: Sendable {
    func connect(socketPath: String, commandTimeout: Double) async throws -> any QMPSession
}
