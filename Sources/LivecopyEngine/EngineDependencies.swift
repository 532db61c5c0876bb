import CSystemExtras
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

    /// The session already open for `socket`, if any (never connects).
    func existing(for socket: String) async -> (any QMPSession)? {
        guard let pending = sessions[socket], let session = try? await pending.value, !session.isClosed else { return nil }
        return session
    }

    func closeAll() async {
        for task in sessions.values {
            if let session = try? await task.value { await session.close() }
        }
        sessions = [:]
    }
}

/// Looks inside images on disk, to tell whether a destination overlay holds guest
/// writes of its own before anything would delete it. Both questions may take long (a
/// whole-image comparison reads both images), so they are awaited: the answer never
/// holds a thread of the concurrency pool.
public protocol ImageInspector: Sendable {
    /// True when the qcow2 image at `path` has data allocated in its own layer (not in
    /// its backing chain).
    func hasOwnData(_ path: String) async throws -> Bool

    /// True when the guest sees the same bytes in both images (formats given, never probed).
    func sameContents(_ first: String, format firstFormat: String, _ second: String, format secondFormat: String) async throws -> Bool
}

extension ImageInspector {
    /// Whether `disk`'s source and destination hold the same guest-visible bytes; false
    /// when it cannot be told (no source recorded, or an image cannot be read).
    func sourceMatchesDestination(_ disk: DiskRecord) async -> Bool {
        guard let source = disk.source, let format = disk.sourceFormat else { return false }
        return (try? await sameContents(source, format: format, disk.destination, format: "qcow2")) == true
    }
}

/// Asks `qemu-img map` (read-only, shared lock) which ranges the top layer holds.
public struct QemuImgInspector: ImageInspector {
    public init() {}

    public func hasOwnData(_ path: String) async throws -> Bool {
        let (status, data, _) = try await runQemuImg(["map", "-U", "--output=json", "-f", "qcow2", path])
        guard status == 0, let ranges = try? JSONDecoder().decode([MapRange].self, from: data) else {
            throw InspectionFailed(path: path)
        }
        // Allocated in the top layer: data, or zeroes the guest wrote over older data.
        return ranges.contains { $0.depth == 0 && ($0.present ?? $0.data) }
    }

