// QMP's errors in the backend's words.

import LivecopyBackend
import QMP

/// Turns what the QMP client throws into `BackendError`, keeping QMP's own message.
enum QMPErrors {
    static func backendError(_ error: Error, operation: String?) -> Error {
        switch error {
        case let error as BackendError:
            return error
        case let error as QMPCommandError:
            return BackendError(.refused(transient: isTransient(error)), operation: error.command, reason: error.desc,
                                description: error.description)
        case let error as QMPClientError:
            let kind: BackendError.Kind
            switch error {
            case .connectFailed, .notQMP: kind = .unreachable
            case .connectionLost, .timeout: kind = .sessionLost
            case .protocolViolation: kind = .protocolViolation
            }
            return BackendError(kind, operation: operation, reason: error.description)
        default:
            // Decoding a reply QEMU should not have sent, and the like.
            return error
        }
    }

    /// Runs one QMP exchange, its errors in the backend's words.
    static func mapping<T>(_ operation: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw backendError(error, operation: operation)
        }
    }

    /// Whether QEMU's refusal may go away by itself: its description says a device,
    /// node or image is busy or locked right now. Everything else (an unknown device, a
    /// bad argument, a job in the wrong state) is final.
    static func isTransient(_ error: QMPCommandError) -> Bool {
        guard error.errorClass == "GenericError" else { return false }
        let text = error.desc.lowercased()
        return transientPhrases.contains { text.contains($0) }
    }

    /// Phrases of QEMU's messages for conditions that pass: `Node '…' is busy: …`,
    /// `Device '…' is in use`, `Failed to get "write" lock`, EAGAIN.
    static let transientPhrases = ["is busy", "is in use", "failed to get \"write\" lock", "failed to get shared \"write\" lock",
                                   "resource temporarily unavailable", "try again"]
}
