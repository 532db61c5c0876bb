/// A job of a VM: a pull, commit or mirror livecopy started, or any other tool's job.
public struct CopyJob: Sendable {
    public let id: String
    /// The job's type as the hypervisor names it (`stream`, `commit`, `mirror`, `backup`,
    /// `snapshot-save`, …).
    public let type: String
    public let status: JobStatus
    /// Work done so far, in units of `totalProgress` (bytes for QEMU's block jobs).
    public let currentProgress: Int64
    public let totalProgress: Int64
    /// Set on a concluded job that failed.
    public let error: String?

    public init(id: String, type: String, status: JobStatus, currentProgress: Int64, totalProgress: Int64, error: String?) {
        self.id = id
        self.type = type
        self.status = status
        self.currentProgress = currentProgress
        self.totalProgress = totalProgress
        self.error = error
    }
}

/// What a VM says about its jobs as it happens.
public enum JobEvent: Sendable, Hashable {
    /// Job `id` moved to `status`.
    case statusChanged(id: String, status: JobStatus)
    /// Job `id` met an I/O error in `operation` (`read`, `write`) and reacted with `action`
    /// (`stop`, `report`, `ignore`).
    case ioError(id: String, operation: String, action: String)
}

/// One overlay to put on top of a disk's active image (`VMSession.switchToOverlays`).
public struct OverlayRequest: Sendable, Equatable {
    /// The disk: a device name, or the active image's node name.
    public let disk: DiskTarget
    /// The overlay file, made beforehand by livecopy (never created by the hypervisor).
    public let overlayFile: String
    /// The name the overlay is opened as (QEMU's node name).
    public let overlayNodeName: String
    /// A dirty bitmap to add on the overlay in the same transaction (`.dirtyTracking`),
    /// recording the guest's writes from the switch on; nil adds none.
    public let dirtyBitmap: String?

    public init(disk: DiskTarget, overlayFile: String, overlayNodeName: String, dirtyBitmap: String? = nil) {
        self.dirtyBitmap = dirtyBitmap
        self.disk = disk
        self.overlayFile = overlayFile
        self.overlayNodeName = overlayNodeName
    }
}

/// How an operation names the disk it acts on.
public enum DiskTarget: Sendable, Equatable {
    /// A device name.
    case device(String)
    /// The active image's node name.
    case node(String)

    /// The name, whichever kind it is.
    public var name: String {
        switch self {
        case .device(let name), .node(let name): return name
        }
    }
}

/// What the hypervisor said about a flush: only `.confirmed` allows a step that relies on
/// the data being on disk.
public enum FlushEvidence: Sendable, Hashable {
    /// The hypervisor flushed the image and reported no error.
    case confirmed
    /// The hypervisor tried to flush and the flush failed (its message).
    case failed(String)
    /// The hypervisor did not flush, or said something livecopy cannot read as success.
    case notConfirmed(String)

    /// Nil when confirmed; else what went wrong, as "failed (…)" or "could not be
    /// confirmed (…)", for the refusal that follows.
    public var problem: String? {
        switch self {
        case .confirmed: return nil
        case .failed(let why): return "failed (\(why))"
        case .notConfirmed(let why): return "could not be confirmed (\(why))"
        }
    }
}

/// A mirror's destination as the hypervisor opens it (`VMSession.openImage`).
public struct ImageToOpen: Sendable, Equatable {
    /// The name the image is opened as (QEMU's node name).
    public let nodeName: String
    /// The file or block device, made or checked by livecopy beforehand.
    public let path: String
    /// `qcow2` or `raw` (given, never probed).
    public let format: String
    /// A block device rather than a regular file.
    public let isBlockDevice: Bool
    /// For raw: how many bytes of `path` the disk sees (a block device may be larger).
    public let size: Int64?
    /// The source device's cache mode and zero detection, which the VM keeps after the
    /// pivot (nil: the hypervisor's defaults).
    public let ioSettings: VMDisk.IOSettings?

    public init(nodeName: String, path: String, format: String, isBlockDevice: Bool, size: Int64?,
                ioSettings: VMDisk.IOSettings? = nil) {
        self.nodeName = nodeName
        self.path = path
        self.format = format
        self.isBlockDevice = isBlockDevice
        self.size = size
        self.ioSettings = ioSettings
    }
}

/// A mirror livecopy starts (`VMSession.startMirror(_:)`): the disk's whole chain into an
/// image opened with `openImage`, held at READY until `complete`, and pivoting only at
/// `finalize`.
public struct MirrorRequest: Sendable, Equatable {
    /// The disk, as block commands name it.
    public let disk: String
    public let jobId: String
    /// The destination's node name (`ImageToOpen.nodeName`).
    public let targetNode: String
    /// Bytes per second; 0 is unlimited.
    public let speed: Int64
    /// The I/O error action for both sides (`stop`, `enospc`, `report`).
    public let onError: String
    /// `background` or `write-blocking`. QEMU's `buf-size` and `granularity` keep their
    /// defaults: no other value was clearly faster (scripts/benchlib/MIRROR_NOTES.md).
    public let copyMode: String

    public init(disk: String, jobId: String, targetNode: String, speed: Int64, onError: String, copyMode: String) {
        self.disk = disk
        self.jobId = jobId
        self.targetNode = targetNode
        self.speed = speed
        self.onError = onError
        self.copyMode = copyMode
    }
}
