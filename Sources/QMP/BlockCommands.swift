import Foundation

/// One entry of `query-block`: a block device and the image chain inserted in it.
public struct BlockDeviceInfo: Decodable, Sendable {
    /// The BlockBackend name (`-drive id=…`); empty for `-blockdev` disks attached to a device.
    public let device: String
    /// The qdev id or path of the guest device, if any.
    public let qdev: String?
    public let inserted: InsertedImage?

    /// The medium in the device.
    public struct InsertedImage: Decodable, Sendable {
        /// The active (top) image's file name.
        public let file: String
        /// The active image's node name.
        public let nodeName: String?
        /// The active image's backing file name, if it has one.
        public let backingFile: String?
        /// The active image's driver (`qcow2`, `raw`, …).
        public let drv: String
        public let image: ImageInfo
        /// How the device caches its I/O (absent from very old QEMUs).
        public let cache: Cache?
        /// `off`, `on` or `unmap`.
        public let detectZeroes: String?
        /// The active image's dirty bitmaps.
        public let dirtyBitmaps: [DirtyBitmapInfo]?

        enum CodingKeys: String, CodingKey {
            case file, drv, image, cache
            case dirtyBitmaps = "dirty-bitmaps"
            case nodeName = "node-name"
            case backingFile = "backing_file"
            case detectZeroes = "detect_zeroes"
        }
    }

    /// `query-block`'s `inserted.cache`.
    public struct Cache: Decodable, Sendable {
        /// O_DIRECT (`cache=none` or `directsync`).
        public let direct: Bool
        /// Flushes ignored (`cache=unsafe`).
        public let noFlush: Bool

        enum CodingKeys: String, CodingKey {
            case direct
            case noFlush = "no-flush"
        }
    }
}

/// QEMU's `ImageInfo`: one image and, recursively, its backing chain.
public final class ImageInfo: Decodable, Sendable {
    public let filename: String
    public let format: String
    public let virtualSize: Int64
    public let actualSize: Int64?
    public let backingFilename: String?
    public let backingFilenameFormat: String?
    public let backingImage: ImageInfo?

    enum CodingKeys: String, CodingKey {
        case filename, format
        case virtualSize = "virtual-size"
        case actualSize = "actual-size"
        case backingFilename = "backing-filename"
        case backingFilenameFormat = "backing-filename-format"
        case backingImage = "backing-image"
    }
}

/// One entry of `query-jobs`.
public struct JobInfo: Decodable, Sendable {
    public let id: String
    public let type: String
    /// QEMU's `JobStatus` name (`running`, `pending`, `concluded`, …).
    public let status: String
    public let currentProgress: Int64
    public let totalProgress: Int64
    /// Set on a concluded job that failed.
    public let error: String?

    enum CodingKeys: String, CodingKey {
        case id, type, status, error
        case currentProgress = "current-progress"
        case totalProgress = "total-progress"
    }
}

/// One entry of `query-block-jobs` (used for `io-status`, which `query-jobs` lacks).
public struct BlockJobInfo: Decodable, Sendable {
    /// The job id (block jobs report it as `device`).
    public let device: String
    public let type: String
    public let paused: Bool
    public let speed: Int64
    /// ok, failed or nospace.
    public let ioStatus: String?

    enum CodingKeys: String, CodingKey {
        case device, type, paused, speed
        case ioStatus = "io-status"
    }
}

/// What `query-migrate` says; `status` is absent when the VM never migrated.
public struct MigrationInfo: Decodable, Sendable {
    /// none, setup, cancelling, cancelled, active, postcopy-active, postcopy-paused,
    /// postcopy-recover, completed, failed, colo, pre-switchover, device, wait-unplug.
    public let status: String?
}

/// The block-layer commands livecopy sends, typed. Each is one QMP command. There is no
/// `query-named-block-nodes`: QEMU 7.2 can crash (SIGSEGV) answering it while a block job
/// of the VM finishes.
extension QMPSession {
    public func queryBlock() async throws -> [BlockDeviceInfo] {
        try await execute("query-block").decode([BlockDeviceInfo].self)
    }

