import ArgumentParser
import Foundation
import Synchronization

/// The `livecopy` command line: one file per subcommand.
public struct LivecopyCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "livecopy",
        abstract: "Live block copy orchestrator for QEMU virtual machines.",
        discussion: """
            Moves running VMs' disks to new qcow2 images with QEMU's image streaming: snapshot onto the \
            destination, stream the source into it, watch the job, retire the source. Every step is kept \
            in SQLite, so an interrupted plan can be resumed or rolled back (livecopy recover, livecopy cancel).
            """,
        subcommands: [Submit.self, Validate.self, Run.self, Recover.self, Cancel.self, Throttle.self, Pause.self, Resume.self,
                      Status.self, Watch.self, History.self, Show.self, Purge.self, Restore.self, Serve.self, Agent.self,
                      Limits.self])

    public init() {}
}

extension LivecopyCommand {
    /// Parses `arguments` and runs the chosen subcommand, returning the exit status
    /// instead of exiting: the executable's whole body, and callable from tests.
    public static func execute(_ arguments: [String]) async -> Int32 {
        installInterruptMessage()
        do {
            var command = try parseAsRoot(hoistingCommonOptions(arguments))
            applyLogLevel(of: command)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            logger.debug("livecopy finished", metadata: ["status": "0"])
            return 0
        } catch {
            let code = exitCode(for: error).rawValue
            logger.debug("livecopy finished", metadata: ["status": "\(code)"])
            let message = fullMessage(for: error)
            if !message.isEmpty {
                let text = message.hasSuffix("\n") ? message : message + "\n"
                if code == 0 {
                    print(text, terminator: "")
                } else {
                    FileHandle.standardError.write(Data(text.utf8))
                }
            }
            return code
        }
    }
}

/// On Ctrl-C or SIGTERM livecopy stops at once: every step is already persisted, and the
/// QEMU jobs carry on. Say so, and how to pick the plan up again (naming the plan once
/// one is being driven: `InterruptMessage.name(planId:)`).
private func installInterruptMessage() {
    _ = InterruptMessage.current.load(ordering: .relaxed)  // initialized here, never first in the handler
    let handler: @convention(c) (Int32) -> Void = { signal in
        // Only async-signal-safe calls here: an atomic load, write(2), strlen, _exit(2).
        let address = InterruptMessage.current.load(ordering: .acquiring)
        if let named = UnsafePointer<CChar>(bitPattern: address) {
            _ = write(STDERR_FILENO, named, strlen(named))
        } else {
            let message: StaticString = "\nlivecopy: interrupted; QEMU's jobs carry on and the plan is kept: livecopy recover resumes it, livecopy cancel ID rolls it back\n"
            _ = write(STDERR_FILENO, message.utf8Start, message.utf8CodeUnitCount)
        }
        _exit(128 + signal)
    }
    signal(SIGINT, handler)
    signal(SIGTERM, handler)
}

/// The message printed on Ctrl-C, naming the plan being driven: published as the address
/// of a C string, which the signal handler reads without locks or allocation.
enum InterruptMessage {
    /// The address of the current message; 0 for the generic one.
    static let current = Atomic<UInt>(0)

    /// From now on Ctrl-C names plan `planId`.
    static func name(planId: Int64) {
        let text = "\nlivecopy: interrupted; QEMU's jobs carry on and plan \(planId) is kept: livecopy recover --plan \(planId) resumes it, livecopy cancel \(planId) rolls it back\n"
        // Never freed: the handler may read any message published, at any time.
        guard let copy = strdup(text) else { return }
        current.store(UInt(bitPattern: copy), ordering: .releasing)
    }
}