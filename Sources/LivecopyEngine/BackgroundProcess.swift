// A program that runs beside livecopy until it is stopped: `BackgroundProcess`
// (a server such as qemu-nbd).

import Foundation
import LivecopyModel
import Subprocess
import Synchronization

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// A program started through swift-subprocess and left running, awaited on a task of its
/// own, until it exits or `stop()` ends it: SIGTERM, then SIGKILL after `gracePeriod`,
/// then reaped. Its stdout is discarded; the first and last lines of its stderr are kept
/// (`HookOutput`) for the error that reports its early exit.
final class BackgroundProcess: Sendable {
    /// How long the program has between SIGTERM and SIGKILL.
    static let gracePeriod: Duration = .seconds(5)

    /// What is known of the program while it runs and once it ended.
    private struct State {
        var processIdentifier: Int32?
        /// How it ended ("exit 1", "killed by signal 9", "could not be started: …"); nil while it runs.
        var ending: String?
    }

    /// What the task running the program shares with this object (not the object
    /// itself, which the task would otherwise keep alive).
    private final class Shared: Sendable {
        let state = Mutex(State())
        let errorLines = HookOutput()
    }

    /// The program's name, for messages.
    let program: String
    private let shared = Shared()
    private let task: Task<Void, Never>

    /// `program` found on PATH once, here, as an absolute path: swift-subprocess's own
    /// lookup tried each PATH directory with a child of its own (seen with strace, about
    /// 2 ms each), which `scripts/bench verify` measured in every comparison. Not found:
    /// the name, for swift-subprocess to report.
    static func locate(_ program: String) -> Executable {
        guard !program.contains("/") else { return .path(FilePath(program)) }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(program)"
            if access(candidate, X_OK) == 0 { return .path(FilePath(candidate)) }
        }
        return .name(program)
    }

    /// Starts `program` (looked up on PATH) with `arguments`; returns at once. A program
    /// that cannot be started shows as ended, with the reason, in `ending`.
    init(program: String, arguments: [String]) {
        self.program = program
        var options = PlatformOptions()
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: Self.gracePeriod)]
        let configuration = Configuration(
            executable: Self.locate(program), arguments: Arguments(arguments), environment: .inherit, platformOptions: options)
        task = Task { [shared] in
            let ending: String
            do {
                let result = try await Subprocess.run(configuration, input: .none, output: .discarded, error: .sequence) { execution in
                    shared.state.withLock { $0.processIdentifier = execution.processIdentifier.value }
                    for try await line in execution.standardError.strings() { shared.errorLines.add(line) }
                }
                switch result.terminationStatus {
                case .exited(let code): ending = "exit \(code)"
                case .signaled(let signal): ending = "killed by signal \(signal)"
                }
            } catch {
                ending = shared.state.withLock { $0.processIdentifier } == nil
                    ? "could not be started: \(describe(error))" : "ended while its output was read: \(describe(error))"
            }
            shared.state.withLock { $0.ending = ending }
        }
    }

    deinit {
        // Not awaited: the task still ends the program (SIGTERM, SIGKILL) and reaps it.
        task.cancel()
    }

    /// The program's process id, once it was started.
    var processIdentifier: Int32? { shared.state.withLock { $0.processIdentifier } }

    /// How the program ended, once it has (and was reaped); nil while it runs.
    var ending: String? { shared.state.withLock { $0.ending } }

    /// The first and last lines it printed on stderr, on one line ("no output" if none).
    var errorText: String {
        let lines = shared.errorLines.snapshot
        guard lines.count > 0 else { return "no output" }
        return (lines.first + (lines.last.isEmpty ? [] : ["…"] + lines.last)).joined(separator: " | ")
    }

    /// Ends the program unless it has ended (SIGTERM, SIGKILL after `gracePeriod`) and
    /// waits until it is reaped. Calling it again only waits.
    func stop() async {
        task.cancel()
        await task.value
    }
}
