// Small helpers of `QMPConnection`: checking the socket path, wording connect errors,
// and turning seconds into NIO time amounts and message text.

import Foundation
import NIOCore

extension QMPConnection {
    /// Checks that `path` exists and is a socket, so the common mistakes get clear messages.
    static func checkSocket(at path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let code = errno
            let reason = code == ENOENT ? "no such file" : String(cString: strerror(code))
            throw QMPClientError.connectFailed(path: path, reason: reason)
        }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw QMPClientError.connectFailed(path: path, reason: "not a socket")
        }
    }

    /// The system's wording for a failed connect ("Connection refused"), when there is one.
    static func describeConnectError(_ error: Error) -> String {
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode))
        }
        if let error = error as? SocketAddressError, case .unixDomainSocketPathTooLong = error {
            return "the path is longer than a UNIX socket address allows"
        }
        if let error = error as? ChannelError, case .connectTimeout(let amount) = error {
            return "connect timed out after \(formatSeconds(Double(amount.nanoseconds) / 1e9)) s"
        }
        return String(describing: error)
    }

    /// Seconds as a NIO `TimeAmount`, clamped to [0, 10⁹ s] (NaN counts as 0).
    static func timeAmount(seconds: Double) -> TimeAmount {
        let clamped = seconds.isNaN ? 0 : min(max(seconds, 0), 1e9)
        return .nanoseconds(Int64((clamped * 1e9).rounded()))
    }
}

/// Seconds for messages: `5` rather than `5.0`, `0.3` as is.
func formatSeconds(_ seconds: Double) -> String {
    if seconds.isFinite, seconds == seconds.rounded(), abs(seconds) < 1e15 {
        return String(Int64(seconds))
    }
    return String(seconds)
}
