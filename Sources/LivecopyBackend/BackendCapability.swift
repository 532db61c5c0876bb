/// Something a backend can or cannot do. The three backends livecopy serves differ:
///
/// | capability | QMP stream | QMP mirror | libvirt |
/// |---|---|---|---|
/// | `holdsFinishedPull` | yes (`auto-finalize: false`) | yes | no: a pull ends by itself |
/// | `confirmedFlush` | yes (HMP `qemu-io reopen`) | yes | no flush command |
/// | `pauseJobs` | yes | yes | no |
/// | `throttleJobs` | yes | yes | yes (`virDomainBlockJobSetSpeed`) |
/// | `atomicSwitch` | yes (`transaction`) | yes | yes (one snapshot of several disks) |
/// | `ioErrorAction` | yes (`on-error`) | yes | no (the domain's policy applies) |
/// | `commitBack`, `mirrorBack` | yes | yes | yes (`BlockCommit`, `BlockCopy`) |
public enum BackendCapability: String, Sendable, Hashable, CaseIterable {
    /// A finished pull waits (`pending`) until livecopy finalizes it, so livecopy can make
    /// the copy durable before the active image drops its backing file. The stream
    /// strategy needs it: without it a crash can leave an image with neither its data
    /// nor its backing file.
    case holdsFinishedPull = "holds-finished-pull"
    /// A flush whose success the hypervisor confirms. The stream strategy needs it too.
    case confirmedFlush = "confirmed-flush"
    /// Jobs can be paused and resumed (`livecopy pause`, `resume`).
    case pauseJobs = "pause-jobs"
    /// A job's speed can be changed while it runs (`livecopy throttle`).
    case throttleJobs = "throttle-jobs"
    /// Several disks of a VM switch to their overlays in one transaction.
    case atomicSwitch = "atomic-switch"
    /// A job's reaction to an I/O error is chosen per job (the policy's `on_error`).
    case ioErrorAction = "io-error-action"
    /// Rollback by committing the destination back into the source.
    case commitBack = "commit-back"
    /// Rollback by mirroring a standalone destination back into the source.
    case mirrorBack = "mirror-back"

    /// What the stream strategy cannot do without.
    public static let neededToStream: Set<BackendCapability> = [.holdsFinishedPull, .confirmedFlush, .atomicSwitch]
}
