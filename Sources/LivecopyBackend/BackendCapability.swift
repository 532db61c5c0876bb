/// Something a backend can or cannot do. What libvirt's own API offers, and what the
/// libvirt backend offers by holding the copy as a QEMU job through libvirt's monitor
/// pass-through (docs/libvirt.md):
///
/// | capability | QMP | libvirt's API alone | the libvirt backend |
/// |---|---|---|---|
/// | `holdsFinishedPull` | yes (`auto-finalize: false`) | no: a pull ends by itself | yes (the held copy) |
/// | `confirmedFlush` | yes (HMP `qemu-io reopen`) | no flush command | yes (the same, passed through) |
/// | `pauseJobs` | yes | no | the copy yes; libvirt's commit and copy refuse |
/// | `throttleJobs` | yes | yes (`virDomainBlockJobSetSpeed`) | yes |
/// | `atomicSwitch` | yes (`transaction`) | yes (one snapshot of several disks) | yes |
/// | `ioErrorAction` | yes (`on-error`) | no (the domain's policy applies) | yes (the copy's `on-error`) |
/// | `commitBack`, `mirrorBack` | yes | yes (`BlockCommit`, `BlockCopy`) | yes |
/// | `mirrorCopy` | yes (`blockdev-mirror`) | `BlockCopy`, which pivots without a confirmed flush | not yet |
/// | `dirtyTracking` | yes (bitmaps in the switch's `transaction`, NBD exports) | checkpoints, never in a snapshot's transaction | no |
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

    /// The mirror strategy: a mirror into a destination livecopy opened (`blockdev-add`),
    /// held at READY until a confirmed flush, completed and finalized by livecopy.
    case mirrorCopy = "mirror-copy"

    /// Data verification before retirement (policy `verify`): a dirty bitmap added on the
    /// destination in the same transaction as the switch (or at a mirror's READY), and a
    /// read-only NBD export of the destination with a frozen copy of that bitmap.
    case dirtyTracking = "dirty-tracking"

    /// What the stream strategy cannot do without.
    public static let neededToStream: Set<BackendCapability> = [.holdsFinishedPull, .confirmedFlush, .atomicSwitch]
    /// What the mirror strategy cannot do without.
    public static let neededToMirror: Set<BackendCapability> = [.mirrorCopy, .confirmedFlush]
}
