import CSystemExtras
import Foundation
import LivecopyModel
import LivecopyBackend

/// A disk whose VM shows something livecopy must not guess about.
struct NeedsAttention: Error, CustomStringConvertible {
    let description: String
}

/// Drives one disk through the recipe: snapshot, stream, verify, retire; or back out
/// through rollback. Each step first reconciles with what QEMU and the files say, so
/// the same code resumes a disk after any interruption.
final class DiskWorkflow: Sendable {
    let ledger: DiskLedger
    let session: any VMSession
    let policy: Policy
    let inspector: any ImageInspector
    let creator: any DestinationCreator
    /// The operator's settings for the plan (`livecopy throttle`, `pause`), read when a job starts.
    let controls: @Sendable () -> PlanControls
    /// Waits until the snapshot of this disk's VM, taken for all its disks of the plan at
    /// once, is done (forward runs only), and returns the ids of the disks it acted on.
    /// Nil: the disk is snapshotted on its own.
    let joinVMSnapshot: (@Sendable () async throws -> Set<Int64>)?

    init(ledger: DiskLedger, session: any VMSession, policy: Policy, inspector: any ImageInspector,
         creator: any DestinationCreator, controls: @escaping @Sendable () -> PlanControls = { PlanControls() },
         joinVMSnapshot: (@Sendable () async throws -> Set<Int64>)? = nil) {
        self.ledger = ledger
        self.session = session
        self.policy = policy
        self.inspector = inspector
        self.creator = creator
        self.controls = controls
        self.joinVMSnapshot = joinVMSnapshot
    }

    var disk: DiskRecord { ledger.disk }

    /// The disk's state as last persisted.
    var state: DiskState { ledger.disk.state }

    /// Runs the disk until it rests: completed, failed, rolled back or needing attention.
    /// A forward run first joins its VM's snapshot (all the VM's disks switch in one
    /// transaction). A disk that starts `failed` or `needs_attention` is reconciled and
    /// resumed once.
    func run() async throws {
        var settledBySnapshot = false
        if let joinVMSnapshot {
            // The VM's snapshot settles each member's record itself; it throws only when a
            // record is in doubt. Either way this ledger's copy of the record is stale now.
            let groupError: Error?
            do { settledBySnapshot = try await joinVMSnapshot().contains(disk.id); groupError = nil } catch { groupError = error }
            try ledger.reload()
            if let groupError { throw groupError }
        }
        // A disk the VM's snapshot just failed is not resumed again in the same run.
        if !settledBySnapshot && (disk.state == .failed || disk.state == .needsAttention) {
            do {
                try await resumeFailed()
            } catch let error as NeedsAttention {
                if disk.state == .needsAttention {
                    try await ledger.note("still needs attention: \(error.description)")
                } else {
                    try await ledger.transition(to: .needsAttention, error.description) { $0.error = error.description }
                }
            }
        }
        while true {
            if Task.isCancelled { return }
            do {
                switch disk.state {
                case .pending, .snapshotting:
                    // Not switched by the VM's snapshot (or resumed since): a snapshot of its own.
                    try await VMSnapshot(vmName: disk.vmName, members: [self]).run()
                case .streaming: try await stream()
                case .retiring: try await retire()
                case .rollingBack: try await rollback()
                case .completed, .failed, .rolledBack, .needsAttention: return
                }
            } catch {
                guard try await settle(error) else { return }
            }
        }
    }

