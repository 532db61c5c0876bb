// The QMP backend: QEMU's monitor, reached over its UNIX socket.

import LivecopyBackend
import QMP

/// QEMU through its QMP monitor, one socket per VM. Each session is checked at connect:
/// QEMU's version and the commands livecopy sends (`QMPRequirements`).
public struct QMPHypervisor: Hypervisor {
    let connector: any QMPConnector

    public init(connector: any QMPConnector = RealQMPConnector()) {
        self.connector = connector
    }

    public var name: String { "QMP" }

    public func checkAddress(_ address: String, allowShared: Bool) throws {
        try QMPSocketCheck.check(address, allowShared: allowShared)
    }

    public func connect(to address: String, commandTimeout: Double) async throws -> any VMSession {
        let session: any QMPSession
        do {
            session = try await connector.connect(socketPath: address, commandTimeout: commandTimeout)
        } catch {
            throw QMPErrors.backendError(error, operation: nil)
        }
        do {
            try await QMPRequirements.check(session, address: address)
        } catch {
            await session.close()
            throw QMPErrors.backendError(error, operation: nil)
        }
        return QMPVMSession(session)
    }
}
