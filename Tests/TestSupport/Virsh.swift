import Foundation

/// Errors from the libvirt test rig (`LibvirtDomain`, `Virsh`).
public enum LibvirtRigError: Error, Sendable, CustomStringConvertible {
    /// A virsh command failed.
    case virshFailed(command: String, status: Int32, output: String)
    /// The domain did not start, or its test monitor did not appear.
    case domainDidNotStart(domain: String, reason: String, log: String)
    /// The domain's XML or QEMU has no disk with that target.
    case noSuchDisk(domain: String, target: String, reason: String)
    /// A guest write through HMP qemu-io reported an error, or printed nothing.
    case guestWriteFailed(command: String, output: String)
    /// Something awaited did not happen in time.
    case timedOut(String)
    /// libvirtd could not be stopped or started again.
    case libvirtdFailed(reason: String, log: String)
    /// The test setup cannot work here (a directory QEMU cannot reach, a missing user).
    case unusable(String)

    public var description: String {
        switch self {
        case .virshFailed(let command, let status, let output):
            return "\(command) exited with status \(status): \(output.trimmingCharacters(in: .whitespacesAndNewlines))"
        case .domainDidNotStart(let domain, let reason, let log):
            return "domain \(domain) did not start: \(reason)\n--- QEMU log ---\n\(log)"
        case .noSuchDisk(let domain, let target, let reason):
            return "domain \(domain) has no disk \(target): \(reason)"
        case .guestWriteFailed(let command, let output):
            return "guest write failed: \(command)\n\(output)"
        case .timedOut(let what):
            return what
        case .libvirtdFailed(let reason, let log):
            return "libvirtd: \(reason)\n--- last lines of \(Virsh.libvirtdLog) ---\n\(log)"
        case .unusable(let reason):
            return reason
        }
    }
}

/// Running `virsh -c qemu:///system` from tests (tests may; the product may not), and
/// restarting libvirtd.
public enum Virsh {
    /// The connection every libvirt test uses.
    public static let uri = "qemu:///system"
    /// The client program.
    public static let program = "virsh"
    /// Where `libvirtd -d` logs when no configuration says otherwise.
    public static let libvirtdLog = "/var/log/libvirt/libvirtd.log"

    /// Runs `timeout T virsh -c qemu:///system ARGS` to completion; the caller checks
    /// `status` (124: virsh hung for `timeout` seconds).
    public static func run(_ args: [String], timeout: Int = 60) throws -> (status: Int32, stdout: String, stderr: String) {
        guard let virsh = QEMUTools.find(program) else { throw QEMUFixtureError.toolNotFound(program) }
        return try QEMUTools.run("timeout", [String(timeout), virsh, "-c", uri] + args)
    }

    /// Runs virsh and returns its stdout; throws `virshFailed` unless it exits with 0.
    @discardableResult
    public static func checked(_ args: [String], timeout: Int = 60) throws -> String {
        let result = try run(args, timeout: timeout)
        guard result.status == 0 else {
            throw LibvirtRigError.virshFailed(
                command: QEMUTools.commandLine("virsh", args), status: result.status,
                output: result.stderr + result.stdout)
        }
        return result.stdout
    }

    /// True when `virsh -c qemu:///system version` answers.
    public static func answers() -> Bool {
        (try? run(["version"], timeout: 10))?.status == 0
    }

    /// The running libvirtd's pid: `/run/libvirtd.pid` when it names a live `libvirtd`.
    public static func libvirtdPID() -> pid_t? {
        guard let text = try? String(contentsOfFile: "/run/libvirtd.pid", encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
              let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
              comm.trimmingCharacters(in: .whitespacesAndNewlines) == "libvirtd" else { return nil }
        return pid
    }

    /// Stops the running libvirtd (SIGTERM, then waits up to 30 s for it to exit), starts
    /// `libvirtd -d` again and waits up to 60 s until virsh answers. Running domains keep
    /// running: libvirtd reconnects to their QEMU processes when it starts.
    ///
    /// Whoever started the old libvirtd, the new one is not recorded as started by
    /// `scripts/libvirtd`; `scripts/libvirtd stop` finds it through `/run/libvirtd.pid`.
    /// Every other user of this libvirtd sees it go away for a moment.
    public static func restartLibvirtd() async throws {
        guard let pid = libvirtdPID() else {
            throw LibvirtRigError.libvirtdFailed(reason: "no libvirtd runs (no live pid in /run/libvirtd.pid)", log: libvirtdLogTail())
        }
        _ = kill(pid, SIGTERM)
        try await waitUntil("libvirtd (pid \(pid)) did not exit within 30 s of SIGTERM", timeout: 30) {
            kill(pid, 0) != 0 && errno == ESRCH
        }
        guard let libvirtd = QEMUTools.find("libvirtd") ?? QEMUTools.find("/usr/sbin/libvirtd") else {
            throw QEMUFixtureError.toolNotFound("libvirtd")
        }
        let (status, output) = try await Daemonizer.run(libvirtd, ["-d"])
        guard status == 0 else {
            throw LibvirtRigError.libvirtdFailed(
                reason: "libvirtd -d exited with wait status \(status): \(output)", log: libvirtdLogTail())
        }
        do {
            try await waitUntil("virsh -c \(uri) version got no answer within 60 s of libvirtd -d", timeout: 60) {
                answers()
            }
        } catch {
            throw LibvirtRigError.libvirtdFailed(reason: "\(error)", log: libvirtdLogTail())
        }
    }

    /// The last 20 lines of libvirtd's log, for error messages.
    static func libvirtdLogTail() -> String {
        guard let text = try? String(contentsOfFile: libvirtdLog, encoding: .utf8) else { return "(unreadable)" }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(20).joined(separator: "\n")
    }

    /// Polls `condition` every 100 ms until it holds; throws `timedOut(message)` after `timeout` seconds.
    static func waitUntil(_ message: @autoclosure () -> String, timeout: Double, _ condition: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while try !condition() {
            guard Date() < deadline else { throw LibvirtRigError.timedOut(message()) }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
    }
}
