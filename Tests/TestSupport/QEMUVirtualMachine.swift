import Foundation
import QMP

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A throwaway QEMU with no guest OS (`-machine none`) and two QMP monitors: one for
/// livecopy (`livecopySocket`) and one for the test (`testSocket`). Each monitor serves
/// one client at a time, so the test never touches livecopy's.
///
/// QEMU's stdout and stderr go to `<directory>/<name>.log` (appended to, so a restarted
/// VM with the same name keeps the earlier text there); `output` is what this instance
/// printed. The process is killed on deinit if it still runs.
public final class QEMUVirtualMachine: Sendable {
    /// The name given at start; it names the sockets and the log.
    public let name: String
    /// The directory holding the sockets and the log.
    public let directory: URL
    /// The QMP socket for livecopy.
    public let livecopySocket: String
    /// The QMP socket for the test itself (see `testMonitor()`).
    public let testSocket: String
    /// QEMU's stdout and stderr.
    public let logPath: String

    private let process: Process
    private let logStart: UInt64
    private let monitor = MonitorHolder()

    /// QEMU's process id.
    public var pid: Int32 { process.processIdentifier }

    /// True while QEMU runs.
    public var isRunning: Bool { process.isRunning }

    /// Starts `qemu-system-x86_64 -machine none -nodefaults -display none` with the two
    /// monitors and one `-drive if=none,id=ID,format=FORMAT,file=IMAGE` per drive, then
    /// waits (up to `startTimeout` seconds) until both sockets exist.
    ///
    /// - Parameter extraArguments: more QEMU arguments, appended last (e.g. `-blockdev`).
    /// - Parameter launchScript: a shell script that starts this VM instead (`/bin/sh
    ///   launchScript`; it must `exec` QEMU with the sockets `commandLine` names, as a VM
    ///   manager's start script does); `drives` and `extraArguments` are then unused.
    public init(
        name: String,
        directory: URL,
        drives: [(id: String, image: String, format: String)],
        extraArguments: [String] = [],
        launchScript: String? = nil,
        startTimeout: Double = 10
    ) throws {
        guard let qemu = QEMUTools.find("qemu-system-x86_64") else {
            throw QEMUFixtureError.toolNotFound("qemu-system-x86_64")
        }
        self.name = name
        self.directory = directory
        livecopySocket = directory.appendingPathComponent("\(name).qmp").path
        testSocket = directory.appendingPathComponent("\(name).test.qmp").path
        logPath = directory.appendingPathComponent("\(name).log").path
        for socket in [livecopySocket, testSocket] {
            guard socket.utf8.count <= 107 else { throw QEMUFixtureError.socketPathTooLong(socket) }
            // A socket left by an earlier QEMU with the same name would fool the wait below.
            try? FileManager.default.removeItem(atPath: socket)
        }

        var arguments = Self.arguments(name: name, directory: directory, drives: drives) + extraArguments
        var program = qemu
        if let launchScript {
            program = "/bin/sh"
            arguments = [launchScript]
        }

        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        guard let log = FileHandle(forWritingAtPath: logPath) else {
            throw QEMUFixtureError.startFailed(reason: "cannot open \(logPath)", log: "")
        }
        defer { try? log.close() }
        logStart = log.seekToEndOfFile()
        log.write(Data("$ \(QEMUTools.commandLine(program, arguments))\n".utf8))

        process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()

        let deadline = Date().addingTimeInterval(startTimeout)
        while true {
            let ready = FileManager.default.fileExists(atPath: livecopySocket)
                && FileManager.default.fileExists(atPath: testSocket)
            if ready { break }
            if !process.isRunning {
                throw QEMUFixtureError.startFailed(
                    reason: "qemu-system-x86_64 exited with status \(process.terminationStatus)", log: output)
            }
            if Date() >= deadline {
                killAndReap()
                throw QEMUFixtureError.startFailed(
                    reason: "the QMP sockets did not appear within \(startTimeout) s", log: output)
            }
            usleep(20_000)
        }
        // QEMU creates its sockets with the process umask; livecopy refuses a socket that
        // others may write to, so make both owner-only whatever the umask.
        for socket in [livecopySocket, testSocket] {
            _ = chmod(socket, 0o700)
        }
    }

    deinit {
        killAndReap()
    }

    /// QEMU's arguments for the VM `name` in `directory` (its two monitors) with `drives`.
    public static func arguments(name: String, directory: URL, drives: [(id: String, image: String, format: String)]) -> [String] {
        var arguments = [
            "-machine", "none", "-nodefaults", "-display", "none",
            "-qmp", "unix:\(directory.appendingPathComponent("\(name).qmp").path),server=on,wait=off",
            "-qmp", "unix:\(directory.appendingPathComponent("\(name).test.qmp").path),server=on,wait=off",
        ]
        for drive in drives {
            arguments += ["-drive", "if=none,id=\(drive.id),format=\(drive.format),file=\(drive.image)"]
        }
        return arguments
    }

    /// The whole command line of that VM, quoted for a shell (one line), as a VM manager's
    /// start script or command-line file holds it.
    public static func commandLine(name: String, directory: URL, drives: [(id: String, image: String, format: String)]) throws -> String {
        guard let qemu = QEMUTools.find("qemu-system-x86_64") else {
            throw QEMUFixtureError.toolNotFound("qemu-system-x86_64")
        }
        return ([qemu] + arguments(name: name, directory: directory, drives: drives))
            .map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
    }

    /// The text QEMU printed since this instance started (qemu-io results land here).
    public var output: String {
        String(decoding: outputData(from: logStart), as: UTF8.self)
    }

