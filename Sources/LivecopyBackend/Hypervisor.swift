// The boundary between the engine and a hypervisor: what livecopy needs from one, in
// the model's words (disks, images, copy jobs), never in one hypervisor's protocol.

/// A way to reach VMs: QEMU's QMP monitor (`QMPHypervisor`), libvirt (`LibvirtHypervisor`),
/// `RoutingHypervisor` choosing between them by address. The engine opens one
/// `VMSession` per VM through it, and asks nothing else of it.
public protocol Hypervisor: Sendable {
    /// The backend's name for messages ("QMP", "libvirt", "in-memory").
    var name: String { get }

    /// Opens a session to the VM at `address` (a `VMAddress` as stored: a QMP socket
    /// path, `libvirt:<uri>#<domain>`), after checking that the hypervisor there offers
    /// what livecopy needs (its version, its commands); throws `BackendError` with kind
    /// `.unreachable` or `.unsupported` naming what is missing otherwise.
    func connect(to address: String, commandTimeout: Double) async throws -> any VMSession

    /// Checks, without connecting, that whoever can reach `address` is only livecopy's
    /// user (a QMP socket is root-equivalent: whoever can write to it commands the VM);
    /// `allowShared` accepts an address others can reach. Throws `BackendError` of kind
    /// `.unsafe`; or, for an address this hypervisor cannot serve at all, the error
    /// `connect` would throw (`.unreachable`, `.unsupported`). An address that does not
    /// exist passes: `connect` reports it.
    func checkAddress(_ address: String, allowShared: Bool) throws
}

/// A live session to one VM: what livecopy asks of it and tells it to do. Every
/// operation either completes, or throws a `BackendError` saying whether the hypervisor
/// refused (nothing was done) or the session broke (the outcome is unknown until asked
/// again).
///
/// The recipe's operations are all here; a backend that cannot do one says so in
/// `capabilities`, and the engine never calls it there (it refuses the plan, or skips
/// the step with a note).
public protocol VMSession: AnyObject, Sendable {
    /// What this backend can do for this VM.
    var capabilities: Set<BackendCapability> { get }

    // MARK: What the VM shows

    /// Every block device of the VM with the image chain it runs on.
    func disks() async throws -> [VMDisk]
    /// Every job of the VM (livecopy's and any other tool's).
    func jobs() async throws -> [CopyJob]
    /// Why job `id` is paused by an I/O error (`failed`, `nospace`), or nil when it is not.
    func ioErrorStatus(ofJob id: String) async throws -> String?
    /// The VM's migration status (`active`, `completed`, …), nil when it never migrated.
    func migrationStatus() async throws -> String?
    /// Every job event from now on (status changes, I/O errors); the stream finishes when
    /// the session closes or breaks.
    func jobEvents() -> AsyncStream<JobEvent>

    // MARK: The recipe

    /// Puts each request's overlay on top of its disk's active image, all at once (one
    /// transaction): every disk switches, or none does.
    func switchToOverlays(_ requests: [OverlayRequest]) async throws
    /// Starts job `jobId` copying the backing chain of `disk`'s active image into it (a
    /// stream, or a pull). With `.holdsFinishedPull` the finished job waits in `pending`
    /// until `finalize`, the active image keeping its backing file until then.
    /// `onError` is the I/O error action (`stop`, `enospc`, `report`, `ignore`;
    /// `.ioErrorAction`).
    func startPull(disk: String, jobId: String, speed: Int64, onError: String) async throws
    /// Lets a pull waiting in `pending` finish: the active image drops its backing file.
    func finalize(jobId: String) async throws
    /// Flushes the image open as `nodeName` to disk and says whether that is proven
    /// (`.confirmedFlush`).
    func flush(nodeName: String) async throws -> FlushEvidence

    // MARK: The mirror strategy (`.mirrorCopy`)

    /// Opens an existing image (made or checked by livecopy) as node `image.nodeName`,
    /// attached to no device.
    func openImage(_ image: ImageToOpen) async throws
    /// Closes node `nodeName` opened by `openImage` (nothing may use it).
    func closeImage(nodeName: String) async throws
    /// Starts a mirror of the disk's whole chain into an opened image. The job is ready
    /// when caught up; `complete` then moves it to `pending`, and `finalize` pivots the
    /// disk onto the image.
    func startMirror(_ request: MirrorRequest) async throws

    // MARK: Verification (`.dirtyTracking`)

    /// Adds dirty bitmap `name` on node `nodeName`: it records every write from now on. A
    /// bitmap of that name already there (added by an earlier attempt) is kept as it is.
    func addDirtyBitmap(nodeName: String, name: String) async throws
    /// Removes dirty bitmap `name` of node `nodeName`, if it is there.
    func removeDirtyBitmap(nodeName: String, name: String) async throws
    /// Exports `export.nodeName` read-only over NBD on a private UNIX socket, with a frozen
    /// copy of its bitmap `export.bitmap` (taken now; an earlier copy is replaced).
    /// Exports of several disks of the VM share one NBD server.
    func openVerificationExport(_ export: VerificationExport) async throws -> VerificationEndpoint
    /// Ends the export and removes the frozen copy (and the NBD server with the VM's last
    /// export). Nothing is an error when already gone.
    func closeVerificationExport(_ export: VerificationExport) async throws

    // MARK: Rollback

    /// Starts job `jobId` committing `disk`'s active image into the image of its chain
    /// opened as `baseFile` (nil: the bottom of the chain); ready when caught up.
    func startCommit(disk: String, jobId: String, baseFile: String?, speed: Int64) async throws
    /// Starts job `jobId` mirroring `disk`'s whole chain into the existing image `target`
    /// (`format`); ready when caught up.
    func startMirror(disk: String, jobId: String, target: String, format: String) async throws
    /// Completes a ready commit or mirror: the disk pivots onto its base or target.
    func complete(jobId: String) async throws

    // MARK: Job controls

    /// Cancels job `id` (`force`: at once, even when ready).
    func cancel(jobId: String, force: Bool) async throws
    func pause(jobId: String) async throws
    func resume(jobId: String) async throws
    func setSpeed(jobId: String, speed: Int64) async throws
    /// Removes a concluded job from the VM's list (the engine reads its error first).
    func dismiss(jobId: String) async throws

    // MARK: The VM's manager

    /// Makes the VM manager's persistent record of `disk` (libvirt's inactive domain
    /// definition, which the next boot follows) name the image the disk runs on now,
    /// without a backing file when it has none. Returns what was changed, in a sentence,
    /// or nil when nothing needed changing or the backend keeps no such record (QMP).
    func updateManagerRecord(disk: String) async throws -> String?

    /// True once the session has closed or broken.
    var isClosed: Bool { get }
    /// Closes the session; operations in flight fail with `.sessionLost`.
    func close() async
}
