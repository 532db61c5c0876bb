import LivecopyEngine
import QMP

/// Connects to real QMP sockets.
struct RealQMPConnector: QMPConnector {
    func connect(socketPath: String, commandTimeout: Double) async throws -> any QMPSession {
        try await QMPConnection.connect(socketPath: socketPath, connectTimeout: 5, commandTimeout: commandTimeout)
    }
}
