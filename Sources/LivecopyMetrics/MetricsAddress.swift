// `MetricsAddress`: the HOST:PORT of `--metrics`, checked.

import NIOCore

/// Where the metrics endpoint listens: an IP address (IPv6 in brackets) or `localhost`,
/// and a port (0: one the system picks).
public struct MetricsAddress: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let port: Int

    /// Parses `127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464` or `localhost:9464`; throws a
    /// one-line reason otherwise.
    public init(parsing text: String) throws(MetricsAddressError) {
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw MetricsAddressError(text: text, reason: "an IPv6 address is written [ADDRESS]:PORT")
            }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw MetricsAddressError(text: text, reason: "no port") }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            if host.contains(":") {
                throw MetricsAddressError(text: text, reason: "an IPv6 address is written [ADDRESS]:PORT")
            }
        }
        guard !port.isEmpty, port.allSatisfy(\.isASCII), port.allSatisfy(\.isNumber), port.count <= 5,
              let number = Int(port), number <= 65535 else {
            throw MetricsAddressError(text: text, reason: "the port must be a number from 0 to 65535")
        }
        guard host == "localhost" || (try? SocketAddress(ipAddress: String(host), port: number)) != nil else {
            throw MetricsAddressError(text: text, reason: host.isEmpty ? "no host" : "'\(host)' is not an IP address nor localhost")
        }
        self.host = String(host)
        self.port = number
    }

    public var description: String { "\(Self.bracketed(host)):\(port)" }

    /// `host` as written before `:PORT` (in a URL too): an IPv6 address in brackets.
    public static func bracketed(_ host: String) -> String {
        host.contains(":") ? "[\(host)]" : host
    }
}

/// A `--metrics` value that is not HOST:PORT.
public struct MetricsAddressError: Error, CustomStringConvertible, Sendable {
    public let text: String
    public let reason: String

    public var description: String {
        "--metrics '\(text)': \(reason) (expected HOST:PORT with an IP address or localhost, e.g. 127.0.0.1:9464 or [::1]:9464)"
    }
}
