// Logging for the `livecopy` process (swift-log): the commands' logger, the handler every
// module's logger writes through once the executable bootstraps it, and how the command
// line's `--log-level` (or $LIVECOPY_LOG_LEVEL) reaches it. Logs are additional: they go
// to stderr, below what livecopy prints itself, and the default level (warning) shows
// nothing today's runs would not.

import ArgumentParser
import Foundation
import Logging
import Synchronization

/// The LivecopyCommands module's logger (`livecopy.commands`).
let logger = Logger(label: "livecopy.commands")

extension LivecopyCommand {
    /// Sends every module's logs to stderr at the level the command line chooses (warning
    /// until it is parsed). For the `livecopy` executable to call once, at process start:
    /// libraries and tests never bootstrap the logging system.
    public static func bootstrapLogging() {
        LoggingSystem.bootstrap { label in CommandLineLogHandler(label: label) }
    }
}

/// The process's log level: warning, until the command line sets the one in force.
/// Loggers may exist before the command line is parsed, so handlers read it at each call.
enum ProcessLogLevel {
    private static let level = Mutex<Logger.Level>(.warning)

    static var current: Logger.Level {
        get { level.withLock { $0 } }
        set { level.withLock { $0 = newValue } }
    }
}

/// A stderr log handler (swift-log's `StreamLogHandler`) whose level is the process's
/// (`ProcessLogLevel`) unless a logger sets its own.
struct CommandLineLogHandler: LogHandler {
    private var stream: StreamLogHandler
    private var ownLevel: Logger.Level?

    init(label: String) {
        stream = StreamLogHandler.standardError(label: label)
        stream.logLevel = .trace  // the level is checked by `Logger`, against `logLevel` below
    }

    var logLevel: Logger.Level {
        get { ownLevel ?? ProcessLogLevel.current }
        set { ownLevel = newValue }
    }

    var metadata: Logger.Metadata {
        get { stream.metadata }
        set { stream.metadata = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { stream.metadataProvider }
        set { stream.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { stream[metadataKey: key] }
        set { stream[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        stream.log(event: event)
    }
}

/// A subcommand with the shared options (all of them).
protocol UsesCommonOptions {
    var common: CommonOptions { get }
}

extension Submit: UsesCommonOptions {}
extension Run: UsesCommonOptions {}
extension Recover: UsesCommonOptions {}
extension Cancel: UsesCommonOptions {}
extension Throttle: UsesCommonOptions {}
extension Pause: UsesCommonOptions {}
extension Resume: UsesCommonOptions {}
extension Status: UsesCommonOptions {}
extension History: UsesCommonOptions {}
extension Show: UsesCommonOptions {}

/// Sets the process's log level from `command`'s options (already validated).
func applyLogLevel(of command: any ParsableCommand) {
    guard let common = (command as? any UsesCommonOptions)?.common, let level = common.logLevelInForce else { return }
    ProcessLogLevel.current = level
    logger.debug("livecopy started", metadata: [
        "command": "\(type(of: command))", "logLevel": "\(level)", "database": "\(common.database.path)",
        "pid": "\(getpid())",
    ])
}
