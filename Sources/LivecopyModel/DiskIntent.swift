/// A side effect livecopy announced for a disk and has not yet seen through: recorded
/// (the disk's `intent` column and an `intent` event) right before the side effect, and
/// cleared by its outcome. After a crash, the open intent says what to reconcile.
///
/// Together with `DiskState` it is the disk's whole state: each intent belongs to one
/// step of the recipe (`step`), and may stay open only in that step's state or, after an
/// error, in `failed` or `needs_attention` (`isAllowed(in:)`). The raw values are what
/// the database and the crash points (`intent:<raw>`) use.
public enum DiskIntent: String, CaseIterable, Codable, Sendable {
    /// livecopy creates the destination (exclusively, mode 0600): the overlay of the stream
    /// strategy, or the mirror strategy's standalone qcow2 or raw file. A block device is
    /// never created, only checked.
    case createDestination = "create-destination"
    /// The VM's disks switch onto their destinations (`blockdev-snapshot-sync`, in one transaction).
    case snapshot = "blockdev-snapshot-sync"
    /// The stream job starts (`block-stream`).
    case stream = "block-stream"
    /// The destination is flushed, with QEMU's confirmation, then the job is finalized.
    case finalize = "job-finalize"
    /// Mirror strategy: the destination is opened in QEMU and the mirror job starts
    /// (`blockdev-add`, `blockdev-mirror`).
    case mirror = "blockdev-mirror"
    /// Mirror strategy: the destination is flushed with QEMU's confirmation, the job is
    /// completed and finalized, and the device pivots onto the destination. While this
    /// intent is open nobody can tell from the record alone which image is the VM's.
    case pivot
    /// The destination's data is compared with the source's (policy `verify`) through a
    /// read-only NBD export of the destination and a frozen copy of its dirty bitmap;
    /// nothing is written, and an interrupted comparison is simply made again.
    case verify
    /// The source is renamed to `<source>.retired`.
    case renameSource = "rename"
    /// The source is deleted.
    case deleteSource = "delete-source"
    /// The source is moved into `.livecopy-quarantine/` in its own directory (never over a file).
    case quarantineSource = "quarantine-source"
    /// Rollback: the copy job (stream or mirror) is cancelled.
    case cancelCopy = "block-job-cancel"
    /// Rollback: an active commit of the destination into the source starts.
    case commitBack = "block-commit"
    /// Rollback after the stream finished: a mirror of the destination back into the source starts.
    case mirrorBack = "drive-mirror"
    /// Rollback: the device pivots back to the source (`block-job-complete`).
    case pivotBack = "block-job-complete"
    /// Rollback: the VM is on the source with every write; the destination is deleted.
    case deleteDestination = "delete-destination"

    /// The states a disk is in while it carries this intent out: one step of the recipe
    /// (the destination is created in the stream strategy's `snapshotting` or the mirror
    /// strategy's `mirroring`).
    public var steps: Set<DiskState> {
        switch self {
        case .createDestination: return [.snapshotting, .mirroring]
        case .snapshot: return [.snapshotting]
        case .stream, .finalize: return [.streaming]
        case .mirror, .pivot: return [.mirroring]
        case .verify, .renameSource, .deleteSource, .quarantineSource: return [.retiring]
        case .cancelCopy, .commitBack, .mirrorBack, .pivotBack, .deleteDestination: return [.rollingBack]
        }
    }

    /// Whether a disk in `state` may hold this intent open: in its step, or left open by an
    /// error that moved the disk to `failed` or `needs_attention`.
    public func isAllowed(in state: DiskState) -> Bool {
        switch state {
        case .failed, .needsAttention: return true
        case .pending, .snapshotting, .streaming, .mirroring, .retiring, .completed, .rollingBack, .rolledBack:
            return steps.contains(state)
        }
    }

    /// Intents only a rollback records: a disk stopped with one of them open goes on rolling back.
    public var belongsToRollback: Bool { steps == [.rollingBack] }

    /// Intents of the retiring step.
    public var belongsToRetirement: Bool { steps == [.retiring] }
}
