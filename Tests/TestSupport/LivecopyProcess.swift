import Foundation

/// Runs the built `livecopy` executable as an operator would, as a child process.
public struct LivecopyProcess: Sendable {
    /// What a finished run printed and returned.
    public struct Result: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    /// The `livecopy` binary built next to the test bundle.
    public static var binaryPath: String {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        // swift-testing may run from inside an .xctest bundle directory.
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("livecopy").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/livecopy").path
    }

    public let database: String

    public init(database: String) {
        self.database = database
    }

    /// Starts `livecopy ARGS --db DB` and returns the running process with its output files.
    public func start(_ arguments: [String], environment: [String: String] = [:]) throws -> Running {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binaryPath)
        process.arguments = arguments + ["--db", database]
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "LIVECOPY_DB")
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lc-out-\(UUID().uuidString)")
        let err = FileManager.default.temporaryDirectory.appendingPathComponent("lc-err-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return Running(process: process, stdoutPath: out.path, stderrPath: err.path)
    }

    /// Runs `livecopy ARGS --db DB` to its end.
    public func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> Result {
        try await start(arguments, environment: environment).wait()
    }

    /// A `livecopy` process started by `start`.
    public final class Running: Sendable {
        public let process: Process
        let stdoutPath: String
        let stderrPath: String

        init(process: Process, stdoutPath: String, stderrPath: String) {
            self.process = process
            self.stdoutPath = stdoutPath
            self.stderrPath = stderrPath
        }

        /// What the process wrote on stderr so far (it may still be running).
        public func stderrSoFar() -> String {
            (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        }

        /// Waits (without blocking a thread) for the process to exit, at most `timeout` seconds, then kills it.
        public func wait(timeout: Double = 300) async throws -> Result {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
            process.waitUntilExit()
            let stdout = (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? ""
            let stderr = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
            try? FileManager.default.removeItem(atPath: stdoutPath)
            try? FileManager.default.removeItem(atPath: stderrPath)
            return Result(status: process.terminationStatus, stdout: stdout, stderr: stderr)
        }
    }
}