    /// Records what `error` means for the disk: attention needed, a failure, or nothing
    /// (a cancelled plan; a rollback interrupted by a lost QMP session, which recover
    /// resumes). Rethrows errors that put the record itself in doubt. Returns whether
    /// the disk may go on (its new state decides how).
    func settle(_ error: Error) async throws -> Bool {
        switch error {
        case is CancellationError:
            return false  // The plan is being cancelled: the next owner of the disk reconciles.
        case let error as NeedsAttention:
            try await ledger.transition(to: .needsAttention, error.description) { $0.error = error.description }
            return true
        case is IllegalTransition, is StoreFailure:
            throw error
        case let error as StoreError where error.stopsTheEngine:
            throw error
        default:
            if Task.isCancelled { return false }
            // A lost or broken VM session says nothing about the copy: a rollback under
            // way stays under way (recover resumes it), and a stream does not roll back.
            let sessionLost = (error as? BackendError)?.isAboutTheSession == true
            if sessionLost && disk.state == .rollingBack {
                try await ledger.note("rollback interrupted (\(describe(error))); livecopy recover resumes it")
                return false
            }
            try await fail(because: describe(error), mayRollBack: !sessionLost && !(error is FlushNotConfirmed))
            return true
        }
    }

    /// Turns a disk that is not final toward `rolled_back`: pending disks are simply
    /// dropped; disks already retiring finish (their source may be gone); the others
    /// roll back, each step of which first checks that it is safe.
    func beginRollback(_ reason: String) async throws {
        switch disk.state {
        case .pending:
            try await ledger.transition(to: .rolledBack, "\(reason): nothing had been done")
        case .snapshotting, .streaming, .failed:
            try await ledger.transition(to: .rollingBack, reason)
        case .needsAttention:
            // Rolling back re-checks everything first and stops again if still unsafe.
            try await ledger.transition(to: .rollingBack, "\(reason); checking again what stopped it")
        case .retiring, .completed, .rollingBack, .rolledBack:
            return
        }
    }

    /// Moves to `failed`, or to `rolling_back` when the policy says so and the copy
    /// itself failed (not merely the QMP session, nor the flush before finalizing) with the
    /// VM on the destination.
    private func fail(because reason: String, mayRollBack: Bool) async throws {
        switch disk.state {
        case .streaming where policy.onFailure == .rollback && mayRollBack:
            try await ledger.transition(to: .rollingBack, "copy failed, on_failure: rollback: \(reason)") { $0.error = reason }
        case .pending, .snapshotting, .streaming, .retiring, .rollingBack:
            try await ledger.transition(to: .failed, reason) { $0.error = reason }
        case .failed, .completed, .rolledBack, .needsAttention:
            throw StoreFailure(reason)
        }
    }

    // MARK: - Where the VM is

    /// The disk's entry in `query-block`.
    private func locateDevice() async throws -> VMDisk {
        if let found = try await session.disks().entry(for: disk) { return found }
        throw NeedsAttention(description: "device '\(disk.device)' is no longer in VM '\(disk.vmName)'")
    }

    /// How block commands name this disk's active layer right now.
    private func target(_ entry: VMDisk) throws -> DiskTarget {
        if !entry.device.isEmpty { return .device(entry.device) }
        guard let node = entry.medium?.nodeName else {
            throw NeedsAttention(description: "device '\(disk.device)' has no medium")
        }
        return .node(node)
    }

    private func deviceName(_ entry: VMDisk) throws -> String {
        switch try target(entry) {
        case .device(let name), .node(let name): return name
        }
    }

    private func job(_ id: String) async throws -> CopyJob? {
        try await session.jobs().first(where: { $0.id == id })
    }

    // MARK: - Snapshot (one member of the VM's snapshot; see `VMSnapshot`)

