import Foundation
import Synchronization

/// Errors from the QEMU fixtures.
public enum QEMUFixtureError: Error, Sendable, CustomStringConvertible {
    /// The program is not on PATH.
    case toolNotFound(String)
    /// A QEMU program failed (non-zero exit or an error in its output).
    case toolFailed(command: String, status: Int32, output: String)
    /// A qemu-img reply could not be understood.
    case unexpectedOutput(command: String, output: String)
    /// QEMU did not start, or its monitors did not appear in time.
    case startFailed(reason: String, log: String)
    /// A guest write through HMP qemu-io reported an error.
    case guestWriteFailed(command: String, output: String)
    /// A socket path does not fit in a UNIX socket address.
    case socketPathTooLong(String)

    public var description: String {
        switch self {
        case .toolNotFound(let tool):
            return "\(tool) is not on PATH"
        case .toolFailed(let command, let status, let output):
            return "\(command) exited with status \(status): \(output)"
        case .unexpectedOutput(let command, let output):
            return "unexpected output from \(command): \(output)"
        case .startFailed(let reason, let log):
            return "QEMU did not start: \(reason)\n--- QEMU log ---\n\(log)"
        case .guestWriteFailed(let command, let output):
            return "guest write failed: \(command)\n\(output)"
        case .socketPathTooLong(let path):
            return "socket path is longer than 107 bytes: \(path)"
        }
    }
}

/// Locating and running QEMU's programs.
public enum QEMUTools {
    /// The programs the QEMU fixtures need.
    public static let requiredTools = ["qemu-system-x86_64", "qemu-img", "qemu-io"]

    /// True when qemu-system-x86_64, qemu-img and qemu-io are all on PATH.
    public static var isAvailable: Bool {
        requiredTools.allSatisfy { find($0) != nil }
    }

    /// The full path of `name` on PATH (or `name` itself when it contains a slash), or nil.
    public static func find(_ name: String) -> String? {
        if name.contains("/") {
            return FileManager.default.isExecutableFile(atPath: name) ? name : nil
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) {
                return candidate
            }
        }
        return nil
    }

    /// Runs `tool` (looked up on PATH) with `args` to completion, with stdin from
    /// /dev/null. Throws only when the program cannot be started; the caller checks `status`.
    public static func run(_ tool: String, _ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        guard let executable = find(tool) else { throw QEMUFixtureError.toolNotFound(tool) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = args
        process.standardInput = FileHandle.nullDevice
        let stdoutPipe = Pipe()
        let stderrPipe = Pipe()
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        try process.run()

        // Drain both pipes at once so neither can fill up and block the program.
        let group = DispatchGroup()
        let stdoutBox = DataBox()
        group.enter()
        DispatchQueue.global().async {
            stdoutBox.data.withLock { $0 = stdoutPipe.fileHandleForReading.readDataToEndOfFile() }
            group.leave()
        }
        let stderrData = stderrPipe.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return (
            process.terminationStatus,
            String(decoding: stdoutBox.data.withLock { $0 }, as: UTF8.self),
            String(decoding: stderrData, as: UTF8.self)
        )
    }

    /// Runs `tool` and throws `toolFailed` unless it exits with status 0.
    @discardableResult
    static func runChecked(_ tool: String, _ args: [String]) throws -> (stdout: String, stderr: String) {
        let result = try run(tool, args)
        guard result.status == 0 else {
            throw QEMUFixtureError.toolFailed(
                command: commandLine(tool, args), status: result.status, output: result.stdout + result.stderr)
        }
        return (result.stdout, result.stderr)
    }

    static func commandLine(_ tool: String, _ args: [String]) -> String {
        ([tool] + args).map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
    }
}

private final class DataBox: Sendable {
    let data = Mutex(Data())
}

/// What `qemu-img info` reports about an image.
public struct ImageInfo: Sendable, Hashable {
    /// The image format, for example `qcow2`.
    public let format: String
    /// The guest-visible size in bytes.
    public let virtualSize: Int64
    /// Bytes the image occupies on the host, when qemu-img reports it.
    public let actualSize: Int64?
    /// The backing file as recorded in the image, or nil when there is none.
    public let backingFilename: String?
    /// The backing file's absolute path as qemu-img resolved it, or nil.
    public let fullBackingFilename: String?
    /// The backing file's recorded format, or nil.
    public let backingFormat: String?
}

