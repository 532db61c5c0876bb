import Foundation

/// An asynchronous event sent by QEMU (`{"event": …, "data": …, "timestamp": …}`).
public struct QMPEvent: Sendable, Hashable {
    /// The event name, for example `JOB_STATUS_CHANGE`.
    public let name: String
    /// The event's `data` member (`.object([:])` when absent).
    public let data: JSONValue
    /// Seconds since the epoch, from QEMU's `timestamp` member.
    public let timestamp: Double

    public init(name: String, data: JSONValue, timestamp: Double) {
        self.name = name
        self.data = data
        self.timestamp = timestamp
    }
}

/// An error reply from QEMU: `{"error": {"class": …, "desc": …}}`.
public struct QMPCommandError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The command that failed.
    public let command: String
    /// QMP's error class, for example `GenericError` or `DeviceNotFound`.
    public let errorClass: String
    /// QMP's human-readable description.
    public let desc: String

    public init(command: String, errorClass: String, desc: String) {
        self.command = command
        self.errorClass = errorClass
        self.desc = desc
    }

    public var description: String { "\(command) failed: \(errorClass): \(desc)" }
}

/// Everything else that can go wrong talking to a QMP monitor.
public enum QMPClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The socket could not be connected (missing, not a socket, refused, …).
    case connectFailed(path: String, reason: String)
    /// The peer did not greet like QEMU does (`{"QMP": {…}}`) in time, or sent something else.
    case notQMP(path: String, reason: String)
    /// The connection closed or broke; every command in flight fails with this.
    case connectionLost(reason: String)
    /// No reply arrived within the command's timeout.
    case timeout(command: String, seconds: Double)
    /// The peer sent something that breaks the protocol (garbage, a reply with an unknown id, …).
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .connectFailed(let path, let reason): return "cannot connect to QMP socket \(path): \(reason)"
        case .notQMP(let path, let reason): return "\(path) does not speak QMP: \(reason)"
        case .connectionLost(let reason): return "QMP connection lost: \(reason)"
        case .timeout(let command, let seconds): return "QMP command \(command) got no reply within \(seconds) s"
        case .protocolViolation(let what): return "QMP protocol violation: \(what)"
        }
    }
}

/// A live QMP session: commands with replies, and a stream of events.
///
/// The workflow engine depends on this protocol only; `QMPConnection` is the real
/// implementation over a UNIX socket, and tests may provide scripted ones.
public protocol QMPSession: AnyObject, Sendable {
    /// Sends `command` with `arguments` and waits for its reply's `return` member.
    /// Throws `QMPCommandError` for an error reply and `QMPClientError` for anything else.
    /// `timeout` nil means the session's default command timeout.
    func execute(_ command: String, arguments: [String: JSONValue]?, timeout: Double?) async throws -> JSONValue

    /// A new subscription to every event that arrives from now on. The stream finishes
    /// when the connection closes or is lost.
    func events() -> AsyncStream<QMPEvent>

    /// True once the connection has closed or been lost.
    var isClosed: Bool { get }

    /// Closes the connection; commands in flight fail with `connectionLost`.
    func close() async
}

extension QMPSession {
    /// Sends a command with the default timeout.
    @discardableResult
    public func execute(_ command: String, _ arguments: [String: JSONValue]? = nil) async throws -> JSONValue {
        try await execute(command, arguments: arguments, timeout: nil)
    }
}
