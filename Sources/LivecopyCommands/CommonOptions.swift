import ArgumentParser
import Foundation
import LivecopyModel
import LivecopyEngine
import LivecopyPostgresStore
import LivecopyStore
import Logging

/// Options every subcommand takes.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "The state database: a SQLite file, or a fleet store's postgres://USER@HOST[:PORT]/DATABASE URL.",
        discussion: "Default: $LIVECOPY_DB, else /var/lib/livecopy/livecopy.db. See docs/fleet.md.",
        valueName: "path|url"))
    var db: String?

    @Option(name: .long, help: ArgumentHelp(
        "A fleet store's password, read from this file.",
        discussion: "Default: $LIVECOPY_DB_PASSWORD_FILE, else $LIVECOPY_DB_PASSWORD.", valueName: "path"))
    var dbPasswordFile: String?

    /// Whether the database in force is a fleet store (a PostgreSQL URL).
    var isFleetStore: Bool { PostgresLocation.isPostgresURL(database.path) }

    /// The database path in force, and where it comes from (for messages).
    var database: (path: String, source: String) {
        if let db { return (db, "--db") }
        if let fromEnvironment = ProcessInfo.processInfo.environment["LIVECOPY_DB"], !fromEnvironment.isEmpty {
            return (fromEnvironment, "LIVECOPY_DB")
        }
        return ("/var/lib/livecopy/livecopy.db", "the default")
    }

    @Option(name: .long, help: ArgumentHelp(
        "What to log on stderr, besides livecopy's own messages: trace, debug, info, notice, warning, error or critical.",
        discussion: "Default: $LIVECOPY_LOG_LEVEL, else warning.", valueName: "level"))
    var logLevel: String?

    /// The log level in force: `--log-level`, else $LIVECOPY_LOG_LEVEL, else warning; nil
    /// when the one in force names no level (which `validate` refuses).
    var logLevelInForce: Logger.Level? {
        if let logLevel { return Logger.Level(rawValue: logLevel) }
        if let fromEnvironment = ProcessInfo.processInfo.environment["LIVECOPY_LOG_LEVEL"], !fromEnvironment.isEmpty {
            return Logger.Level(rawValue: fromEnvironment)
        }
        return .warning
    }

    func validate() throws {
        if let db, db.isEmpty { throw ValidationError("--db must not be empty") }
        if dbPasswordFile != nil && !isFleetStore {
            printStderr("--db-password-file is for a fleet store (--db postgres://…); \(database.path) is a SQLite file", asError: true)
            throw ExitCode(ExitStatus.refused)
        }
        if logLevelInForce == nil {
            // One line and exit 2, as for bad input (a ValidationError adds the usage, exit 64).
            let (source, value) = logLevel.map { ("--log-level", $0) }
                ?? ("LIVECOPY_LOG_LEVEL", ProcessInfo.processInfo.environment["LIVECOPY_LOG_LEVEL"] ?? "")
            let levels = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            printStderr("\(source): unknown log level '\(value)' (expected \(levels))", asError: true)
            throw ExitCode(ExitStatus.refused)
        }
    }

    /// The database path in force, absolute.
    private var absoluteDatabasePath: String {
        let path = database.path
        return path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    /// Opens the store (creating it and its directory if missing): for the commands that
    /// record plans.
    func openStore() throws -> any PlanStore {
        if isFleetStore { return try openFleetStore() }
        return try SQLiteStore(path: absoluteDatabasePath)
    }

    /// The fleet store the URL in force names, connected and its schema up to date.
    private func openFleetStore() throws -> PostgresStore {
        let location = try PostgresLocation(url: database.path, passwordFile: dbPasswordFile,
                                            environment: ProcessInfo.processInfo.environment)
        return try PostgresStore(location)
    }

    /// The store to read only (`validate`): never created nor migrated, nothing written;
    /// an empty one in memory when there is no database (`SQLiteStore.readingOnly`).
    func openStoreReadingOnly() throws -> any PlanStore {
        if isFleetStore { return try openFleetStore() }
        return try SQLiteStore.readingOnly(at: absoluteDatabasePath)
    }

    /// Opens an existing store, for the commands that only read (`status`, `history`,
    /// `show`) or act on a recorded plan: a mistyped `--db` must not create an empty
    /// database that answers "no plans".
    func openExistingStore() throws -> any PlanStore {
        if isFleetStore { return try openFleetStore() }
        let path = absoluteDatabasePath
        guard FileManager.default.fileExists(atPath: path) else { throw missingDatabase(at: path) }
        return try SQLiteStore(path: path)
    }

    /// Opens an existing store to read only (`watch`): never created, migrated nor
    /// written, not even checkpointed as it closes; no database is the same one-line error
    /// as for `openExistingStore`.
    func openExistingStoreReadingOnly() throws -> any PlanStore {
        if isFleetStore { return try openFleetStore() }
        let path = absoluteDatabasePath
        guard FileManager.default.fileExists(atPath: path) else { throw missingDatabase(at: path) }
        return try SQLiteStore.readingOnly(at: path, neverCheckpointing: true)
    }

    private func missingDatabase(at path: String) -> InputError {
        InputError("no database at \(path) (from \(database.source)); livecopy submit creates one, or give the right one with --db or LIVECOPY_DB")
    }
}