    /// Readies this disk for its VM's snapshot transaction and returns the device entry to
    /// snapshot, or nil when the disk takes no part (already switched, or not this step's
    /// business). A disk `pending` is checked and its destination created; one
    /// `snapshotting` after an interruption is reconciled first (did the snapshot happen?);
    /// one `failed` or `needs_attention` while still on its source is resumed.
    func prepareSnapshot() async throws -> VMDisk? {
        switch disk.state {
        case .pending:
            if disk.source == nil { try await discoverSource() }
            let entry = try await locateDevice()
            guard let active = entry.medium?.file, active == disk.source else {
                throw NeedsAttention(
                    description: "VM '\(disk.vmName)' device '\(disk.device)' is on \(entry.medium?.file ?? "no image"), not on the recorded source \(disk.source ?? "?")")
            }
            try DestinationCheck.refuseExisting(disk.destination)
            try await ledger.transition(to: .snapshotting, "snapshot \(disk.source ?? "?") → \(disk.destination)")
            try await createDestination(entry)
            return entry
        case .failed, .needsAttention:
            if try await job(disk.commitJobId) != nil || disk.intent?.belongsToRollback == true { return nil }
            guard try await locateDevice().medium?.file == disk.source else { return nil }
            try await ledger.transition(to: .snapshotting, "resuming: the VM is still on the source") { $0.error = nil }
            return try await reconcileSnapshot()
        case .snapshotting:
            return try await reconcileSnapshot()
        case .streaming, .retiring, .rollingBack, .completed, .rolledBack:
            return nil
        }
    }

    /// The snapshot request for this disk: its destination file (made by livecopy, never
    /// by the hypervisor) on top of the device's active image.
    func snapshotRequest(_ entry: VMDisk) throws -> OverlayRequest {
        OverlayRequest(disk: try target(entry), overlayFile: disk.destination, overlayNodeName: disk.destinationNodeName)
    }

    /// Marks the end of the snapshot command (for crash tests).
    func snapshotSent() { ledger.sent() }

    /// QEMU accepted the snapshot: records what it shows, and moves on to streaming.
    func snapshotTaken() async throws {
        let after = try await locateDevice()
        guard after.medium?.file == disk.destination else {
            throw NeedsAttention(description: "snapshot reported success but the VM is on \(after.medium?.file ?? "no image")")
        }
        try await ledger.outcome("the VM now writes into \(disk.destination)") { $0.qmpDevice = try? deviceName(after) }
        try await ledger.transition(to: .streaming, "destination overlay active, backing \(disk.source ?? "?")")
    }

    /// The snapshot was refused (by QEMU, or because another disk of the VM could not
    /// take part): if the VM is nevertheless on the destination go on; otherwise remove
    /// the file livecopy made, and fail, resumable.
    func snapshotNotTaken(_ reason: String) async throws {
        let entry = try await locateDevice()
        if entry.medium?.file == disk.destination {
            try await ledger.outcome("the VM is on \(disk.destination) despite the error")
            try await ledger.transition(to: .streaming, "destination overlay active")
            return
        }
        try await removeDestinationIfOurs()
        try await ledger.outcome("failed: \(reason)") { $0.destinationCreated = false }
        try await ledger.transition(to: .failed, reason) { $0.error = reason }
    }

    /// A plan recorded with `submit --detach` learns its source now, with the same checks
    /// as preflight at submission.
    private func discoverSource() async throws {
        let vm = Plan.VM(name: disk.vmName, qmp: disk.qmpSocket, disks: [])
        let found = try Preflight.check(
            Plan.Disk(device: disk.device, destination: disk.destination), of: vm, in: try await session.disks(),
            name: "VM '\(disk.vmName)' disk '\(disk.device)'", policy: policy)
        try await ledger.outcome("source discovered: \(found.source ?? "?") (\(found.sourceFormat ?? "?"))") {
            $0.source = found.source
            $0.sourceFormat = found.sourceFormat
            $0.qmpDevice = found.qmpDevice
        }
    }

