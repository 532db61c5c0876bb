import Foundation
import TestSupport
import Testing

/// Logs (swift-log) are additional and go to stderr: none at the default level (warning),
/// debug lines with `--log-level debug` or $LIVECOPY_LOG_LEVEL (the option wins); a level
/// that is not one is refused in one line, exit 2.
struct LoggingTests {
    /// No level from the environment the tests run in.
    static let unset = ["LIVECOPY_LOG_LEVEL": ""]

    @Test func debugLinesOnStderrWhenAskedAndNoneByDefault() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-log")
        defer { scratch.remove() }
        // Empty files are empty databases (`history` never creates one).
        for name in ["quiet.db", "debug.db", "env.db"] {
            _ = FileManager.default.createFile(atPath: scratch.appending(name), contents: Data())
        }

        let quiet = try await LivecopyProcess(database: scratch.appending("quiet.db")).run(["history"], environment: Self.unset)
        #expect(quiet.status == 0, "\(quiet.stderr)")
        #expect(quiet.stderr.isEmpty, "the default level logs nothing: \(quiet.stderr)")

        let debug = try await LivecopyProcess(database: scratch.appending("debug.db"))
            .run(["--log-level", "debug", "history"], environment: Self.unset)
        #expect(debug.status == 0, "\(debug.stderr)")
        #expect(debug.stdout == quiet.stdout, "logs never go to stdout")
        let lines = debug.stderr.split(separator: "\n")
        #expect(lines.contains { $0.contains(" debug livecopy.commands:") && $0.contains("livecopy started") }, "\(debug.stderr)")
        #expect(lines.contains { $0.contains(" debug livecopy.store:") && $0.contains("database opened") }, "\(debug.stderr)")
        #expect(!lines.contains { $0.contains(" trace ") }, "\(debug.stderr)")

        // The same from the environment; the option wins over it.
        let fromEnvironment = try await LivecopyProcess(database: scratch.appending("env.db"))
            .run(["history"], environment: ["LIVECOPY_LOG_LEVEL": "debug"])
        #expect(fromEnvironment.status == 0, "\(fromEnvironment.stderr)")
        #expect(fromEnvironment.stderr.contains(" debug livecopy.commands:"), "\(fromEnvironment.stderr)")
        let optionWins = try await LivecopyProcess(database: scratch.appending("env.db"))
            .run(["history", "--log-level", "error"], environment: ["LIVECOPY_LOG_LEVEL": "debug"])
        #expect(optionWins.status == 0, "\(optionWins.stderr)")
        #expect(optionWins.stderr.isEmpty, "\(optionWins.stderr)")
    }

    @Test func aLevelThatIsNotOneIsRefusedInOneLine() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-log-bad")
        defer { scratch.remove() }
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        for (arguments, environment, fragment) in [
            (["--log-level", "loud", "history"], Self.unset, "--log-level: unknown log level 'loud'"),
            (["history", "--log-level=loud"], Self.unset, "--log-level: unknown log level 'loud'"),
            (["history"], ["LIVECOPY_LOG_LEVEL": "loud"], "LIVECOPY_LOG_LEVEL: unknown log level 'loud'"),
        ] {
            let result = try await livecopy.run(arguments, environment: environment)
            #expect(result.status == 2, "\(arguments) \(environment): exit \(result.status): \(result.stderr)")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "one line, got: \(result.stderr)")
            #expect(result.stderr.hasPrefix("livecopy: error: \(fragment) (expected trace, debug, info"), "\(result.stderr)")
            #expect(result.stdout.isEmpty)
        }
        #expect(!FileManager.default.fileExists(atPath: livecopy.database), "nothing was touched")
    }
}
