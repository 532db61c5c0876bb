/// A side effect livecopy announced for a disk and has not yet seen through: recorded
/// (the disk's `intent` column and an `intent` event) right before the side effect, and
/// cleared by its outcome. After a crash, the open intent says what to reconcile.
///
/// Together with `DiskState` it is the disk's whole state: each intent belongs to one
/// step of the recipe (`step`), and may stay open only in that step's state or, after an
/// error, in `failed` or `needs_attention` (`isAllowed(in:)`). The raw values are what
/// the database and the crash points (`intent:<raw>`) use.
public enum DiskIntent: String, CaseIterable, Codable, Sendable {
    /// livecopy creates the destination overlay (exclusively, mode 0600).
    case createDestination = "create-destination"
    /// The VM's disks switch onto their destinations (`blockdev-snapshot-sync`, in one transaction).
    case snapshot = "blockdev-snapshot-sync"
    /// The stream job starts (`block-stream`).
    case stream = "block-stream"
    /// The destination is flushed, with QEMU's confirmation, then the job is finalized.
    case finalize = "job-finalize"
    /// The source is renamed to `<source>.retired`.
    case renameSource = "rename"
    /// The source is deleted.
    case deleteSource = "delete-source"
    /// Rollback: the stream job is cancelled.
    case cancelStream = "block-job-cancel"
    /// Rollback: an active commit of the destination into the source starts.
    case commitBack = "block-commit"
    /// Rollback after the stream finished: a mirror of the destination back into the source starts.
    case mirrorBack = "drive-mirror"
    /// Rollback: the device pivots back to the source (`block-job-complete`).
    case pivotBack = "block-job-complete"
    /// Rollback: the VM is on the source with every write; the destination is deleted.
    case deleteDestination = "delete-destination"

    /// The state a disk is in while it carries this intent out.
    public var step: DiskState {
        switch self {
        case .createDestination, .snapshot: return .snapshotting
        case .stream, .finalize: return .streaming
        case .renameSource, .deleteSource: return .retiring
        case .cancelStream, .commitBack, .mirrorBack, .pivotBack, .deleteDestination: return .rollingBack
        }
    }

    /// Whether a disk in `state` may hold this intent open: in its step, or left open by an
    /// error that moved the disk to `failed` or `needs_attention`.
    public func isAllowed(in state: DiskState) -> Bool {
        switch state {
        case .failed, .needsAttention: return true
        case .pending, .snapshotting, .streaming, .retiring, .completed, .rollingBack, .rolledBack: return state == step
        }
    }

    /// Intents only a rollback records: a disk stopped with one of them open goes on rolling back.
    public var belongsToRollback: Bool { step == .rollingBack }
}