    /// Makes the destination file, exclusively, with the source as its backing file and the
    /// source's format recorded. The file counts as livecopy's (`destinationCreated`) only
    /// once the exclusive create succeeded: a crash before that outcome is written leaves a
    /// file that no later step deletes.
    private func createDestination(_ entry: VMDisk) async throws {
        guard let image = entry.medium?.image, let source = disk.source, image.filename == source else {
            throw NeedsAttention(description: "device '\(disk.device)' is not on the recorded source \(disk.source ?? "?")")
        }
        try await ledger.intend(.createDestination, "\(disk.destination): qcow2 of \(image.virtualSize) bytes, backing \(source) (\(image.format))") {
            $0.destinationCreated = false
        }
        do {
            try creator.createOverlay(at: disk.destination, backing: source, backingFormat: image.format, virtualSize: image.virtualSize)
        } catch {
            try await ledger.outcome("refused: \(describe(error))")
            throw error
        }
        ledger.sent()
        // The intent to snapshot goes in the same write: the record never shows the new file
        // as livecopy's with nothing under way (which would name it as the image to boot).
        try await ledger.outcome("created \(disk.destination) (mode 0600, backing \(source), backing format \(image.format))",
                           next: .snapshot) { $0.destinationCreated = true }
    }

    /// After an interruption in `snapshotting`: did the snapshot happen? If so, go on to
    /// streaming (nil); if not, make the destination again and return the entry to snapshot.
    private func reconcileSnapshot() async throws -> VMDisk? {
        let entry = try await locateDevice()
        switch entry.medium?.file {
        case disk.destination?:
            try await ledger.outcome("the snapshot had happened: the VM is on \(disk.destination)") {
                $0.qmpDevice = try? deviceName(entry)
            }
            try await ledger.transition(to: .streaming, "destination overlay active")
            return nil
        case disk.source?:
            try await refuseSplitBrain(activeImage: disk.source ?? "")
            try await removeDestinationIfOurs()
            var info = stat()
            if !disk.destinationCreated, disk.intent == .createDestination, lstat(disk.destination, &info) == 0 {
                throw NeedsAttention(
                    description: "livecopy was interrupted while creating \(disk.destination) and cannot prove the file there is its own, so it left it; delete it if nothing else uses it, then run livecopy recover")
            }
            try await ledger.outcome("the snapshot had not happened; retrying") { $0.destinationCreated = false }
            try DestinationCheck.refuseExisting(disk.destination)
            try await createDestination(entry)
            return entry
        default:
            throw NeedsAttention(
                description: "VM '\(disk.vmName)' device '\(disk.device)' is on \(entry.medium?.file ?? "no image"), neither the source nor the destination")
        }
    }

    /// The VM runs on the source; if the destination exists with writes of its own, they
    /// are newer than the source (a VM restarted on the wrong image): touch nothing.
    private func refuseSplitBrain(activeImage: String) async throws {
        var info = stat()
        guard disk.destinationCreated, lstat(disk.destination, &info) == 0 else { return }
        let holdsWrites: Bool
        do {
            holdsWrites = try await inspector.hasOwnData(disk.destination)
        } catch {
            throw NeedsAttention(description: "the VM runs on \(activeImage) and \(disk.destination) exists but cannot be inspected (\(describe(error))); touching neither")
        }
        if holdsWrites {
            throw NeedsAttention(
                description: "split brain: the VM runs on \(activeImage) but \(disk.destination) holds newer guest writes; neither image was touched. Stop the VM and start it on \(disk.destination) (never on \(disk.source ?? "the source")), then run livecopy recover; or, if the writes in \(disk.destination) must be discarded, delete it yourself")
        }
    }

    /// A pivot back to the source was requested, then QEMU went away before its job
    /// concluded; the VM now runs on the source. If the images differ, nobody can tell
    /// whether the source got every write: touch nothing.
    private func refuseAmbiguousPivot() async throws {
        var info = stat()
        guard disk.destinationCreated, lstat(disk.destination, &info) == 0, let source = disk.source else { return }
        guard !(await inspector.sourceMatchesDestination(disk)) else { return }
        throw NeedsAttention(
            description: "a pivot back to \(source) was requested just before QEMU stopped, and the VM now runs on \(source), which differs from \(disk.destination): livecopy cannot tell which holds the newest writes and touched neither; compare them, keep the newest, delete the other yourself, then run livecopy recover")
    }

