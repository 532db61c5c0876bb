// libvirt's errors, read right after the failing call, in the backend's words.

import CLibvirt
import LivecopyBackend

/// What libvirt said when a call failed: its error code and message (read on the thread
/// of the failing call: libvirt keeps the last error per thread).
struct LibvirtFailure: Error, CustomStringConvertible {
    /// The operation, as libvirt's API names it (`virDomainBlockPull`, …).
    let operation: String
    /// libvirt's `virErrorNumber`.
    let code: Int32
    let message: String

    var description: String { "\(operation) failed: \(message)" }

    /// The calling thread's last libvirt error, for `operation` that just failed.
    static func last(_ operation: String) -> LibvirtFailure {
        guard let error = virGetLastError() else {
            return LibvirtFailure(operation: operation, code: -1, message: "libvirt gave no reason")
        }
        let message = error.pointee.message.map { String(cString: $0) } ?? "libvirt gave no reason"
        let failure = LibvirtFailure(operation: operation, code: error.pointee.code, message: message)
        virResetLastError()
        return failure
    }

    /// Whether the code is `number`.
    func `is`(_ number: virErrorNumber) -> Bool { code == Int32(number.rawValue) }

    /// The failure as a `BackendError`, whose kind tells the engine what it may conclude.
    var backendError: BackendError {
        BackendError(kind, operation: operation, reason: message, description: description)
    }

    private var kind: BackendError.Kind {
        if isAboutTheConnection { return .sessionLost }
        if self.is(VIR_ERR_NO_DOMAIN) || self.is(VIR_ERR_NO_CONNECT) { return .unreachable }
        if self.is(VIR_ERR_NO_SUPPORT) { return .unsupported }
        // "cannot acquire state change lock", "Timed out during operation": another
        // libvirt job holds the domain for a moment.
        if self.is(VIR_ERR_OPERATION_TIMEOUT) || message.lowercased().contains("cannot acquire state change lock")
            || message.lowercased().contains("is busy") || message.lowercased().contains("is in use") {
            return .refused(transient: true)
        }
        return .refused(transient: false)
    }

    /// The connection to libvirtd broke (the daemon went away, the socket closed): what
    /// happened to the call is unknown.
    var isAboutTheConnection: Bool {
        self.is(VIR_ERR_RPC) || self.is(VIR_ERR_SYSTEM_ERROR) && message.contains("end of file")
            || message.contains("client socket is closed") || message.contains("Cannot write data")
            || message.contains("Broken pipe") || message.contains("connection closed")
    }
}
