import EmbeddedFiles
import Foundation
import GRDB
import Logging
import LivecopyModel

/// One numbered schema migration, `Migrations/NNNN_name.sql`.
public struct Migration: Sendable, Equatable {
    public let version: Int
    public let name: String
    public let sql: String

    /// The line that marks a migration rebuilding a table (run with foreign keys off).
    static let rebuildsTablesMarker = "-- livecopy-migration: rebuilds tables"

    /// FNV-1a 64 of the file's text: detects a shipped migration that was edited.
    public var checksum: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in sql.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(format: "%016llx", hash)
    }

    /// Parses the file `0003_add_lease.sql` into version 3, name `add_lease`.
    public init?(fileName: String, sql: String) {
        guard let parsed = MigrationFileName(fileName) else { return nil }
        self.version = parsed.version
        self.name = parsed.name
        self.sql = sql
    }

    /// The migrations compiled into this binary, in order.
    public static var embedded: [Migration] {
        EmbeddedFiles.migrations.compactMap { Migration(fileName: $0.name, sql: $0.contents) }
            .sorted { $0.version < $1.version }
    }
}

/// Applies migrations forward only, each in its own transaction, recording each one
/// with its checksum in `schema_migrations`.
struct Migrator {
    let migrations: [Migration]

    /// The versions applied to the database, each checked against the one built in:
    /// throws for a version this livecopy does not know (a newer schema) or one that
    /// differs from its file. Reads only; no table is made.
    func appliedVersions(_ db: Database, path: String) throws -> Set<Int> {
        guard try db.tableExists("schema_migrations") else { return [] }
        let applied = try Row.fetchAll(db, sql: "SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        let known = Dictionary(uniqueKeysWithValues: migrations.map { ($0.version, $0) })
        let newest = migrations.last?.version ?? 0
        for row in applied {
            let version: Int = try row.decode(forColumn: "version")
            guard let migration = known[version] else {
                throw StoreError(
                    "database \(path) was written by a newer livecopy (schema version \(version), this one knows up to \(newest)); upgrade livecopy")
            }
            let checksum: String = try row.decode(forColumn: "checksum")
            guard checksum == migration.checksum else {
                throw StoreError(
                    "database \(path): migration \(version)_\(migration.name) differs from the one applied (checksum \(checksum), now \(migration.checksum))")
            }
        }
        return Set(try applied.map { try $0.decode(Int.self, forColumn: "version") })
    }

    /// Each migration runs in its own IMMEDIATE transaction that first checks it is still
    /// unapplied: two processes opening a new database at once cannot both apply one (the
    /// second waits for the first's commit, then skips it).
    func migrate(_ writer: any DatabaseWriter, path: String) throws {
        try writer.writeWithoutTransaction { db in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    checksum TEXT NOT NULL,
                    applied_at REAL NOT NULL)
                """)
            let done = try appliedVersions(db, path: path)
            for migration in migrations where !done.contains(migration.version) {
                // Each migration is written back into the database file and the WAL emptied
                // after its commit: a new database's whole schema (a table rebuilt on the way)
                // would otherwise pile up in the WAL, several hundred KiB, until the next
                // checkpoint. Best effort: a reader may hold the WAL.
                defer { _ = try? Row.fetchAll(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
                // A migration that rebuilds a table (SQLite cannot change a CHECK constraint in
                // place) runs with foreign keys off, as SQLite's own procedure says: dropping
                // the old table must not cascade into the rows that refer to it. The keys are
                // checked before its commit, and switched on again after it.
                let rebuilds = migration.sql.contains(Migration.rebuildsTablesMarker)
                if rebuilds { try db.execute(sql: "PRAGMA foreign_keys = OFF") }
                defer { if rebuilds { try? db.execute(sql: "PRAGMA foreign_keys = ON") } }
                try db.inTransaction(.immediate) {
                    let applied = try Bool.fetchOne(
                        db, sql: "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?)", arguments: [migration.version]) ?? false
                    guard !applied else { return .commit }
                    logger.debug("applying migration", metadata: ["path": "\(path)", "migration": "\(migration.version)_\(migration.name)"])
                    try db.execute(sql: migration.sql)
                    if rebuilds, let broken = try Row.fetchOne(db, sql: "PRAGMA foreign_key_check") {
                        throw StoreError("database \(path): migration \(migration.version)_\(migration.name) broke a foreign key (\(broken))")
                    }
                    try db.execute(
                        sql: "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                        arguments: [migration.version, migration.name, migration.checksum, Date().timeIntervalSince1970])
                    return .commit
                }
            }
        }
    }
}