    /// Deletes the destination only if livecopy created it and, as QEMU and the kernel say
    /// right now, nothing uses it.
    private func removeDestinationIfOurs() async throws {
        guard disk.destinationCreated else { return }
        try await deleteOwnFile(disk.destination, because: "the snapshot onto it did not happen")
    }

    // MARK: - Stream

    private func stream() async throws {
        let jobId = disk.streamJobId
        var earlyEvents: AsyncStream<JobEvent>?
        if let existing = try await job(jobId) {
            try await ledger.note("re-attaching to job \(jobId) (\(existing.status))")
        } else {
            let entry = try await locateDevice()
            guard entry.medium?.file == disk.destination else {
                throw NeedsAttention(
                    description: "VM '\(disk.vmName)' device '\(disk.device)' runs on \(entry.medium?.file ?? "no image") although \(disk.destination) holds its newest writes; start it on \(disk.destination) (never on \(disk.source ?? "the source")), then run livecopy recover")
            }
            if let backing = entry.medium?.backingFile {
                guard backing == disk.source else {
                    throw NeedsAttention(description: "\(disk.destination) is backed by \(backing), not by the source \(disk.source ?? "?")")
                }
                let speed = controls().speedOverride ?? policy.speed
                try await ledger.intend(.stream, "job \(jobId), speed \(speed), on-error \(policy.onError.rawValue)")
                // Subscribed before the job exists: an I/O error reported at once is not missed.
                earlyEvents = session.jobEvents()
                try await session.startPull(
                    disk: try deviceName(entry), jobId: jobId, speed: speed, onError: policy.onError.rawValue)
                ledger.sent()
                try await ledger.outcome("job \(jobId) started")
            }
        }
        try await applyControls(to: jobId)
        if try await job(jobId) != nil {
            var callbacks = JobWatcher.Callbacks()
            callbacks.pending = { [self] in try await self.flushThenFinalize(jobId) }
            callbacks.running = { [self] in self.startWritebackWhileStreaming() }
            // The job's error is in the record before job-dismiss erases it from QEMU: a
            // crash between the two must not lose why the copy failed.
            let ledger = self.ledger
            callbacks.concluded = { error in
                if let error { try await ledger.report("stream job \(jobId) failed: \(error)") }
            }
            let error = try await watch(jobId: jobId, callbacks: callbacks, events: earlyEvents)
            if let error {
                throw StreamFailure(description: "stream job \(jobId) failed: \(error)")
            }
        }
        try await verifyStandalone()
        try await ledger.transition(to: .retiring, "\(disk.destination) stands alone") { $0.error = nil }
    }

    private struct StreamFailure: Error, CustomStringConvertible { let description: String }

    /// QEMU did not confirm the flush before `job-finalize`: the job stays pending and the
    /// disk fails (never rolls back for this: the copy itself is whole), to flush again later.
    struct FlushNotConfirmed: Error, CustomStringConvertible { let description: String }

    /// While the stream runs (at each progress poll) the kernel is asked to start writing
    /// the destination's dirty pages back, so the flush before finalizing has little left
    /// to write. This does not touch QEMU: a flush through QEMU would stall its main loop,
    /// and with it the rate-limited copy. Best effort; the flush before finalizing is the
    /// one relied on.
    private func startWritebackWhileStreaming() {
        let fd = open(disk.destination, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return }
        _ = livecopy_start_writeback(fd)
        close(fd)
    }