    /// The test's own monitor, connected on first use and kept (reconnected if it closed).
    public func testMonitor() async throws -> QMPConnection {
        try await monitor.connection(socketPath: testSocket)
    }

    /// A guest write that does not wait for its completion: `qemu-io DRIVE "aio_write -P
    /// 0xPP OFFSET LENGTH"` through HMP. Unlike a blocking write, it never holds QEMU's main
    /// loop while the device's I/O is drained (a mirror's pivot). `guestFlushAll` waits
    /// for every one issued.
    public func guestWriteWithoutWaiting(drive: String, pattern: UInt8, offset: String, length: String) async throws {
        try await hmpQemuIO(drive: drive, "aio_write -P \(QEMUImage.hex(pattern)) \(offset) \(length)")
    }

    /// Waits until every write issued by `guestWriteWithoutWaiting` completed
    /// (`qemu-io DRIVE "aio_flush"`), then flushes the device.
    public func guestFlushAll(drive: String) async throws {
        try await hmpQemuIO(drive: drive, "aio_flush")
        try await hmpQemuIO(drive: drive, "flush")
    }

    private func hmpQemuIO(drive: String, _ command: String) async throws {
        let commandLine = "qemu-io \(drive) \"\(command)\""
        let reply = try await testMonitor().execute("human-monitor-command", ["command-line": .string(commandLine)])
        let text = reply.stringValue ?? reply.compactText
        if !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw QEMUFixtureError.guestWriteFailed(command: commandLine, output: text)
        }
    }

    /// A guest write: `qemu-io DRIVE "write -P 0xPP OFFSET LENGTH"` then `qemu-io DRIVE "flush"`
    /// through HMP on the test monitor. qemu-io reports to QEMU's stdout, so this throws
    /// when the output printed meanwhile has an "error" or "failed" line, lacks the
    /// "wrote" line, or when HMP itself answers with an error text.
    public func guestWrite(drive: String, pattern: UInt8, offset: String, length: String) async throws {
        let connection = try await testMonitor()
        let before = UInt64(outputData(from: 0).count)
        let write = "qemu-io \(drive) \"write -P \(QEMUImage.hex(pattern)) \(offset) \(length)\""
        let flush = "qemu-io \(drive) \"flush\""
        for commandLine in [write, flush] {
            let reply = try await connection.execute("human-monitor-command", ["command-line": .string(commandLine)])
            let text = reply.stringValue ?? reply.compactText
            if !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                throw QEMUFixtureError.guestWriteFailed(command: commandLine, output: text)
            }
        }
        // qemu-io prints before the monitor replies; allow the log a moment anyway.
        var printed = ""
        let deadline = Date().addingTimeInterval(2)
        repeat {
            printed = String(decoding: outputData(from: before), as: UTF8.self)
            if printed.contains("wrote ") || QEMUImage.containsFailure(printed) { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        } while Date() < deadline
        if QEMUImage.containsFailure(printed) || !printed.contains("wrote ") {
            throw QEMUFixtureError.guestWriteFailed(command: write, output: printed)
        }
    }

    /// Asks QEMU to `quit` over the test monitor and waits for it to exit; kills it with
    /// SIGKILL if it still runs after `timeout` seconds (or the monitor cannot be used).
    public func stop(timeout: Double = 5) async {
        if process.isRunning {
            do {
                let connection = try await monitor.connection(socketPath: testSocket, timeout: 2)
                _ = try? await connection.execute("quit", arguments: nil, timeout: 2)
            } catch {
                // Fall through to the wait and then SIGKILL.
            }
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline {
                try? await Task.sleep(nanoseconds: 20_000_000)
            }
        }
        await monitor.close()
        killAndReap()
    }

    /// SIGKILL, then waits for QEMU to exit.
    public func kill() {
        killAndReap()
    }

    // MARK: - Helpers

    private func killAndReap() {
        if process.isRunning {
            sendKill(process.processIdentifier)
        }
        // Foundation reaps the child; wait (bounded) until it has.
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline {
            usleep(5_000)
        }
    }

    private func outputData(from offset: UInt64) -> Data {
        guard let handle = FileHandle(forReadingAtPath: logPath) else { return Data() }
        defer { try? handle.close() }
        handle.seek(toFileOffset: offset)
        return handle.readDataToEndOfFile()
    }
}

/// `kill(2)`, outside the class whose `kill()` would shadow it.
private func sendKill(_ pid: Int32) {
    _ = kill(pid, SIGKILL)
}

/// Connects the test monitor once and shares it; concurrent callers wait for the same
/// attempt (a monitor serves one client at a time, so a second connection would hang).
private actor MonitorHolder {
    private var pending: Task<QMPConnection, Error>?

    func connection(socketPath: String, timeout: Double = 10) async throws -> QMPConnection {
        while let current = pending {
            if let existing = try? await current.value, !existing.isClosed {
                return existing
            }
            // Another caller may have replaced the attempt while this one waited.
            if pending == current {
                pending = nil
            }
        }
        let task = Task<QMPConnection, Error> {
            // The socket exists once QEMU has bound it; retry briefly in case it is not
            // listening yet.
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                do {
                    return try await QMPConnection.connect(socketPath: socketPath, connectTimeout: 5, commandTimeout: 30)
                } catch let error as QMPClientError {
                    guard case .connectFailed = error, Date() < deadline else { throw error }
                    try await Task.sleep(nanoseconds: 50_000_000)
                }
            }
        }
        pending = task
        return try await task.value
    }

    func close() async {
        if let pending, let connection = try? await pending.value {
            await connection.close()
        }
        pending = nil
    }
}
