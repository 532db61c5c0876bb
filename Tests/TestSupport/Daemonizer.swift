import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs a program that daemonizes itself (`libvirtd -d`) and waits for the launcher to
/// exit, with only stdin (/dev/null) and stdout/stderr (a scratch file) open in the
/// child, no signal blocked and every signal's disposition the default.
///
/// Foundation's `Process` cannot do this: it notices a child's exit through a descriptor
/// the child inherits, which the daemon would keep open forever, and the daemon would
/// also keep any of the test process's sockets it inherited. And a plain `posix_spawn`
/// from a test passes on the calling thread's signal mask: Swift's concurrency threads
/// block nearly every signal, and a libvirtd started with SIGTERM blocked never stops.
public enum Daemonizer {
    /// Spawns `executable ARGS` and returns its raw wait status (0: exited with 0) and
    /// output, kept in `logFile` when given (else in a scratch file, removed).
    public static func run(_ executable: String, _ arguments: [String], logFile: String? = nil) async throws
        -> (status: Int32, output: String)
    {
        let outputFile = logFile ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("lc-daemonize-\(UUID().uuidString.prefix(8)).log").path
        defer { if logFile == nil { try? FileManager.default.removeItem(atPath: outputFile) } }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputFile, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        try closeFrom(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        var all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EIO) }
        let child = pid
        let status: Int32 = await withCheckedContinuation { continuation in
            // waitpid blocks, so it gets its own thread rather than a cooperative one.
            Thread {
                var status: Int32 = 0
                while waitpid(child, &status, 0) == -1, errno == EINTR {}
                continuation.resume(returning: status)
            }.start()
        }
        let output = (try? String(contentsOfFile: outputFile, encoding: .utf8)) ?? ""
        return (status, output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34+), looked up at run time
    /// because Swift's Glibc module does not declare GNU extensions.
    private static func closeFrom(_ actions: inout posix_spawn_file_actions_t, _ lowest: Int32) throws {
        typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
            throw LibvirtRigError.unusable("posix_spawn_file_actions_addclosefrom_np is missing (glibc older than 2.34)")
        }
        _ = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, lowest)
    }
}