    /// The stream has copied everything and waits in `pending`. Finalizing rewrites the
    /// destination's header without its backing file; QEMU writes that header at once but
    /// keeps the copied clusters' L2 tables in its cache, so a crash right after could
    /// leave a destination with neither the data nor the backing file. So the job is
    /// finalized only after QEMU confirmed a flush of the destination's node; otherwise
    /// it stays `pending` (the destination keeps its backing file) and the disk fails,
    /// for `recover` or `run` to flush again.
    private func flushThenFinalize(_ jobId: String) async throws {
        try await ledger.intend(.finalize, "flush \(disk.destination), then finalize job \(jobId)")
        let entry = try await locateDevice()
        let evidence: FlushEvidence
        if let node = entry.medium?.nodeName, node == disk.destinationNodeName || entry.medium?.file == disk.destination {
            // The node livecopy named at the snapshot, or after a QEMU restart the one QEMU
            // opened the destination as.
            evidence = try await session.flush(nodeName: node)
        } else {
            evidence = .notConfirmed("the VM is on \(entry.medium?.file ?? "no image"), not on \(disk.destination)")
        }
        func refuse(_ verdict: String, _ why: String) async throws -> Never {
            try await ledger.outcome("refused: flush \(verdict): \(why)")
            throw FlushNotConfirmed(
                description: "the flush of \(disk.destination) before finalizing \(verdict) (\(why)); job \(jobId) waits in pending and nothing was finalized, so \(disk.destination) keeps its backing file \(disk.source ?? "?"); livecopy recover or run flushes again")
        }
        switch evidence {
        case .confirmed: break
        case .failed(let why): try await refuse("failed", why)
        case .notConfirmed(let why): try await refuse("could not be confirmed", why)
        }
        try await session.finalize(jobId: jobId)
        ledger.sent()
        try await ledger.outcome("destination flushed (confirmed by QEMU); job finalized")
    }

    /// Brings a job just started or re-attached to in line with the operator's settings,
    /// read after the job exists (a request recorded earlier may have found no job).
    private func applyControls(to jobId: String) async throws {
        let settings = controls()
        guard let job = try await job(jobId), job.status.acceptsControls else { return }
        // QEMU refusing a control (the job concluded meanwhile, say) fails nothing: the
        // watch that follows reads the job's fate.
        do {
            if let speed = settings.speedOverride {
                try await session.setSpeed(jobId: jobId, speed: speed)
                try await ledger.note("job \(jobId): speed \(OperatorAction.speedText(speed)) (livecopy throttle)")
            }
            if settings.paused, job.status != .paused {
                try await session.pause(jobId: jobId)
                try await ledger.note("job \(jobId) paused: the plan is paused (livecopy resume \(disk.planId))")
            } else if !settings.paused, job.status == .paused,
                      try await session.ioErrorStatus(ofJob: jobId) == nil {
                // Paused on purpose by an earlier owner, and resumed since.
                try await session.resume(jobId: jobId)
                try await ledger.note("job \(jobId) resumed: the plan is no longer paused")
            }
        } catch let error as BackendError where error.isRefusal {
            try await ledger.note("job \(jobId): the plan's operator settings were not applied: \(error.reason)")
        }
    }

    private func watch(jobId: String, ready: (() async throws -> Void)?) async throws -> String? {
        var callbacks = JobWatcher.Callbacks()
        callbacks.ready = ready
        return try await watch(jobId: jobId, callbacks: callbacks)
    }

    private func watch(jobId: String, callbacks given: JobWatcher.Callbacks, events: AsyncStream<JobEvent>? = nil) async throws -> String? {
        let ledger = self.ledger
        var callbacks = given
        callbacks.progress = { job in
            await ledger.progress(done: job.currentProgress, total: job.totalProgress, persistEvery: 2)
        }
        // Kept as the disk's error too, so `status` shows why the copy stands still.
        callbacks.ioError = { message in try? await ledger.report("job \(jobId): \(message)") }
        let watcher = JobWatcher(session: session, jobId: jobId, pollInterval: policy.progressInterval, ioErrorWait: policy.ioErrorWait,
                                 subscription: events)
        do {
            return try await watcher.waitForConclusion(callbacks)
        } catch let error as JobWatchError {
            if case .ioErrorTimeout = error {
                try? await session.cancel(jobId: jobId, force: true)
                _ = try? await JobWatcher(session: session, jobId: jobId, pollInterval: 1, ioErrorWait: .infinity)
                    .waitForConclusion(JobWatcher.Callbacks())
            }
            throw error
        }
    }

