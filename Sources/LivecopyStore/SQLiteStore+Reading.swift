// Opening the database to read only, changing nothing and creating no file (`validate`).

import Foundation
import GRDB
import LivecopyModel

extension SQLiteStore {
    /// The database at `path` opened to read only, for a command that must change nothing
    /// and create no file (`validate`):
    ///
    /// - no database at `path` (or nil): an empty one in memory, as a new database would
    ///   be (no plans, no history); nothing is created on disk;
    /// - a database of this livecopy's schema: opened in place. Nothing is written through
    ///   it; SQLite's `-wal` and `-shm` files exist while it is open, as for any reader,
    ///   and are removed as it closes when no other process has the database open (a
    ///   connection opened with SQLite's read-only flag would leave them behind);
    /// - a database of an older schema: copied into memory and migrated there, so the file
    ///   keeps its schema until a command that records plans migrates it;
    /// - a newer schema, or a migration that differs from this livecopy's: refused, as
    ///   every command refuses it.
    ///
    /// Every write through the store this returns is refused (a `StoreError`).
    ///
    /// `neverCheckpointing`: the database is opened with SQLite's read-only flag, so that
    /// closing it never checkpoints the log of another process's writes into the file,
    /// which the last connection to close otherwise does (`watch`, which reopens the
    /// database at every refresh beside a live owner, writes nothing at all); the `-wal`
    /// and `-shm` files are then left as they are.
    public static func readingOnly(at path: String?, busyTimeout: Double = 5,
                                   migrations: [Migration] = Migration.embedded,
                                   neverCheckpointing: Bool = false) throws -> SQLiteStore {
        let migrator = Migrator(migrations: migrations)
        guard let path, FileManager.default.fileExists(atPath: path) else {
            return try inMemory(copying: nil, path: path ?? ":memory:", migrator: migrator)
        }
        var config = Configuration()
        config.busyMode = .timeout(busyTimeout)
        config.foreignKeysEnabled = true
        config.readonly = neverCheckpointing
        do {
            let file = try DatabaseQueue(path: path, configuration: config)
            let applied = try file.read { db in try migrator.appliedVersions(db, path: path) }
            if Set(migrations.map(\.version)).isSubset(of: applied) {
                logger.debug("database opened to read only", metadata: ["path": "\(path)"])
                return SQLiteStore(readingOnly: file, path: path, isCopy: false)
            }
            logger.debug("database of an older schema read into memory", metadata: ["path": "\(path)"])
            return try inMemory(copying: file, path: path, migrator: migrator)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError("cannot read database \(path): \(reason(error))")
        }
    }

    /// A database in memory, holding a copy of `source` if given, migrated to this schema.
    private static func inMemory(copying source: DatabaseQueue?, path: String, migrator: Migrator) throws -> SQLiteStore {
        var config = Configuration()
        config.foreignKeysEnabled = true
        do {
            let memory = try DatabaseQueue(configuration: config)
            if let source { try source.backup(to: memory) }
            try migrator.migrate(memory, path: path)
            return SQLiteStore(readingOnly: memory, path: path, isCopy: true)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError("cannot read database \(path): \(reason(error))")
        }
    }
}
