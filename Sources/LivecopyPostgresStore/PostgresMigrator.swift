// The fleet store's migrations: `Migrations/postgres/NNNN_name.sql`, embedded as
// `EmbeddedFiles.postgresMigrations` (a list of their own: SQLite's migrator never sees
// them, nor this one SQLite's).
//
// Each is checksummed (SHA-256 of the file's bytes, hex) and recorded in
// `schema_migrations (version, name, checksum, applied_at)`, applied forward only, each in
// its own transaction that first takes `pg_advisory_xact_lock(migrationLockKey)` and then
// checks the version is still unapplied: two agents starting at once apply each migration
// once (the second waits for the first's commit, then skips it). An applied migration
// whose checksum differs from the file's, or a version this binary does not know (a newer
// livecopy wrote the database), is refused in one line. Migrations/postgres/README.md
// says the same for whoever adds a file.

import Crypto
import EmbeddedFiles
import Foundation
import LivecopyModel
import PostgresNIO

/// One numbered migration of the fleet store, `Migrations/postgres/NNNN_name.sql`.
public struct PostgresMigration: Sendable, Equatable {
    public let version: Int
    public let name: String
    public let sql: String

    /// SHA-256 of the file's text, in hex: detects a shipped migration that was edited.
    public var checksum: String {
        SHA256.hash(data: Data(sql.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Parses the file `0001_fleet.sql` into version 1, name `fleet`.
    public init?(fileName: String, sql: String) {
        guard let parsed = MigrationFileName(fileName) else { return nil }
        self.version = parsed.version
        self.name = parsed.name
        self.sql = sql
    }

    /// The file's statements, one by one: the extended query protocol postgres-nio speaks
    /// takes one statement at a time. Split at each `;` outside a quoted string or
    /// identifier and outside a `--` comment (a migration holds no dollar-quoted bodies).
    public var statements: [String] {
        var result: [String] = []
        var current = ""
        var quote: Character?
        var inComment = false
        var previous: Character?
        for character in sql {
            if inComment {
                if character == "\n" { inComment = false }
                previous = character
                continue
            }
            if let open = quote {
                current.append(character)
                if character == open { quote = nil }
                previous = character
                continue
            }
            switch character {
            case "-" where previous == "-":
                current.removeLast()
                inComment = true
            case "'", "\"":
                quote = character
                current.append(character)
            case ";":
                let statement = current.trimmingCharacters(in: .whitespacesAndNewlines)
                if !statement.isEmpty { result.append(statement) }
                current = ""
            default:
                current.append(character)
            }
            previous = inComment ? nil : character
        }
        let last = current.trimmingCharacters(in: .whitespacesAndNewlines)
        if !last.isEmpty { result.append(last) }
        return result
    }

    /// The fleet store's migrations compiled into this binary, in order.
    public static var embedded: [PostgresMigration] {
        EmbeddedFiles.postgresMigrations.compactMap { PostgresMigration(fileName: $0.name, sql: $0.contents) }
            .sorted { $0.version < $1.version }
    }
}

/// Applies the fleet store's migrations (see the top of this file).
struct PostgresMigrator {
    let migrations: [PostgresMigration]
    /// The database's redacted URL, for messages.
    let location: String

    /// The advisory lock key every migration transaction takes ("livecopy" in ASCII).
    static let migrationLockKey: Int64 = 0x6c69_7665_636f_7079

    func migrate(_ store: PostgresStore) throws {
        try store.transaction(receipt: false) { statements in
            try statements.execute("SELECT pg_advisory_xact_lock(\(Self.migrationLockKey))")
            try statements.execute("""
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    checksum TEXT NOT NULL,
                    applied_at DOUBLE PRECISION NOT NULL)
                """)
        }
        for migration in migrations {
            try store.transaction(receipt: false) { statements in
                try statements.execute("SELECT pg_advisory_xact_lock(\(Self.migrationLockKey))")
                let applied = try checkApplied(statements)
                guard !applied.contains(migration.version) else { return }
                store.logger.debug("applying migration", metadata: ["database": "\(location)",
                                                                    "migration": "\(migration.version)_\(migration.name)"])
                for statement in migration.statements {
                    try statements.execute(PostgresQuery(unsafeSQL: statement))
                }
                try statements.execute("""
                    INSERT INTO schema_migrations (version, name, checksum, applied_at)
                    VALUES (\(migration.version), \(migration.name), \(migration.checksum), \(Date().timeIntervalSince1970))
                    """)
            }
        }
        // A database that is already up to date is still checked (a newer or edited schema).
        try store.read { statements in _ = try checkApplied(statements) }
    }

    /// The versions applied, each checked against the one built in.
    private func checkApplied(_ statements: Statements) throws -> Set<Int> {
        let known = Dictionary(uniqueKeysWithValues: migrations.map { ($0.version, $0) })
        let newest = migrations.last?.version ?? 0
        var versions: Set<Int> = []
        for row in try statements.query("SELECT version, checksum FROM schema_migrations ORDER BY version") {
            let (version, checksum) = try row.decode((Int32, String).self)
            guard let migration = known[Int(version)] else {
                throw StoreError(
                    "database \(location) was written by a newer livecopy (schema version \(version), this one knows up to \(newest)); upgrade livecopy")
            }
            guard checksum == migration.checksum else {
                throw StoreError(
                    "database \(location): migration \(version)_\(migration.name) differs from the one applied (checksum \(checksum), now \(migration.checksum))")
            }
            versions.insert(Int(version))
        }
        return versions
    }
}
