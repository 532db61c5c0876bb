/// The one error a backend throws. Its kind tells the engine what it may conclude.
public struct BackendError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, as far as the engine must know.
    public enum Kind: Sendable, Hashable {
        /// The hypervisor cannot be reached at the address (no socket, refused, not the
        /// protocol expected). Nothing was done.
        case unreachable
        /// The hypervisor lacks something livecopy needs (too old, a command missing).
        /// Nothing was done.
        case unsupported
        /// The hypervisor answered and refused the operation: nothing was done.
        /// `transient`: the reason may pass by itself (a device busy, a lock held for a
        /// moment), so sending it again later is safe.
        case refused(transient: Bool)
        /// The session broke, or no answer came in time: whether the operation happened
        /// is unknown until the VM is asked again.
        case sessionLost
        /// The hypervisor said something that breaks its own protocol.
        case protocolViolation
        /// Others than livecopy's user can reach the address (`Hypervisor.checkAddress`).
        /// Nothing was done.
        case unsafe
    }

    public let kind: Kind
    /// The operation (`block-stream`, `switchToOverlays`, …), when the error is about one.
    public let operation: String?
    /// The hypervisor's own words for a refusal, without the operation's name.
    public let reason: String
    /// The whole message for the operator (kept as the hypervisor's client says it, which
    /// the tests and operators' scripts match on).
    public let description: String

    public init(_ kind: Kind, operation: String? = nil, reason: String, description: String? = nil) {
        self.kind = kind
        self.operation = operation
        self.reason = reason
        self.description = description ?? reason
    }

    /// Whether the error is about the session, not the copy (unreachable, broken, or
    /// talking nonsense): the copy itself did not fail, and what happened is unknown
    /// until the VM is asked again.
    public var isAboutTheSession: Bool {
        switch kind {
        case .unreachable, .sessionLost, .protocolViolation: return true
        case .unsupported, .refused, .unsafe: return false
        }
    }

    /// Whether the hypervisor refused the operation (nothing was done).
    public var isRefusal: Bool {
        switch kind {
        case .refused: return true
        case .unreachable, .unsupported, .sessionLost, .protocolViolation, .unsafe: return false
        }
    }
}
