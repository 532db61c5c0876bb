import Foundation

/// An error reply from QEMU (`{"error": {"class": …, "desc": …}, "id": …}`), before it is
/// tied to the command that caused it (see `QMPCommandError`).
public struct QMPErrorReply: Error, Sendable, Hashable {
    /// QMP's error class, for example `GenericError` or `CommandNotFound`.
    public let errorClass: String
    /// QMP's human-readable description.
    public let desc: String

    public init(errorClass: String, desc: String) {
        self.errorClass = errorClass
        self.desc = desc
    }
}

/// One message from a QMP server, decoded from one line of the wire.
///
/// QEMU writes one compact JSON object per line. Every object is one of:
/// - the greeting `{"QMP": {"version": …, "capabilities": […]}}`, sent once on connect;
/// - a reply `{"return": …, "id": …}` or `{"error": {"class": …, "desc": …}, "id": …}`;
/// - an event `{"event": NAME, "data": {…}, "timestamp": {"seconds": …, "microseconds": …}}`.
///
/// `parse(line:)` is pure and total: it never crashes, whatever the input, and throws
/// `QMPClientError.protocolViolation` for anything that is not one of the above.
public enum QMPMessage: Sendable, Hashable {
    /// The greeting; the associated value is the `QMP` member (version and capabilities).
    case greeting(JSONValue)
    /// A reply to the command that was sent with `id`.
    case reply(id: String, result: Result<JSONValue, QMPErrorReply>)
    /// An asynchronous event.
    case event(QMPEvent)

    /// The longest line accepted, in bytes (16 MiB). QMP replies are small; a longer line
    /// means the peer is broken or hostile.
    public static let maxLineLength = 16 * 1024 * 1024

    /// The deepest nesting of arrays and objects accepted. Deep enough for any real reply
    /// (a backing chain nests one level per image), shallow enough that decoding cannot
    /// exhaust a thread's stack.
    public static let maxNestingDepth = 200

    /// Parses one line (without or with its trailing `"\r\n"`).
    public static func parse(line: String) throws -> QMPMessage {
        try parse(line: Array(line.utf8))
    }

    /// Parses one line (without or with its trailing `"\r\n"`).
    public static func parse(line: Substring) throws -> QMPMessage {
        try parse(line: Array(line.utf8))
    }

    /// Parses one line of bytes (without or with its trailing `"\r\n"`).
    public static func parse<Bytes: Collection>(line bytes: Bytes) throws -> QMPMessage where Bytes.Element == UInt8 {
        try parse(line: Array(bytes))
    }

    /// Parses one line of bytes (without or with its trailing `"\r\n"`).
    public static func parse(line bytes: [UInt8]) throws -> QMPMessage {
        guard bytes.count <= maxLineLength else {
            throw QMPClientError.protocolViolation("line of \(bytes.count) bytes exceeds the limit of \(maxLineLength)")
        }
        var end = bytes.endIndex
        if end > 0, bytes[end - 1] == UInt8(ascii: "\n") { end -= 1 }
        if end > 0, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        let line = bytes[..<end]
        guard line.contains(where: { !isJSONWhitespace($0) }) else {
            throw QMPClientError.protocolViolation("empty line")
        }
        let depth = nestingDepth(of: line)
        guard depth <= maxNestingDepth else {
            throw QMPClientError.protocolViolation(
                "JSON nested \(depth) levels deep, over the limit of \(maxNestingDepth): \(excerpt(line))")
        }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(line))
        } catch {
            throw QMPClientError.protocolViolation("not valid JSON: \(excerpt(line))")
        }
        return try classify(value, line: line)
    }

    /// Sorts a decoded object into greeting, reply or event.
    private static func classify(_ value: JSONValue, line: ArraySlice<UInt8>) throws -> QMPMessage {
        guard case .object(let members) = value else {
            throw QMPClientError.protocolViolation("expected a JSON object, got \(kind(of: value)): \(excerpt(line))")
        }
        if let greeting = members["QMP"] {
            guard case .object = greeting else {
                throw QMPClientError.protocolViolation("greeting member QMP is not an object: \(excerpt(line))")
            }
            return .greeting(greeting)
        }
        if let name = members["event"] {
            guard case .string(let name) = name else {
                throw QMPClientError.protocolViolation("event name is not a string: \(excerpt(line))")
            }
            return .event(QMPEvent(
                name: name,
                data: members["data"] ?? .object([:]),
                timestamp: timestamp(members["timestamp"])))
        }
        let returned = members["return"]
        let failed = members["error"]
        guard returned != nil || failed != nil else {
            throw QMPClientError.protocolViolation("neither greeting, reply nor event: \(excerpt(line))")
        }
        guard returned == nil || failed == nil else {
            throw QMPClientError.protocolViolation("reply has both return and error: \(excerpt(line))")
        }
        guard let idValue = members["id"] else {
            throw QMPClientError.protocolViolation("reply without an id: \(excerpt(line))")
        }
        guard case .string(let id) = idValue else {
            throw QMPClientError.protocolViolation("reply id is not a string: \(excerpt(line))")
        }
        if let returned {
            return .reply(id: id, result: .success(returned))
        }
        guard let errorClass = failed?["class"]?.stringValue, let desc = failed?["desc"]?.stringValue else {
            throw QMPClientError.protocolViolation("error reply without class and desc strings: \(excerpt(line))")
        }
        return .reply(id: id, result: .failure(QMPErrorReply(errorClass: errorClass, desc: desc)))
    }

    /// QEMU's `{"seconds": S, "microseconds": U}` as seconds since the epoch; 0 when absent or odd
    /// (a timestamp is informational and not worth rejecting an event over).
    private static func timestamp(_ value: JSONValue?) -> Double {
        guard let value else { return 0 }
        let seconds = number(value["seconds"]) ?? 0
        let microseconds = number(value["microseconds"]) ?? 0
        return seconds + microseconds / 1_000_000
    }

    private static func number(_ value: JSONValue?) -> Double? {
        switch value {
        case .int(let number): return Double(number)
        case .double(let number): return number
        case .none, .null, .bool, .string, .array, .object: return nil
        }
    }

    /// The deepest nesting of `[` and `{` outside strings. It does not validate; it only bounds
    /// the recursion the real decoder will need.
    private static func nestingDepth(of bytes: ArraySlice<UInt8>) -> Int {
        var depth = 0
        var deepest = 0
        var inString = false
        var escaped = false
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""):
                inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                deepest = max(deepest, depth)
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                depth = max(0, depth - 1)
            default:
                break
            }
        }
        return deepest
    }

    private static func isJSONWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }

    private static func kind(of value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    /// The start of a line, printable, for error messages.
    static func excerpt<Bytes: Collection>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let limit = 120
        let text = String(decoding: bytes.prefix(limit), as: UTF8.self)
        return bytes.count > limit ? text + "… (\(bytes.count) bytes)" : text
    }
}
