import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A `qemu-nbd --persistent` of the test's own (not livecopy's `SourceExport`), serving
/// one image read-only to several clients in turn, so a test can connect, fail to
/// connect, and connect again. Killed by `stop()` or on deinit.
final class QemuNBDServer {
    let socketPath: String
    let exportName: String
    let process: Process
    private let log: String

    /// Starts `qemu-nbd` on `socketPath` and waits (up to 10 s) until it accepts a connection.
    init(image: String, format: String = "qcow2", socketPath: String, exportName: String = "disk") throws {
        guard let program = QEMUTools.find("qemu-nbd") else { throw QEMUFixtureError.toolNotFound("qemu-nbd") }
        self.socketPath = socketPath
        self.exportName = exportName
        log = socketPath + ".log"
        FileManager.default.createFile(atPath: log, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = ["--read-only", "--persistent", "--shared=4", "--format=\(format)", "--socket=\(socketPath)",
                             "--export-name=\(exportName)", image]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while !Self.accepts(socketPath) {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw QEMUFixtureError.startFailed(reason: "qemu-nbd did not listen on \(socketPath)",
                                                   log: (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
            }
            usleep(20_000)
        }
    }

    deinit { stop() }

    /// SIGKILL and reap; the socket file stays behind, as after a crash.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Whether something accepts a connection on `path` (connects, then hangs up).
    static func accepts(_ path: String) -> Bool {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }
}

/// Whether a process with this id exists (a zombie counts).
func processExists(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0 || errno != ESRCH
}
