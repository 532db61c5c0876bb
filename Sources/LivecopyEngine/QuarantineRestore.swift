// `livecopy restore DISK`: a quarantined source back at its original path, while the VM is off.

import CSystemExtras
import Foundation
import LivecopyBackend
import LivecopyModel

/// Whether a VM is running, as far as livecopy can tell without starting anything.
public enum VMPower: Sendable, Equatable {
    /// It is not running: how that is known.
    case off(String)
    /// It runs: how that is known.
    case running(String)
    /// livecopy cannot tell, and why.
    case unknown(String)

    /// A QMP address: QEMU listens on its monitor socket while it runs. The socket file
    /// missing, or a connection to it refused (a socket file QEMU left behind when it
    /// died), means no QEMU serves it; a connection accepted (or queued) means one does.
    /// The connection is closed at once, before QEMU's greeting is read.
    public static func ofQMPSocket(_ socketPath: String) -> VMPower {
        var info = stat()
        guard lstat(socketPath, &info) == 0 else {
            if errno == ENOENT { return .off("its QMP socket \(socketPath) does not exist") }
            return .unknown("cannot inspect its QMP socket \(socketPath): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else { return .unknown("\(socketPath) is not a socket") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        let bytes = Array(socketPath.utf8)
        guard bytes.count < capacity else { return .unknown("its QMP socket path \(socketPath) is too long to connect to") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        #if canImport(Glibc)
        let kind = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        #else
        let kind = SOCK_STREAM
        #endif
        let fd = socket(AF_UNIX, kind, 0)
        guard fd >= 0 else { return .unknown("cannot make a socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if connected == 0 { return .running("QEMU accepts connections on its QMP socket \(socketPath)") }
        switch errno {
        case ECONNREFUSED: return .off("nothing listens on its QMP socket \(socketPath) (connection refused)")
        case EAGAIN, EINPROGRESS: return .running("QEMU listens on its QMP socket \(socketPath) (its queue of connections is full)")
        case ENOENT: return .off("its QMP socket \(socketPath) does not exist")
        default: return .unknown("cannot connect to its QMP socket \(socketPath): \(String(cString: strerror(errno)))")
        }
    }
}

/// Puts a quarantined source back at its original path, only while its VM is off:
///
/// 1. a look first (nothing recorded): the image is held, its VM is off
///    (`VMPower`), no process holds the disk's destination or the quarantined file, the
///    file is the one moved there (device and inode), and nothing is at the original path;
/// 2. the intent: `held` → `restoring`, an `intent` event in the disk's timeline (crash
///    point `intent:restore`);
/// 3. the same checks again, then the rename back, never over a file (crash point
///    `sent:restore`); a refusal returns the row to `held`;
/// 4. the outcome: `restored`, with an event naming the image the VM's manager must now
///    boot from. The disk itself stays `completed`.
///
/// A row left `restoring` by a crash is resumed by the next `restore`: the file at the
/// original path with the recorded numbers, and none in quarantine, is recorded as done.
public struct QuarantineRestore: Sendable {
    public struct Outcome: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            case restored
            /// The interrupted restore had moved it; recorded now.
            case alreadyRestored
            /// It was restored before; nothing to do.
            case wasRestored
            case refused
        }
        public let kind: Kind
        /// One line for the operator.
        public let message: String
    }

    let store: any WorkflowStore
    /// Whether the disk's VM runs (`VMPower.ofQMPSocket` for a QMP address; the caller's
    /// answer for the others).
    let power: @Sendable (DiskRecord) async -> VMPower

    public init(store: any WorkflowStore, power: @escaping @Sendable (DiskRecord) async -> VMPower) {
        self.store = store
        self.power = power
    }

    /// Restores disk `diskId`'s quarantined source. Throws `InputError` for a disk that
    /// does not exist or has no quarantined source.
    public func restore(diskId: Int64) async throws -> Outcome {
        guard let disk = try store.disk(id: diskId) else { throw InputError("no disk with id \(diskId)") }
        guard let image = try store.quarantinedImage(ofDisk: diskId) else {
            let policy = try store.plan(id: disk.planId)?.policy.retireSource.rawValue ?? "?"
            throw InputError("disk \(diskId) (\(disk.vmName)/\(disk.device), plan \(disk.planId)) has no quarantined source (its plan's retire_source is \(policy))")
        }
        let original = image.originalPath, path = image.quarantinePath
        switch image.state {
        case .purged:
            throw InputError("disk \(diskId)'s quarantined source \(path) was purged at \(ISO8601.string(image.endedAt ?? image.expiresAt)); there is nothing to restore")
        case .restored:
            return Outcome(kind: .wasRestored, message: "disk \(diskId)'s source was restored to \(original) at \(ISO8601.string(image.endedAt ?? Date())) already")
        case .purging:
            throw InputError("a purge of \(path) was interrupted (it may be deleted already); run livecopy purge to finish it")
        case .held, .restoring:
            break
        }
        let resuming = image.state == .restoring
        let ledger = QuarantineLedger(action: "restore", store: store, image: image, diskState: disk.state.rawValue)
        if !resuming, let problem = await problem(image, disk: disk) {
            return Outcome(kind: .refused, message: "not restoring \(path) to \(original): \(problem)")
        }
        if !resuming {
            try await ledger.intend("\(path) → \(original) (device \(image.device), inode \(image.inode))")
        }
        func refuse(_ problem: String) async throws -> Outcome {
            try await ledger.refuse(problem)
            return Outcome(kind: .refused, message: "not restoring \(path) to \(original): \(problem)")
        }
        let advice = bootAdvice(disk, image: image)
        if resuming, case .absent = Quarantine.lookUp(path), case .file(let there) = Quarantine.lookUp(original), there.matches(image) {
            try await ledger.finish("already restored by the interrupted attempt: \(original) is the quarantined file; \(advice)")
            return Outcome(kind: .alreadyRestored, message: "restored \(original) (the interrupted restore had moved it back); \(advice)")
        }
        // Right before the rename: reality again.
        if let problem = await problem(image, disk: disk) { return try await refuse(problem) }
        guard livecopy_rename_noreplace(path, original) == 0 else {
            let code = errno
            return try await refuse(code == EEXIST ? "\(original) exists (livecopy never overwrites a file)"
                                    : "cannot move it back: \(String(cString: strerror(code)))")
        }
        CrashPoint.reach("sent:restore")
        Quarantine.syncDirectory((original as NSString).deletingLastPathComponent)
        Quarantine.syncDirectory((path as NSString).deletingLastPathComponent)
        try await ledger.finish("moved \(path) back to \(original); \(advice)")
        return Outcome(kind: .restored, message: "restored \(path) to \(original); \(advice)")
    }

    /// Which image the VM's manager must boot from now, and what it holds.
    func bootAdvice(_ disk: DiskRecord, image: QuarantinedImage) -> String {
        let when = disk.strategy == .mirror ? "at the pivot onto \(disk.destination)" : "when the VM switched onto \(disk.destination)"
        return "the VM's manager must now boot \(disk.vmName)/\(disk.device) from \(image.originalPath) to run on the restored source: it holds the disk as it was \(when); the guest's writes since are only in \(disk.destination), left as it is"
    }

    /// What forbids the rename back now, or nil.
    func problem(_ image: QuarantinedImage, disk: DiskRecord) async -> String? {
        switch Quarantine.lookUp(image.quarantinePath) {
        case .absent: return "\(image.quarantinePath) is gone"
        case .other(let why): return why
        case .file(let found):
            guard found.matches(image) else {
                return "it is not the file livecopy quarantined (recorded device \(image.device), inode \(image.inode); now \(found))"
            }
        }
        switch Quarantine.lookUp(image.originalPath) {
        case .absent: break
        case .file, .other: return "something is at \(image.originalPath) already; livecopy never overwrites a file (move it away first)"
        }
        switch await power(disk) {
        case .running(let how): return "VM '\(disk.vmName)' is running (\(how)); stop it first"
        case .unknown(let why): return "cannot tell whether VM '\(disk.vmName)' is off (\(why))"
        case .off: break
        }
        if let holder = await OpenFiles.holder(of: disk.destination) {
            return "\(holder) holds the disk's destination \(disk.destination) open (the VM may run on it); stop it first"
        }
        if let holder = await OpenFiles.holder(of: image.quarantinePath) {
            return "\(holder) holds it open"
        }
        return nil
    }
}
