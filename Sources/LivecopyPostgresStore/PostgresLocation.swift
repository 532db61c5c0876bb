// Where the fleet store is: a `postgres://` URL (never with a password in it), the password
// from a file or the environment, and the TLS mode.

import Foundation
import LivecopyModel

/// A PostgreSQL database to open: `postgres://user@host[:port]/database[?sslmode=…&sslrootcert=…]`
/// (also `postgresql://`). The password is never part of the URL: it comes from, in order,
/// an explicit password file (`--db-password-file`), the file named by
/// `LIVECOPY_DB_PASSWORD_FILE`, or `LIVECOPY_DB_PASSWORD`. Every refusal is one line.
public struct PostgresLocation: Sendable, Equatable {
    /// How the connection uses TLS (`sslmode`).
    public enum TLSMode: String, Sendable, CaseIterable {
        /// No TLS.
        case disable
        /// TLS when the server offers it, unverified (what libpq does without `sslmode`).
        case prefer
        /// TLS or no connection; the certificate is not verified.
        case require
        /// TLS with the server's certificate verified against `sslrootcert` (or the system's
        /// roots) and its name against the host.
        case verifyFull = "verify-full"
    }

    public let user: String
    public let host: String
    public let port: Int
    public let database: String
    public let tlsMode: TLSMode
    /// `sslrootcert`: the CA certificate file (PEM) that `verify-full` trusts.
    public let rootCertificate: String?
    public let password: String?

    /// The query parameters a URL may carry.
    static let knownParameters: Set<String> = ["sslmode", "sslrootcert"]

    /// Whether `text` is a PostgreSQL URL (rather than a SQLite file's path).
    public static func isPostgresURL(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    public init(url: String, passwordFile: String?, environment: [String: String]) throws {
        guard Self.isPostgresURL(url), let components = URLComponents(string: url) else {
            throw StoreError("not a PostgreSQL URL (postgres://user@host[:port]/database): \(Self.withoutPassword(url))")
        }
        if components.password != nil {
            throw StoreError(
                "the database URL must not hold a password; use --db-password-file, LIVECOPY_DB_PASSWORD_FILE or LIVECOPY_DB_PASSWORD")
        }
        guard let user = components.user.flatMap({ $0.removingPercentEncoding }), !user.isEmpty else {
            throw StoreError("the database URL names no user (postgres://user@host/database): \(url)")
        }
        guard let host = components.host, !host.isEmpty else {
            throw StoreError("the database URL names no host: \(url)")
        }
        let database = String(components.path.drop(while: { $0 == "/" })).removingPercentEncoding ?? ""
        guard !database.isEmpty, !database.contains("/") else {
            throw StoreError("the database URL names no database (postgres://user@host/database): \(url)")
        }
        var tlsMode = TLSMode.prefer
        var rootCertificate: String?
        for item in components.queryItems ?? [] {
            guard Self.knownParameters.contains(item.name) else {
                throw StoreError("unknown database URL parameter '\(item.name)' (known: sslmode, sslrootcert)")
            }
            let value = item.value ?? ""
            if item.name == "sslmode" {
                guard let mode = TLSMode(rawValue: value), mode != .prefer else {
                    throw StoreError("bad sslmode '\(value)' in the database URL (disable, require or verify-full)")
                }
                tlsMode = mode
            } else {
                guard !value.isEmpty else { throw StoreError("sslrootcert in the database URL names no file") }
                rootCertificate = value
            }
        }
        self.user = user
        self.host = host
        self.port = components.port ?? 5432
        self.database = database
        self.tlsMode = tlsMode
        self.rootCertificate = rootCertificate
        self.password = try Self.password(file: passwordFile, environment: environment)
    }

    /// The same server and credentials, another database (the tests' throwaway databases).
    public func with(database: String) -> PostgresLocation {
        PostgresLocation(user: user, host: host, port: port, database: database, tlsMode: tlsMode,
                         rootCertificate: rootCertificate, password: password)
    }

    private init(user: String, host: String, port: Int, database: String, tlsMode: TLSMode, rootCertificate: String?,
                 password: String?) {
        self.user = user
        self.host = host
        self.port = port
        self.database = database
        self.tlsMode = tlsMode
        self.rootCertificate = rootCertificate
        self.password = password
    }

    /// The URL, for messages: never a password (the URL holds none).
    public var redacted: String {
        var parameters: [String] = []
        if tlsMode != .prefer { parameters.append("sslmode=\(tlsMode.rawValue)") }
        if let rootCertificate { parameters.append("sslrootcert=\(rootCertificate)") }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "postgres://\(user)@\(hostPart):\(port)/\(database)" + (parameters.isEmpty ? "" : "?" + parameters.joined(separator: "&"))
    }

    /// The password, from the first source given: the explicit file, `LIVECOPY_DB_PASSWORD_FILE`,
    /// `LIVECOPY_DB_PASSWORD`; nil when none is (trust or peer authentication).
    static func password(file: String?, environment: [String: String]) throws -> String? {
        if let file = file ?? environment["LIVECOPY_DB_PASSWORD_FILE"], !file.isEmpty {
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                throw StoreError("cannot read the database password file \(file)")
            }
            var password = text
            while password.hasSuffix("\n") || password.hasSuffix("\r") { password.removeLast() }
            return password
        }
        return environment["LIVECOPY_DB_PASSWORD"]
    }

    /// `url` with any password in it replaced, for a message about a URL refused.
    static func withoutPassword(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "…"
        return components.string ?? "(unreadable URL)"
    }
}