    /// `qemu-img compare` exits 0 for identical contents and 1 for different ones.
    public func sameContents(_ first: String, format firstFormat: String, _ second: String, format secondFormat: String) async throws -> Bool {
        let (status, _, _) = try await runQemuImg(["compare", "-U", "-f", firstFormat, "-F", secondFormat, first, second])
        guard status == 0 || status == 1 else { throw InspectionFailed(path: "\(first) and \(second)") }
        return status == 0
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

/// Creates a destination overlay. Livecopy never lets QEMU create or overwrite a file
/// (`blockdev-snapshot-sync` in its default mode truncates an existing file and follows
/// symlinks): it makes the file itself and then snapshots with `mode: existing`.
public protocol DestinationCreator: Sendable {
    /// Creates `path` exclusively (mode 0600, never through a symlink, its directory not a
    /// symlink) and writes into it a qcow2 header of `virtualSize` bytes backed by
    /// `backing`, whose format `backingFormat` is recorded (never probed).
    ///
    /// Throws `DestinationRefused` when something is at `path` already or its directory is
    /// a symlink: then nothing was created and that file was not touched. Any other error
    /// leaves nothing of livecopy's behind either.
    func createOverlay(at path: String, backing: String, backingFormat: String, virtualSize: Int64) throws
}

/// A destination livecopy will not create, because something is there already or its
/// directory is a symlink. Nothing was touched.
public struct DestinationRefused: Error, CustomStringConvertible {
    public let description: String
}

/// Creates the file with `open(2)` (`O_CREAT|O_EXCL|O_NOFOLLOW`, relative to the directory
/// opened with `O_NOFOLLOW`), then writes the qcow2 overlay into that very descriptor
/// (`Qcow2Overlay`), so a file swapped in at the path meanwhile can never be the one
/// written. No subprocess: `qemu-img create` and `qemu-img info` cost about 12 ms a disk.
public struct ExclusiveOverlayCreator: DestinationCreator {
    public init() {}

    public func createOverlay(at path: String, backing: String, backingFormat: String, virtualSize: Int64) throws {
        // Checked before anything is created: a request QEMU could not open leaves no file.
        let layout = try Qcow2Overlay(virtualSize: virtualSize, backing: backing, backingFormat: backingFormat)
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        var info = stat()
        if lstat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK {
            throw DestinationRefused(description: "destination directory \(directory) is a symlink; livecopy creates nothing through a link")
        }
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard directoryFD >= 0 else {
            let code = errno
            if code == ELOOP || code == ENOTDIR {
                throw DestinationRefused(description: "destination directory \(directory) is a symlink or not a directory")
            }
            throw CreationFailed(description: "cannot open destination directory \(directory): \(String(cString: strerror(code)))")
        }
        defer { close(directoryFD) }
        let fd = openat(directoryFD, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let code = errno
            if code == EEXIST || code == ELOOP {
                let kind = lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK ? "a symlink" : "a file"
                throw DestinationRefused(description: "destination \(path) appeared meanwhile (\(kind) livecopy did not create); it was left untouched")
            }
            throw CreationFailed(description: "cannot create \(path): \(String(cString: strerror(code)))")
        }
        defer { close(fd) }
        do {
            try layout.write(to: fd, path: path)
        } catch {
            // Remove the file only if the name still leads to the one created here.
            var created = stat()
            var named = stat()
            if fstat(fd, &created) == 0, fstatat(directoryFD, name, &named, AT_SYMLINK_NOFOLLOW) == 0,
               created.st_dev == named.st_dev, created.st_ino == named.st_ino {
                unlinkat(directoryFD, name, 0)
            }
            throw error
        }
    }
}

/// A destination that could not be made (other than `DestinationRefused`).
struct CreationFailed: Error, CustomStringConvertible {
    let description: String
}

/// An empty qcow2 (version 3) overlay, as `qemu-img create -f qcow2 -b BACKING -F FORMAT`
/// writes it: 64 KiB clusters, 16-bit refcounts; cluster 0 the header, its extensions
/// (the backing format, recorded so nothing ever probes it) and the backing file name;
/// cluster 1 the refcount table; cluster 2 the one refcount block; then the L1 table,
/// all zero (nothing allocated: every read falls through to the backing file).
struct Qcow2Overlay {
    static let clusterBits: UInt32 = 16
    static let clusterSize = 1 << 16
    /// Bytes one L1 entry covers: an L2 table of 8192 entries of 64 KiB clusters.
    static let bytesPerL1Entry: Int64 = Int64(clusterSize / 8) * Int64(clusterSize)
    /// 16-bit refcounts in one refcount block: the clusters the layout may use.
    static let maxClusters = clusterSize / 2

    let virtualSize: Int64
    let backing: String
    let backingFormat: String
    let l1Entries: Int
    let l1Clusters: Int

    init(virtualSize: Int64, backing: String, backingFormat: String) throws {
        guard virtualSize >= 0, virtualSize % 512 == 0 else {
            throw CreationFailed(description: "virtual size \(virtualSize) is not a multiple of 512 bytes")
        }
        guard !backing.isEmpty, backing.utf8.count <= 1023 else {
            throw CreationFailed(description: "backing file name must be 1 to 1023 bytes long")
        }
        guard !backingFormat.isEmpty, backingFormat.utf8.count <= 255, backingFormat.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw CreationFailed(description: "backing format '\(backingFormat)' is not a format name")
        }
        self.virtualSize = virtualSize
        self.backing = backing
        self.backingFormat = backingFormat
        // Rounded up without adding first: a hostile header's size near Int64.max must be
        // refused, not overflow.
        let entries = virtualSize / Self.bytesPerL1Entry + (virtualSize % Self.bytesPerL1Entry == 0 ? 0 : 1)
        let clusters = max(1, entries / Int64(Self.clusterSize / 8) + (entries % Int64(Self.clusterSize / 8) == 0 ? 0 : 1))
        guard 3 + clusters <= Int64(Self.maxClusters) else {
            throw CreationFailed(description: "virtual size \(virtualSize) is too large for one refcount block")
        }
        l1Entries = Int(entries)
        l1Clusters = Int(clusters)
    }

    /// Cluster 0: the header, its extensions and the backing file name.
    var header: [UInt8] {
        var bytes: [UInt8] = []
        func u32(_ value: UInt32) { bytes += withUnsafeBytes(of: value.bigEndian, Array.init) }
        func u64(_ value: UInt64) { bytes += withUnsafeBytes(of: value.bigEndian, Array.init) }
        let headerLength: UInt32 = 112
        let format = Array(backingFormat.utf8)
        let formatPadded = (format.count + 7) / 8 * 8
        let backingOffset = UInt64(headerLength) + 8 + UInt64(formatPadded) + 8
        u32(0x5146_49fb)  // "QFI\xfb"
        u32(3)  // version
        u64(backingOffset)
        u32(UInt32(backing.utf8.count))
        u32(Self.clusterBits)
        u64(UInt64(virtualSize))
        u32(0)  // no encryption
        u32(UInt32(l1Entries))
        u64(UInt64(3 * Self.clusterSize))  // L1 table
        u64(UInt64(Self.clusterSize))  // refcount table
        u32(1)  // refcount table clusters
        u32(0)  // snapshots
        u64(0)
        u64(0)  // incompatible features
        u64(0)  // compatible features
        u64(0)  // autoclear features
        u32(4)  // refcount order: 16-bit refcounts
        u32(headerLength)
        bytes += [UInt8](repeating: 0, count: 8)  // compression type zlib (0), padding
        u32(0xE279_2ACA)  // backing format extension
        u32(UInt32(format.count))
        bytes += format + [UInt8](repeating: 0, count: formatPadded - format.count)
        u32(0)  // end of extensions
        u32(0)
        bytes += Array(backing.utf8)
        return bytes
    }

    /// Writes the overlay into `fd` (an empty file) and checks the length.
    func write(to fd: Int32, path: String) throws {
        let clusters = 3 + l1Clusters
        var refcountTable = [UInt8](repeating: 0, count: 8)
        refcountTable.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(2 * Self.clusterSize).bigEndian, as: UInt64.self) }
        var refcountBlock = [UInt8](repeating: 0, count: clusters * 2)
        for cluster in 0..<clusters { refcountBlock[cluster * 2 + 1] = 1 }
        for (bytes, offset) in [(header, 0), (refcountTable, Self.clusterSize), (refcountBlock, 2 * Self.clusterSize)] {
            let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard written == bytes.count else {
                throw CreationFailed(description: "cannot write the qcow2 header into \(path): \(String(cString: strerror(errno)))")
            }
        }
        // The rest (refcount table and block tails, the L1 table) is zeros: a sparse extension.
        guard ftruncate(fd, off_t(clusters * Self.clusterSize)) == 0 else {
            throw CreationFailed(description: "cannot size \(path): \(String(cString: strerror(errno)))")
        }
    }
}