/// `livecopy --db PATH --log-level LEVEL SUBCOMMAND …`: the common options are every
/// subcommand's (`CommonOptions`), so given before the subcommand's name they are moved
/// after it.
func hoistingCommonOptions(_ arguments: [String]) -> [String] {
    let names = ["--db", "--db-password-file", "--log-level"]
    var leading: [String] = []
    var rest = arguments[...]
    while let first = rest.first {
        if names.contains(first), rest.count >= 2 {
            leading += rest.prefix(2)
            rest = rest.dropFirst(2)
        } else if names.contains(where: { first.hasPrefix($0 + "=") }) {
            leading.append(first)
            rest = rest.dropFirst()
        } else {
            break
        }
    }
    guard !leading.isEmpty, let subcommand = rest.first, !subcommand.hasPrefix("-") else { return arguments }
    return [subcommand] + leading + Array(rest.dropFirst())
}

/// Exit codes scripts can rely on.
enum ExitStatus {
    /// Every disk of every plan touched completed (or, for queries, the query worked).
    static let success: Int32 = 0
    /// A plan ended in another state than completed.
    static let planNotCompleted: Int32 = 1
    /// Bad input, a refused plan, a plan owned by another process, or an unusable
    /// database: nothing was touched.
    static let refused: Int32 = 2
    /// The run stopped on an unexpected error after it had started; the plan is kept
    /// and `livecopy recover` picks it up.
    static let interrupted: Int32 = 3
}

/// Prints a one-line error to stderr and exits with `code`, for every failure a command
/// expects; anything unexpected is still reported in one line.
func reportingErrors(_ body: () async throws -> Int32) async throws {
    let code: Int32
    do {
        code = try await body()
    } catch let error as ExitCode {
        throw error
    } catch let error as CleanExit {
        throw error
    } catch let error as InputError {
        printStderr(error.message, asError: true)
        throw ExitCode(ExitStatus.refused)
    } catch let error as StoreError {
        switch error.kind {
        case .database, .leaseHeld, .claimed:
            printStderr(error.description, asError: true)
            throw ExitCode(ExitStatus.refused)
        case .conflict:
            // Unexpected after a run started: as any other error below.
            printStderr("\(describe(error)); the plan is kept: livecopy recover picks it up", asError: true)
            throw ExitCode(ExitStatus.interrupted)
        }
    } catch let error as PreflightError {
        printStderr(error.description, asError: true)
        throw ExitCode(ExitStatus.refused)
    } catch let error as LeaseLost {
        printStderr(error.description, asError: true)
        throw ExitCode(ExitStatus.interrupted)
    } catch {
        printStderr("\(describe(error)); the plan is kept: livecopy recover picks it up", asError: true)
        throw ExitCode(ExitStatus.interrupted)
    }
    if code != 0 { throw ExitCode(code) }
}

/// Writes `message` and a newline to stderr. With `asError` it is prefixed
/// `livecopy: error: ` (a failure); without, it is written as it is (progress and
/// outcomes, which name `livecopy:` themselves).
func printStderr(_ message: String, asError: Bool = false) {
    let line = asError ? "livecopy: error: \(message)\n" : message + "\n"
    FileHandle.standardError.write(Data(line.utf8))
}


/// A plan id argument, validated.
func requirePlan(_ id: Int64, in store: any PlanStore) throws -> PlanRecord {
    guard let plan = try store.plan(id: id) else { throw InputError("no plan with id \(id)") }
    return plan
}

/// Runs a plan with `engine` to its end, then closes the engine's VM sessions and the
/// progress display, whatever happened.
func drive(_ engine: Engine, planId: Int64, mode: RunMode = .resume, display: ProgressDisplay) async throws -> PlanRecord {
    defer { display.finish() }
    InterruptMessage.name(planId: planId)
    do {
        let final = try await engine.run(planId: planId, mode: mode)
        await engine.shutdown()
        return final
    } catch {
        await engine.shutdown()
        throw error
    }
}

/// `run`, `recover`, `purge` and `restore` act on this host's VMs and files: over a fleet
/// store they are refused, since each host's agent drives that host's plans.
func refuseFleetStore(_ store: any PlanStore, command: String) throws {
    guard store is any FleetStore else { return }
    throw InputError("livecopy \(command) acts on this host's own store; in a fleet store (\(store.location)) each host's agent drives its plans (livecopy agent --host NAME)")
}