    /// The VM's active image is the destination, with no backing file, and nothing
    /// (no device's chain, no process) opens the source. Not `query-named-block-nodes`:
    /// QEMU 7.2 was seen to crash (SIGSEGV in bdrv_refresh_filename) answering it while
    /// another disk's stream job of the same VM finished.
    private func verifyStandalone() async throws {
        if let problem = try await sourceRetirementProblem() {
            throw NeedsAttention(description: "after the stream: \(problem)")
        }
        try await ledger.note("verified: \(disk.destination) is active with no backing file; nothing opens the source")
    }

    // MARK: - Failed disks

    /// Picks up a failed disk, or one that needed attention, where reality says it is.
    private func resumeFailed() async throws {
        if try await job(disk.commitJobId) != nil || disk.intent?.belongsToRollback == true {
            try await ledger.transition(to: .rollingBack, "resuming the interrupted rollback")
            return
        }
        let entry = try await locateDevice()
        switch entry.medium?.file {
        case disk.destination?:
            if disk.state == .failed, disk.intent?.step == .retiring, entry.medium?.backingFile == nil, try await job(disk.streamJobId) == nil {
                // Stopped while retiring the source: retire again (its checks run first), with
                // the open intent telling whether the earlier attempt may have acted.
                try await ledger.transition(to: .retiring, "resuming the retirement of the source") { $0.error = nil }
            } else if entry.medium?.backingFile == nil, try await job(disk.streamJobId) == nil {
                try await ledger.transition(to: .streaming, "resuming: the destination already stands alone") { $0.error = nil }
            } else {
                try await ledger.transition(to: .streaming, "resuming the stream") { $0.error = nil }
            }
        case disk.source?:
            try await ledger.transition(to: .snapshotting, "resuming: the VM is still on the source") { $0.error = nil }
        default:
            throw NeedsAttention(description: "VM is on \(entry.medium?.file ?? "no image"), neither source nor destination")
        }
    }

    // MARK: - Rollback