extension Array where Element == BlockDeviceInfo {
    /// The `query-block` entry of `disk`: by the name QMP commands use, else by the
    /// plan's name, matching a device name, a qdev id or the top node name.
    func entry(for disk: DiskRecord) -> BlockDeviceInfo? {
        for name in [disk.qmpDevice, disk.device].compactMap({ $0 }) {
            if let found = first(where: { $0.device == name || $0.qdev == name || $0.inserted?.nodeName == name }) {
                return found
            }
        }
        return nil
    }
}

/// Which process, if any, has a file open. A write lease answers at once whether anyone
/// (any user's process) has it open; `/proc/PID/fd` then names the holder by device and
/// inode, and is the whole check where leases are not supported.
enum OpenFiles {
    /// `pid N (comm)` of a process holding `path` open, or nil. A holder seen once is
    /// looked for again for up to `settle` seconds: QEMU closes an image it dropped right
    /// after the command that dropped it, not always before its reply.
    static func holder(of path: String, settle: Double = 1) async -> String? {
        let deadline = Date().addingTimeInterval(settle)
        while true {
            guard let found = check(path) else { return nil }
            if Date() >= deadline { return found }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    private static func check(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        if fd < 0 && errno == ENOENT { return nil }
        if fd >= 0 {
            let answer = livecopy_open_elsewhere(fd)
            close(fd)
            if answer == 0 { return nil }
            if answer == 1 { return scan(path) ?? "a process livecopy may not look into" }
        }
        return scan(path)
    }

    private static func scan(_ path: String) -> String? {
        var target = stat()
        guard stat(path, &target) == 0 else { return nil }
        guard let processes = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        let me = String(getpid())
        for pid in processes where pid != me && pid.allSatisfy(\.isNumber) {
            guard let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { continue }
            for descriptor in descriptors {
                var info = stat()
                guard stat("/proc/\(pid)/fd/\(descriptor)", &info) == 0 else { continue }
                if info.st_dev == target.st_dev && info.st_ino == target.st_ino {
                    let name = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?
                        .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
                    return "process \(pid) (\(name))"
                }
            }
        }
        return nil
    }
}