/// Offline image operations through qemu-img and qemu-io.
public enum QEMUImage {
    /// `qemu-img create -f FORMAT [-b BACKING -F BACKINGFORMAT] PATH SIZE`.
    public static func create(
        _ path: String, size: String, format: String = "qcow2", backing: String? = nil, backingFormat: String? = nil
    ) throws {
        var args = ["create", "-q", "-f", format]
        if let backing {
            args += ["-b", backing]
            if let backingFormat { args += ["-F", backingFormat] }
        }
        args += [path, size]
        try QEMUTools.runChecked("qemu-img", args)
    }

    /// Writes `length` bytes of `pattern` at `offset` while no QEMU has the image open:
    /// `qemu-io -f FORMAT -c "write -P 0xPP OFFSET LENGTH" PATH`.
    /// Offsets and lengths use qemu-io's syntax (`1M`, `64k`, `4096`).
    public static func write(_ path: String, pattern: UInt8, offset: String, length: String, format: String = "qcow2") throws {
        let command = "write -P \(hex(pattern)) \(offset) \(length)"
        let args = ["-f", format, "-c", command, path]
        let result = try QEMUTools.run("qemu-io", args)
        let output = result.stdout + result.stderr
        guard result.status == 0, output.contains("wrote "), !containsFailure(output) else {
            throw QEMUFixtureError.toolFailed(
                command: QEMUTools.commandLine("qemu-io", args), status: result.status, output: output)
        }
    }

    /// Reads the range read-only (`qemu-io -r`) and tells whether it holds `pattern`:
    /// true when qemu-io exits 0 without "Pattern verification failed". Any other failure
    /// (image missing or locked, read error) throws. `forceShare` adds `-U`, to read an
    /// image that a running QEMU holds open (the result may then lag behind the guest).
    public static func verify(
        _ path: String, pattern: UInt8, offset: String, length: String, format: String = "qcow2",
        forceShare: Bool = false
    ) throws -> Bool {
        let command = "read -P \(hex(pattern)) \(offset) \(length)"
        var args = ["-r", "-f", format]
        if forceShare { args.append("-U") }
        args += ["-c", command, path]
        let result = try QEMUTools.run("qemu-io", args)
        let output = result.stdout + result.stderr
        if output.contains("Pattern verification failed") {
            return false
        }
        guard result.status == 0, output.contains("read "), !containsFailure(output) else {
            throw QEMUFixtureError.toolFailed(
                command: QEMUTools.commandLine("qemu-io", args), status: result.status, output: output)
        }
        return true
    }

    /// `qemu-img info -U --output=json PATH`, decoded. `-U` lets it read an image that a
    /// running QEMU holds open.
    public static func info(_ path: String, format: String? = nil) throws -> ImageInfo {
        let args = ["info", "-U", "--output=json"] + (format.map { ["-f", $0] } ?? []) + [path]
        let (stdout, _) = try QEMUTools.runChecked("qemu-img", args)
        struct Raw: Decodable {
            let format: String
            let virtualSize: Int64
            let actualSize: Int64?
            let backingFilename: String?
            let fullBackingFilename: String?
            let backingFilenameFormat: String?
            enum CodingKeys: String, CodingKey {
                case format
                case virtualSize = "virtual-size"
                case actualSize = "actual-size"
                case backingFilename = "backing-filename"
                case fullBackingFilename = "full-backing-filename"
                case backingFilenameFormat = "backing-filename-format"
            }
        }
        let raw: Raw
        do {
            raw = try JSONDecoder().decode(Raw.self, from: Data(stdout.utf8))
        } catch {
            throw QEMUFixtureError.unexpectedOutput(command: QEMUTools.commandLine("qemu-img", args), output: stdout)
        }
        return ImageInfo(
            format: raw.format, virtualSize: raw.virtualSize, actualSize: raw.actualSize,
            backingFilename: raw.backingFilename, fullBackingFilename: raw.fullBackingFilename,
            backingFormat: raw.backingFilenameFormat)
    }

    /// `0xPP`, as qemu-io expects a pattern.
    static func hex(_ pattern: UInt8) -> String {
        let digits = String(pattern, radix: 16)
        return "0x" + (digits.count == 1 ? "0" + digits : digits)
    }

    /// True when a line of qemu-io output reports an error or a failure.
    static func containsFailure(_ output: String) -> Bool {
        output.split(whereSeparator: \.isNewline).contains { line in
            let lower = line.lowercased()
            return lower.contains("error") || lower.contains("failed")
        }
    }
}
