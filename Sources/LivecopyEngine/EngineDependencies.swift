import Foundation
import LivecopyModel
import QMP

/// Opens QMP sessions. The CLI passes one that makes real `QMPConnection`s; tests may
/// pass one that makes scripted peers.
public protocol QMPConnector: Sendable {
    func connect(socketPath: String, commandTimeout: Double) async throws -> any QMPSession
}

/// Told what the engine does, for progress display. Calls arrive from many tasks.
public protocol EngineObserver: Sendable {
    /// A disk moved from `from` to its current state.
    func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String)
    /// A running job reported progress.
    func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64)
    /// Something worth telling the operator that changes no state.
    func note(_ disk: DiskRecord?, _ message: String)
}

/// An observer that ignores everything.
public struct SilentObserver: EngineObserver {
    public init() {}
    public func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String) {}
    public func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64) {}
    public func note(_ disk: DiskRecord?, _ message: String) {}
}

/// One QMP session per VM socket, shared by all of that VM's disks: QEMU serves one
/// client per monitor socket, so a second connection would wait forever.
actor VMSessions {
    private let connector: any QMPConnector
    private let commandTimeout: Double
    private var sessions: [String: Task<any QMPSession, Error>] = [:]

    init(connector: any QMPConnector, commandTimeout: Double) {
        self.connector = connector
        self.commandTimeout = commandTimeout
    }

    /// The live session for `socket`, connecting (once, even with concurrent callers) if needed.
    func session(for socket: String) async throws -> any QMPSession {
        if let pending = sessions[socket], let session = try? await pending.value, !session.isClosed {
            return session
        }
        let connector = self.connector
        let timeout = commandTimeout
        let task = Task { try await connector.connect(socketPath: socket, commandTimeout: timeout) }
        sessions[socket] = task
        do {
            return try await task.value
        } catch {
            sessions[socket] = nil
            throw error
        }
    }

    func closeAll() async {
        for task in sessions.values {
            if let session = try? await task.value { await session.close() }
        }
        sessions = [:]
    }
}

/// Looks inside images on disk, to tell whether a destination overlay holds guest
/// writes of its own before anything would delete it.
public protocol ImageInspector: Sendable {
    /// True when the qcow2 image at `path` has data allocated in its own layer (not in
    /// its backing chain).
    func hasOwnData(_ path: String) throws -> Bool

    /// True when the guest sees the same bytes in both images (formats given, never probed).
    func sameContents(_ first: String, format firstFormat: String, _ second: String, format secondFormat: String) throws -> Bool
}

/// Asks `qemu-img map` (read-only, shared lock) which ranges the top layer holds.
public struct QemuImgInspector: ImageInspector {
    public init() {}

    public func hasOwnData(_ path: String) throws -> Bool {
        let (status, data) = try qemuImg(["map", "-U", "--output=json", "-f", "qcow2", path])
        guard status == 0, let ranges = try? JSONDecoder().decode([MapRange].self, from: data) else {
            throw InspectionFailed(path: path)
        }
        // Allocated in the top layer: data, or zeroes the guest wrote over older data.
        return ranges.contains { $0.depth == 0 && ($0.present ?? $0.data) }
    }

    /// `qemu-img compare` exits 0 for identical contents and 1 for different ones.
    public func sameContents(_ first: String, format firstFormat: String, _ second: String, format secondFormat: String) throws -> Bool {
        let (status, _) = try qemuImg(["compare", "-U", "-f", firstFormat, "-F", secondFormat, first, second])
        guard status == 0 || status == 1 else { throw InspectionFailed(path: "\(first) and \(second)") }
        return status == 0
    }

    private func qemuImg(_ arguments: [String]) throws -> (Int32, Data) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["qemu-img"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, data)
    }

    private struct MapRange: Decodable {
        let depth: Int
        let data: Bool
        let present: Bool?
    }

    struct InspectionFailed: Error, CustomStringConvertible {
        let path: String
        var description: String { "cannot inspect \(path) with qemu-img map" }
    }
}