    public func queryJobs() async throws -> [JobInfo] {
        try await execute("query-jobs").decode([JobInfo].self)
    }

    public func queryBlockJobs() async throws -> [BlockJobInfo] {
        try await execute("query-block-jobs").decode([BlockJobInfo].self)
    }

    /// `query-migrate`: whether the VM is migrating now.
    public func queryMigrate() async throws -> MigrationInfo {
        try await execute("query-migrate").decode(MigrationInfo.self)
    }

    /// One QMP `transaction` of `blockdev-snapshot-sync` actions: every snapshot happens,
    /// or (on an error reply) none does. This is how a VM's disks switch to their
    /// destinations together, as one crash-consistent set.
    public func snapshotTransaction(_ snapshots: [SnapshotRequest]) async throws {
        let actions = snapshots.flatMap { snapshot -> [JSONValue] in
            var actions: [JSONValue] = [.object(["type": "blockdev-snapshot-sync", "data": .object(snapshot.arguments)])]
            // The bitmap is added on the overlay in the same transaction: it records every
            // guest write to the overlay from the switch on, and none is missed between them.
            if let bitmap = snapshot.dirtyBitmap {
                actions.append(.object(["type": "block-dirty-bitmap-add", "data": .object([
                    "node": .string(snapshot.snapshotNodeName), "name": .string(bitmap),
                ])]))
            }
            return actions
        }
        try await execute("transaction", ["actions": .array(actions)])
    }

    /// `block-stream` into the active layer of `device`, as job `jobId`, never
    /// auto-dismissed, and never auto-finalized: the job waits in `pending` until
    /// `job-finalize`, so the caller can make the copied data durable before QEMU rewrites
    /// the image header without its backing file.
    public func blockStream(device: String, jobId: String, speed: Int64, onError: String) async throws {
        try await execute("block-stream", [
            "device": .string(device), "job-id": .string(jobId), "auto-dismiss": false, "auto-finalize": false,
            "speed": .int(speed), "on-error": .string(onError),
        ])
    }

    /// `job-finalize` of a job waiting in `pending`.
    public func jobFinalize(jobId: String) async throws {
        try await execute("job-finalize", ["id": .string(jobId)])
    }

    /// Active `block-commit` of `device`'s top image into the image of its chain opened as
    /// `baseFile` (the exact file name QEMU shows; nil: the bottom of the chain), as job
    /// `jobId`. Naming the base by file spares a `query-named-block-nodes`, which QEMU 7.2
    /// can crash on while another block job of the VM changes the graph.
    public func blockCommit(device: String, jobId: String, baseFile: String?, speed: Int64) async throws {
        var arguments: [String: JSONValue] = [
            "device": .string(device), "job-id": .string(jobId), "auto-dismiss": false, "speed": .int(speed),
        ]
        if let baseFile { arguments["base"] = .string(baseFile) }
        try await execute("block-commit", arguments)
    }

    /// `drive-mirror` of `device`'s whole chain into the existing image `target`, as job
    /// `jobId`; `block-job-complete` then pivots the device onto `target`.
    public func driveMirrorToExisting(device: String, jobId: String, target: String, format: String) async throws {
        try await execute("drive-mirror", [
            "device": .string(device), "job-id": .string(jobId), "target": .string(target), "format": .string(format),
            "mode": "existing", "sync": "full", "auto-dismiss": false,
        ])
    }

    /// `blockdev-add` of an existing image file or block device as node `nodeName`, its
    /// format given (never probed). A raw image of `size` bytes shows only its first
    /// `size` bytes (a block device larger than the disk it receives).
    /// `cacheDirect`, `cacheNoFlush` and `detectZeroes` are the node's cache mode and
    /// zero detection (nil: QEMU's defaults).
    public func blockdevAdd(nodeName: String, filename: String, format: String, blockDevice: Bool, size: Int64?,
                            cacheDirect: Bool?, cacheNoFlush: Bool?, detectZeroes: String?) async throws {
        var arguments: [String: JSONValue] = [
            "node-name": .string(nodeName), "driver": .string(format),
            "file": .object(["driver": .string(blockDevice ? "host_device" : "file"), "filename": .string(filename)]),
        ]
        if let size { arguments["size"] = .int(size) }
        var cache: [String: JSONValue] = [:]
        if let cacheDirect { cache["direct"] = .bool(cacheDirect) }
        if let cacheNoFlush { cache["no-flush"] = .bool(cacheNoFlush) }
        if !cache.isEmpty { arguments["cache"] = .object(cache) }
        if let detectZeroes { arguments["detect-zeroes"] = .string(detectZeroes) }
        try await execute("blockdev-add", arguments)
    }