    /// Commits the destination back into the source, pivots the VM to the source, and
    /// deletes the destination if livecopy created it. Re-entrant: each step first
    /// looks at QEMU's jobs and the VM's active image.
    private func rollback() async throws {
        if let stream = try await job(disk.streamJobId) {
            if stream.status != .concluded {
                try await ledger.intend(.cancelStream, "job \(disk.streamJobId)")
                try await session.cancel(jobId: disk.streamJobId, force: true)
                ledger.sent()
            }
            _ = try await watch(jobId: disk.streamJobId, ready: nil)
            try await ledger.outcome("stream job \(disk.streamJobId) ended and dismissed")
        }
        let commitId = disk.commitJobId
        if try await job(commitId) == nil {
            let entry = try await locateDevice()
            if entry.medium?.file == disk.source {
                // Either the pivot is done (the intent to delete says so, or nothing was
                // ever written to the destination) or the VM was restarted on its source.
                switch disk.intent {
                case .deleteDestination?:
                    break  // the rollback job concluded on the source: the pivot is done
                case .pivotBack?:
                    try await refuseAmbiguousPivot()
                case nil, .createDestination?, .snapshot?, .stream?, .finalize?, .renameSource?, .deleteSource?,
                     .cancelStream?, .commitBack?, .mirrorBack?:
                    try await refuseSplitBrain(activeImage: disk.source ?? "the source")
                }
                try await finishRollback()
                return
            }
            guard entry.medium?.file == disk.destination, let source = disk.source else {
                throw NeedsAttention(description: "rollback: the VM is on \(entry.medium?.file ?? "no image"), neither the source nor the destination")
            }
            if entry.medium?.backingFile == source {
                try await ledger.intend(.commitBack, "job \(commitId): \(disk.destination) into \(source)")
                // The source at the bottom of the chain is QEMU's default base; named only
                // when it has a chain of its own below it.
                let sourceIsBottom = entry.medium?.image.backingImage?.backingImage == nil
                try await session.startCommit(disk: try deviceName(entry), jobId: commitId,
                                              baseFile: sourceIsBottom ? nil : source, speed: 0)
                ledger.sent()
                try await ledger.outcome("commit job started")
            } else {
                // The stream already finished: the destination stands alone. Mirror it back
                // into the source file, which still holds the old data and its own chain.
                guard FileManager.default.fileExists(atPath: source), let format = disk.sourceFormat else {
                    throw NeedsAttention(description: "rollback: \(disk.destination) stands alone and the source \(source) is gone; \(disk.destination) holds all data")
                }
                try await ledger.intend(.mirrorBack, "job \(commitId): \(disk.destination) back into \(source)")
                try await session.startMirror(disk: try deviceName(entry), jobId: commitId, target: source, format: format)
                ledger.sent()
                try await ledger.outcome("mirror job started")
            }
        }
        let session = self.session
        let ledger = self.ledger
        let disk = self.disk
        var callbacks = JobWatcher.Callbacks()
        callbacks.ready = {
            try await ledger.intend(.pivotBack, "pivot to the source")
            do {
                try await session.complete(jobId: commitId)
            } catch let error as BackendError where error.isRefusal {
                // Already completing (asked before a crash): the job's conclusion tells.
                try await ledger.note("block-job-complete: \(error.reason)")
            }
            ledger.sent()
        }
        callbacks.concluded = { error in
            // Persist what the conclusion proves before job-dismiss erases it from QEMU.
            guard error == nil else { return }
            let devices = try await session.disks()
            let active = devices.entry(for: disk)?.medium?.file
            if active == disk.source {
                try await ledger.outcome("the VM is on the source with every write", next: .deleteDestination)
            }
        }
        let error = try await watch(jobId: commitId, callbacks: callbacks)
        if let error { throw NeedsAttention(description: "rollback job \(commitId) failed: \(error); \(disk.destination) still holds the newest writes") }
        let entry = try await locateDevice()
        guard entry.medium?.file == disk.source else {
            throw NeedsAttention(description: "after the rollback the VM is on \(entry.medium?.file ?? "no image"), not on the source")
        }
        try await finishRollback()
    }

    /// The VM is on its source with every write: delete the destination if ours, once
    /// QEMU and the kernel say nothing uses it.
    private func finishRollback() async throws {
        if disk.destinationCreated {
            if disk.intent != .deleteDestination { try await ledger.intend(.deleteDestination, disk.destination) }
            let source = disk.source ?? "the source"
            if let entry = try await session.disks().entry(for: disk), entry.medium?.file != disk.source {
                throw NeedsAttention(
                    description: "rollback: VM '\(disk.vmName)' device '\(disk.device)' runs on \(entry.medium?.file ?? "no image"), not on \(source); \(disk.destination) was not deleted")
            }
            try await deleteOwnFile(disk.destination, because: "rolled back onto \(source)")
            ledger.sent()
            try await ledger.outcome("destination deleted") { $0.destinationCreated = false }
        }
        try await ledger.transition(to: .rolledBack, "the VM is back on \(disk.source ?? "the source") with every write")
    }
}

/// An error that must stop the engine rather than fail a disk (the record itself is in doubt).
/// The engine's own error, raised when what the store returned makes no sense (a disk gone,
/// a final disk asked to fail); `StoreError` is what the store itself throws.
struct StoreFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension StoreError {
    /// Whether `DiskWorkflow.settle` rethrows it, stopping the engine: a lost compare-and-set
    /// puts the record in doubt. The other kinds fail the disk as any other error does.
    var stopsTheEngine: Bool {
        switch kind {
        case .conflict: return true
        case .database, .leaseHeld, .claimed: return false
        }
    }
}

/// One line for any error.
func describe(_ error: Error) -> String {
    String(describing: error).replacingOccurrences(of: "\n", with: " ")
}
