import Foundation

/// The PostgreSQL server the fleet tests use: the one `LIVECOPY_TEST_POSTGRES` names
/// (`scripts/postgres start` prints it, and `scripts/test` starts one), reached with the
/// password in `LIVECOPY_TEST_POSTGRES_PASSWORD_FILE`. Each test gets a database of its
/// own (`createDatabase`), made and dropped with `psql`.
public enum PostgresServer {
    /// The server's URL (user, host, port, maintenance database; no password).
    public static var url: String? {
        ProcessInfo.processInfo.environment["LIVECOPY_TEST_POSTGRES"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The file holding the password.
    public static var passwordFile: String? {
        ProcessInfo.processInfo.environment["LIVECOPY_TEST_POSTGRES_PASSWORD_FILE"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The cluster's directory, for `restart` (scripts/postgres's DIR: the password file's).
    public static var clusterDirectory: String? {
        passwordFile.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path }
    }

    /// What livecopy processes need in their environment to log in.
    public static var environment: [String: String] {
        passwordFile.map { ["LIVECOPY_DB_PASSWORD_FILE": $0] } ?? [:]
    }

    /// Nil when the server answers; else why not, in one line.
    static var missing: String? {
        guard let url else { return "LIVECOPY_TEST_POSTGRES is not set (scripts/postgres start prints it; scripts/test sets it)" }
        guard QEMUTools.find("psql") != nil else { return "psql not on PATH (Debian's postgresql-client)" }
        guard let result = try? psql(url, "SELECT 1"), result.status == 0 else {
            return "psql cannot reach \(url): \((try? psql(url, "SELECT 1"))?.stderr.trimmingCharacters(in: .whitespacesAndNewlines) ?? "")"
        }
        return nil
    }

    /// A new, empty database on the server; returns its URL (the server's, with the
    /// database's name). `dropDatabase` removes it.
    public static func createDatabase(prefix: String) throws -> String {
        guard let url else { throw PostgresServerError(message: "LIVECOPY_TEST_POSTGRES is not set") }
        let name = "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())".replacingOccurrences(of: "-", with: "_")
        let result = try psql(url, "CREATE DATABASE \(name)")
        guard result.status == 0 else { throw PostgresServerError(message: "CREATE DATABASE \(name): \(result.stderr)") }
        return url.replacingLastPathComponent(with: name)
    }

    /// Drops the database `databaseURL` names, closing its sessions first.
    public static func dropDatabase(_ databaseURL: String) {
        guard let url else { return }
        let name = URL(string: databaseURL)?.lastPathComponent ?? ""
        _ = try? psql(url, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// Restarts the server (`scripts/postgres restart`): every connection is cut.
    public static func restart() throws {
        guard let directory = clusterDirectory else { throw PostgresServerError(message: "no cluster directory") }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/postgres").path
        // Output to a file, not a pipe: the restarted server must hold nothing this process
        // waits on (scripts/postgres closes what it inherits, and this keeps it so).
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("lc-pg-restart-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let output = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: script)
        process.arguments = ["restart", directory]
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try? output.close()
        guard process.terminationStatus == 0 else {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            throw PostgresServerError(message: "scripts/postgres restart exited with \(process.terminationStatus): \(text)")
        }
    }

    /// Runs one SQL command with psql against `url`; psql's output and status.
    public static func psql(_ url: String, _ sql: String) throws -> (status: Int32, stdout: String, stderr: String) {
        var environment = ProcessInfo.processInfo.environment
        if let passwordFile, let password = try? String(contentsOfFile: passwordFile, encoding: .utf8) {
            environment["PGPASSWORD"] = password.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: QEMUTools.find("psql") ?? "/usr/bin/psql")
        process.arguments = ["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql]
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }
}

/// A failure of the test server's set-up.
public struct PostgresServerError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

private extension String {
    /// This URL with its path (the database) replaced by `/name`, its query kept.
    func replacingLastPathComponent(with name: String) -> String {
        guard var components = URLComponents(string: self) else { return self }
        components.path = "/" + name
        return components.string ?? self
    }
}