    /// `blockdev-del` of node `nodeName` (with its file node, which it owns).
    public func blockdevDel(nodeName: String) async throws {
        try await execute("blockdev-del", ["node-name": .string(nodeName)])
    }

    /// `blockdev-mirror` of `device`'s whole chain (`sync: full`) into node `target`, as
    /// job `jobId`, never auto-finalized nor auto-dismissed: the pivot happens only at
    /// `job-finalize`, after `block-job-complete`.
    /// `onError` is both `on-source-error` and `on-target-error`; `buf-size` and
    /// `granularity` keep QEMU's defaults.
    public func blockdevMirror(device: String, jobId: String, targetNode: String, speed: Int64, onError: String,
                               copyMode: String) async throws {
        let arguments: [String: JSONValue] = [
            "device": .string(device), "job-id": .string(jobId), "target": .string(targetNode),
            "sync": "full", "auto-finalize": false, "auto-dismiss": false, "speed": .int(speed),
            "on-source-error": .string(onError), "on-target-error": .string(onError), "copy-mode": .string(copyMode),
        ]
        try await execute("blockdev-mirror", arguments)
    }

    public func blockJobComplete(jobId: String) async throws {
        try await execute("block-job-complete", ["device": .string(jobId)])
    }

    public func blockJobCancel(jobId: String, force: Bool) async throws {
        try await execute("block-job-cancel", ["device": .string(jobId), "force": .bool(force)])
    }

    public func blockJobResume(jobId: String) async throws {
        try await execute("block-job-resume", ["device": .string(jobId)])
    }

    public func blockJobPause(jobId: String) async throws {
        try await execute("block-job-pause", ["device": .string(jobId)])
    }

    public func blockJobSetSpeed(jobId: String, speed: Int64) async throws {
        try await execute("block-job-set-speed", ["device": .string(jobId), "speed": .int(speed)])
    }

    public func jobDismiss(jobId: String) async throws {
        try await execute("job-dismiss", ["id": .string(jobId)])
    }
}

/// One `blockdev-snapshot-sync`: a new qcow2 overlay `snapshotFile` on top of the
/// active image of `target` (a device, or the top node).
public struct SnapshotRequest: Sendable, Equatable {
    public let target: BlockTarget
    public let snapshotFile: String
    public let snapshotNodeName: String
    /// `existing` opens a file made beforehand; `absolute-paths` lets QEMU create (and
    /// truncate, following links) the file.
    public let mode: String
    /// A dirty bitmap to add on the overlay in the same transaction, if any.
    public let dirtyBitmap: String?

    public init(target: BlockTarget, snapshotFile: String, snapshotNodeName: String, mode: String, dirtyBitmap: String? = nil) {
        self.dirtyBitmap = dirtyBitmap
        self.target = target
        self.snapshotFile = snapshotFile
        self.snapshotNodeName = snapshotNodeName
        self.mode = mode
    }

    /// The command's arguments, the overlay's format always given (never probed).
    public var arguments: [String: JSONValue] {
        var arguments: [String: JSONValue] = [
            "snapshot-file": .string(snapshotFile), "snapshot-node-name": .string(snapshotNodeName),
            "format": "qcow2", "mode": .string(mode),
        ]
        switch target {
        case .device(let name): arguments["device"] = .string(name)
        case .node(let name): arguments["node-name"] = .string(name)
        }
        return arguments
    }
}

/// How a block command names what it acts on.
public enum BlockTarget: Sendable, Equatable {
    /// A BlockBackend (device) name.
    case device(String)
    /// A graph node name.
    case node(String)
}
