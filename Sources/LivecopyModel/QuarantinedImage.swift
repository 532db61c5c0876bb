import Foundation

/// Where a quarantined source stands (`quarantined_images.state`). `held` is the file in
/// quarantine; `purging` and `restoring` are the open intents of `livecopy purge` and
/// `livecopy restore` (recorded before the unlink or the rename, so that a crash between
/// the two is resumed by the next run); `purged` and `restored` are final.
public enum QuarantineState: String, CaseIterable, Codable, Sendable {
    /// In quarantine, waiting for its time to be up (or for `restore`).
    case held
    /// `purge` is about to delete it (or did, and died before recording so).
    case purging
    /// Deleted by `purge`. Final.
    case purged
    /// `restore` is about to move it back to its original path (or did, and died before recording so).
    case restoring
    /// Back at its original path. Final.
    case restored

    /// The moves each state allows: a refusal closes an open intent back to `held`.
    public var allowedNext: Set<QuarantineState> {
        switch self {
        case .held: return [.purging, .restoring]
        case .purging: return [.purged, .held]
        case .restoring: return [.restored, .held]
        case .purged, .restored: return []
        }
    }

    public var isFinal: Bool { allowedNext.isEmpty }

    /// Whether the file is (or may still be) in quarantine: held, or an intent on it open.
    public var occupiesQuarantine: Bool { self == .held || self == .purging || self == .restoring }
}

/// One source moved into quarantine by `retire_source: quarantine` (a row of
/// `quarantined_images`): where it came from, where it is, which file it is (device and
/// inode when it was moved), and until when it is kept.
public struct QuarantinedImage: Sendable, Equatable {
    public let id: Int64
    public let diskId: Int64
    public let planId: Int64
    /// The source's path before it was quarantined (where `restore` puts it back).
    public let originalPath: String
    /// Its path in quarantine: `<source dir>/.livecopy-quarantine/<plan>-<disk>-<name>`.
    public let quarantinePath: String
    /// The space the file held on its file system when it was moved (allocated blocks, as `du` counts).
    public let sizeBytes: Int64
    /// The file's device and inode numbers when it was moved: `purge` and `restore` act
    /// only on that very file.
    public let device: UInt64
    public let inode: UInt64
    public let quarantinedAt: Date
    /// When `purge` may delete it (`quarantined_at` + the policy's `quarantine_for`).
    public let expiresAt: Date
    public var state: QuarantineState
    /// When it was purged or restored.
    public var endedAt: Date?

    public init(id: Int64, diskId: Int64, planId: Int64, originalPath: String, quarantinePath: String, sizeBytes: Int64,
                device: UInt64, inode: UInt64, quarantinedAt: Date, expiresAt: Date, state: QuarantineState, endedAt: Date?) {
        self.id = id
        self.diskId = diskId
        self.planId = planId
        self.originalPath = originalPath
        self.quarantinePath = quarantinePath
        self.sizeBytes = sizeBytes
        self.device = device
        self.inode = inode
        self.quarantinedAt = quarantinedAt
        self.expiresAt = expiresAt
        self.state = state
        self.endedAt = endedAt
    }

    /// Whether its time is up at `now`.
    public func hasExpired(at now: Date) -> Bool { expiresAt <= now }
}

/// A quarantined source about to be recorded, in the same write as its disk's move to `completed`.
public struct NewQuarantinedImage: Sendable, Equatable {
    public var originalPath: String
    public var quarantinePath: String
    public var sizeBytes: Int64
    public var device: UInt64
    public var inode: UInt64
    public var quarantinedAt: Date
    public var expiresAt: Date

    public init(originalPath: String, quarantinePath: String, sizeBytes: Int64, device: UInt64, inode: UInt64,
                quarantinedAt: Date, expiresAt: Date) {
        self.originalPath = originalPath
        self.quarantinePath = quarantinePath
        self.sizeBytes = sizeBytes
        self.device = device
        self.inode = inode
        self.quarantinedAt = quarantinedAt
        self.expiresAt = expiresAt
    }
}

/// What quarantine holds, for `status`: the images still in it, the space they take and
/// the next one whose time is up.
public struct QuarantineSummary: Sendable, Equatable {
    /// Images held (or with a purge or restore under way).
    public var count: Int
    /// The sum of their `size_bytes`.
    public var bytes: Int64
    /// The earliest `expires_at` of those held; nil when none is.
    public var nextExpiry: Date?

    public init(count: Int, bytes: Int64, nextExpiry: Date?) {
        self.count = count
        self.bytes = bytes
        self.nextExpiry = nextExpiry
    }
}
