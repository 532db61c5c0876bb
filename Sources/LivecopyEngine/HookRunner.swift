// Running one hook program: its argv, its environment, its JSON on stdin, its timeout,
// and what it printed (docs/hooks.md).

import Foundation
import LivecopyModel
import Subprocess
import Synchronization

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// How one run of a hook ended, with the first and last lines it printed (stdout and
/// stderr together).
struct HookResult: Sendable, Equatable {
    /// How the program ended.
    enum Ending: Sendable, Equatable {
        /// It exited with this status.
        case exited(Int32)
        /// It was killed by this signal (not by livecopy).
        case signaled(Int32)
        /// It ran past its timeout; livecopy killed its process group.
        case timedOut(seconds: Double)
        /// It was not started: the program was refused (`HookProgramCheck`) or could not be run.
        case notStarted(String)
    }

    let ending: Ending
    /// The first lines printed (at most `HookOutput.keptLines`).
    let firstLines: [String]
    /// The last lines printed, when there were more than the first ones.
    let lastLines: [String]
    /// How many lines were printed in all.
    let lineCount: Int
    let seconds: Double

    var succeeded: Bool { ending == .exited(0) }

    /// The ending in a few words: "exit 0", "killed by signal 9", "timed out after 30 s".
    var endingText: String {
        switch ending {
        case .exited(let status): return "exit \(status)"
        case .signaled(let signal): return "killed by signal \(signal)"
        case .timedOut(let seconds): return "timed out after \(HookRunner.secondsText(seconds)); its process group was killed"
        case .notStarted(let reason): return "not run: \(reason)"
        }
    }

    /// The output for the timeline, on one line: the first lines, then (after "…") the last ones.
    var outputText: String {
        guard lineCount > 0 else { return "no output" }
        let shown = firstLines + (lastLines.isEmpty ? [] : ["…"] + lastLines)
        return "output (\(lineCount) line\(lineCount == 1 ? "" : "s")): " + shown.joined(separator: " | ")
    }
}

/// The first and last lines of a hook's output, kept while it runs (shared with the task
/// that reads them, so a hook killed at its timeout keeps what it printed).
final class HookOutput: Sendable {
    /// How many lines are kept at each end.
    static let keptLines = 3
    /// Longer lines are cut to this many characters.
    static let longestLine = 240

    private struct Lines {
        var first: [String] = []
        var last: [String] = []
        var count = 0
    }
    private let lines = Mutex(Lines())

    func add(_ line: String) {
        var text = InputError.escapingLineBreaks(line)
        if text.count > Self.longestLine { text = String(text.prefix(Self.longestLine)) + "…" }
        lines.withLock { lines in
            lines.count += 1
            if lines.first.count < Self.keptLines {
                lines.first.append(text)
            } else {
                lines.last.append(text)
                if lines.last.count > Self.keptLines { lines.last.removeFirst() }
            }
        }
    }

    var snapshot: (first: [String], last: [String], count: Int) {
        lines.withLock { ($0.first, $0.last, $0.count) }
    }
}

/// Runs hook programs. A hook runs with a fixed, minimal environment (a safe `PATH`,
/// `LANG`, and its `LIVECOPY_*` variables: nothing else of livecopy's environment), its
/// JSON document on stdin (an unlinked temporary file, so a hook that never reads it
/// cannot block or break livecopy), in a process group of its own, which is killed
/// (SIGTERM, then SIGKILL 5 s later) when the hook outlives its timeout or livecopy
/// stops waiting for it.
enum HookRunner {
    /// The `PATH` a hook runs with, and where a program named without a `/` is looked up.
    static let safePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    /// How long a hook has between SIGTERM and SIGKILL.
    static let gracePeriod: Duration = .seconds(5)

    /// Runs `program` (already resolved and checked) with `arguments`, `environment` (added
    /// to the minimal one) and `input` on stdin, for at most `timeout` seconds.
    static func run(program: String, arguments: [String], environment: [String: String], input: Data,
                    timeout: Double) async throws -> HookResult {
        let started = ContinuousClock.now
        let output = HookOutput()
        func result(_ ending: HookResult.Ending) -> HookResult {
            let lines = output.snapshot
            let elapsed = ContinuousClock.now - started
            return HookResult(ending: ending, firstLines: lines.first, lastLines: lines.last, lineCount: lines.count,
                              seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        }
        let stdin: FileDescriptor
        do {
            stdin = try temporaryFile(holding: input)
        } catch {
            return result(.notStarted("its input could not be written: \(describe(error))"))
        }
        var variables: [Environment.Key: String] = ["PATH": safePath, "LANG": "C.UTF-8"]
        for (name, value) in environment { variables[Environment.Key(stringLiteral: name)] = value }
        var options = PlatformOptions()
        options.processGroupID = 0  // a group of its own: a timeout kills what the hook started, too
        options.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: gracePeriod)]
        let configuration = Configuration(
            executable: .path(FilePath(program)), arguments: Arguments(arguments),
            environment: .custom(variables), workingDirectory: FilePath("/"), platformOptions: options)

        // Whichever ends first: the run (how it ended) or the timeout (nil).
        let ending: HookResult.Ending? = try await withThrowingTaskGroup(of: HookResult.Ending?.self) { group in
            group.addTask {
                let run = try await Subprocess.run(
                    configuration, input: .fileDescriptor(stdin, closeAfterSpawningProcess: true),
                    output: .sequence, error: .combinedWithOutput
                ) { execution in
                    for try await line in execution.standardOutput.strings() { output.add(line) }
                }
                switch run.terminationStatus {
                case .exited(let code): return .exited(code)
                case .signaled(let signal): return .signaled(signal)
                }
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(Int64((timeout * 1000).rounded(.up))))
                return nil  // the timeout
            }
            defer { group.cancelAll() }
            do {
                return try await group.next() ?? nil
            } catch {
                if Task.isCancelled || error is CancellationError { throw error }
                return .notStarted("it could not be started: \(describe(error))")
            }
        }
        if Task.isCancelled { throw CancellationError() }
        return result(ending ?? .timedOut(seconds: timeout))
    }

    /// An unlinked temporary file holding `data`, positioned at its start.
    private static func temporaryFile(holding data: Data) throws -> FileDescriptor {
        var template = Array((NSTemporaryDirectory() as NSString).appendingPathComponent("livecopy-hook-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        unlink(path)
        let descriptor = FileDescriptor(rawValue: fd)
        do {
            _ = try descriptor.writeAll(data)
            _ = try descriptor.seek(offset: 0, from: .start)
        } catch {
            try? descriptor.close()
            throw error
        }
        return descriptor
    }

    /// "35 ms", "1.4 s", "12 s".
    static func secondsText(_ seconds: Double) -> String {
        if seconds < 1 { return "\(Int((seconds * 1000).rounded())) ms" }
        return seconds < 10 ? String(format: "%.1f s", seconds) : "\(Int(seconds.rounded())) s"
    }
}
