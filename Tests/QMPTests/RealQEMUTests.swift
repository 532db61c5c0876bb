import Foundation
import Testing
import TestSupport

@testable import QMP

/// Locating and running QEMU's programs.
enum QEMUTools {
    /// The full path of `name` on PATH, or nil.
    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) {
                return candidate
            }
        }
        return nil
    }

    /// Runs `executable` to completion and returns its exit status and combined output.
    ///
    /// Spawned with `posix_spawn` rather than Foundation's `Process`: the child gets only
    /// stdin (/dev/null) and stdout/stderr (a log file), every other descriptor is closed.
    /// That matters for `qemu-system-x86_64 -daemonize`: the daemon outlives the launcher,
    /// and `Process` detects a child's exit through an inherited socket that the daemon
    /// would keep open, so its termination handler would never run.
    static func run(_ executable: String, _ arguments: [String], logFile: String) async throws -> (status: Int32, output: String) {
        try await Daemonizer.run(executable, arguments, logFile: logFile)
    }
}

/// `QMPConnection` against a real QEMU.
@Suite("QMPConnection with real QEMU")
struct RealQEMUTests {
    /// Starts QEMU without a guest (`-machine none`), with one qcow2 drive and two QMP
    /// sockets. `-daemonize` makes the launcher return only once the monitors listen,
    /// so nothing has to poll for the socket to appear.
    @Test(.requires(.qemu), .timeLimit(.minutes(1)))
    func queriesAndEventsAgainstRealQEMU() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("lc-qemu-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let image = directory + "/src.qcow2"
        let socket = directory + "/vm.qmp"
        let pidFile = directory + "/qemu.pid"

        let created = try await QEMUTools.run(QEMUTools.find("qemu-img")!, ["create", "-q", "-f", "qcow2", image, "1M"], logFile: directory + "/qemu-img.log")
        try #require(created.status == 0, "qemu-img: \(created.output)")
        let launched = try await QEMUTools.run(QEMUTools.find("qemu-system-x86_64")!, [
            "-machine", "none", "-nodefaults", "-display", "none",
            "-daemonize", "-pidfile", pidFile,
            "-qmp", "unix:\(socket),server=on,wait=off",
            "-drive", "if=none,id=drive0,format=qcow2,file=\(image)",
        ], logFile: directory + "/qemu.log")
        try #require(launched.status == 0, "qemu-system-x86_64: \(launched.output)")
        let pidText = try String(contentsOfFile: pidFile, encoding: .utf8)
        let pid = try #require(pid_t(pidText.trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { kill(pid, SIGKILL) }

        let connection = try await QMPConnection.connect(socketPath: socket, commandTimeout: 10)
        #expect(connection.greeting["version"]?["qemu"]?["major"]?.int64Value != nil)

        let version = try await connection.execute("query-version")
        #expect((version["qemu"]?["major"]?.int64Value ?? 0) >= 7)

        let blocks = try await connection.execute("query-block")
        let drive = try #require(blocks.arrayValue?.first { $0["device"] == "drive0" })
        #expect(drive["inserted"]?["file"]?.stringValue == image)
        #expect(drive["inserted"]?["drv"] == "qcow2")

        let info = try await connection.execute("human-monitor-command", ["command-line": "info version"])
        #expect(info.stringValue?.contains("7.") == true)

        await #expect(throws: QMPCommandError.self) {
            try await connection.execute("block-stream", ["device": "no-such-drive"])
        }

        // Events arrive on the same connection as replies.
        let events = connection.events()
        _ = try await connection.execute("stop")
        let stopEvents = try await collect(1, from: events)
        #expect(stopEvents.map(\.name) == ["STOP"])

        // A second client is connected but never greeted while the first one is there.
        await #expect(throws: QMPClientError.notQMP(
            path: socket, reason: "no QMP greeting within 0.5 s (is another client connected to this monitor?)"))
        {
            _ = try await QMPConnection.connect(socketPath: socket, connectTimeout: 0.5)
        }

        await connection.close()
        #expect(connection.isClosed)

        // The monitor is free again for the next client.
        let again = try await QMPConnection.connect(socketPath: socket, connectTimeout: 5)
        #expect(try await again.execute("query-status")["status"] == "paused")
        await again.close()
    }
}
