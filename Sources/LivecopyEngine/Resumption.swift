// The one reconciler for a disk that stopped: from its record and what its VM shows
// now, where it goes on from.

import LivecopyBackend
import LivecopyModel

/// What a disk's VM shows about it, read in one go: its device (and so its active image
/// and backing file) and its two jobs.
struct DiskSighting: Sendable {
    /// The disk's device; nil when the VM no longer has it.
    let device: VMDisk?
    /// The disk's copy job (its stream or its mirror), when the VM lists it.
    let copyJob: CopyJob?
    /// The disk's rollback job (commit or mirror back), when the VM lists it.
    let rollbackJob: CopyJob?

    var activeImage: String? { device?.medium?.file }
    var backingFile: String? { device?.medium?.backingFile }

    /// Asks the VM.
    static func look(at disk: DiskRecord, in session: any VMSession) async throws -> DiskSighting {
        let devices = try await session.disks()
        let jobs = try await session.jobs()
        return DiskSighting(device: devices.entry(for: disk), copyJob: jobs.first { $0.id == disk.copyJobId },
                            rollbackJob: jobs.first { $0.id == disk.commitJobId })
    }
}

/// Where a disk recorded `failed` or `needs_attention` goes on from. `decide` is the
/// one place this is decided: `run`, `recover` and `cancel` resume through it
/// (`DiskWorkflow.resumeFailed`, and the snapshot phase for a disk still on its source),
/// and `recover`'s report prints its answer before anything is done.
enum Resumption: CaseIterable, Sendable {
    /// A rollback job is listed, or a rollback step was under way: the rollback goes on.
    case rollBack
    /// The source was being retired, the VM is on the destination standing alone and no
    /// stream job is listed: retire again, after the same checks as a first attempt.
    case retireAgain
    /// The VM is on the destination standing alone and no stream job is listed: the
    /// stream had finished; verify, then retire.
    case verifyAlone
    /// The VM is on the destination with its backing file, or the stream job is listed:
    /// re-attach to the job, or stream again.
    case streamAgain
    /// The VM is still on the source: the snapshot again (after the split-brain check).
    case snapshotAgain
    /// Mirror strategy: the VM is on the source or the destination; the mirror step looks
    /// again (re-attach, start again from scratch, or record the pivot it finds).
    case mirrorAgain
    /// The VM is on neither image, or no longer has the device: touch nothing.
    case attention

    /// The decision for `disk` (recorded `failed` or `needs_attention`) given what its VM shows.
    static func decide(_ disk: DiskRecord, _ seen: DiskSighting) -> Resumption {
        if seen.rollbackJob != nil || disk.intent?.belongsToRollback == true { return .rollBack }
        guard let active = seen.activeImage else { return .attention }
        let retiring = disk.state == .failed && disk.intent?.belongsToRetirement == true
        switch disk.strategy {
        case .stream:
            if active == disk.source { return .snapshotAgain }
            guard active == disk.destination else { return .attention }
            guard seen.backingFile == nil, seen.copyJob == nil else { return .streamAgain }
            return retiring ? .retireAgain : .verifyAlone
        case .mirror:
            guard active == disk.source || active == disk.destination else { return .attention }
            return active == disk.destination && seen.copyJob == nil && retiring ? .retireAgain : .mirrorAgain
        }
    }

    /// The state the disk moves to.
    var nextState: DiskState {
        switch self {
        case .rollBack: return .rollingBack
        case .retireAgain: return .retiring
        case .verifyAlone, .streamAgain: return .streaming
        case .snapshotAgain: return .snapshotting
        case .mirrorAgain: return .mirroring
        case .attention: return .needsAttention
        }
    }

    /// What happens next, in a few words (for `recover`'s report and the timeline).
    var summary: String {
        switch self {
        case .rollBack: return "resuming the interrupted rollback"
        case .retireAgain: return "resuming the retirement of the source"
        case .verifyAlone: return "resuming: the destination already stands alone"
        case .streamAgain: return "resuming the stream"
        case .snapshotAgain: return "resuming: the VM is still on the source"
        case .mirrorAgain: return "resuming the mirror"
        case .attention: return "touching nothing: the VM is on neither image"
        }
    }

    /// The rule, one line of the table in docs/recovery.md (checked by a test).
    var rule: String {
        switch self {
        case .rollBack: return "a rollback job listed, or a rollback step under way | `rolling_back`: the rollback goes on"
        case .retireAgain: return "recorded `failed` while retiring; the VM on the destination with no backing file; no copy job | `retiring`: retire again, after the same checks"
        case .verifyAlone: return "the VM on the destination with no backing file; no stream job | `streaming`: verify, then retire"
        case .streamAgain: return "the VM on the destination with its backing file, or the stream job listed | `streaming`: re-attach, or stream again"
        case .snapshotAgain: return "the VM on the source | `snapshotting`: split-brain check, then the snapshot again"
        case .mirrorAgain: return "mirror strategy: the VM on the source or the destination | `mirroring`: re-attach, record the pivot found, or mirror again from scratch after the lost-pivot check"
        case .attention: return "the VM on another image, or without the device | `needs_attention`: nothing touched"
        }
    }
}
