// The stream step of one disk: the pull, its watch, the flush QEMU confirms, the finalize.

import CSystemExtras
import Foundation
import LivecopyBackend
import LivecopyModel

extension DiskWorkflow {
    func stream() async throws {
        let jobId = disk.streamJobId
        var earlyEvents: AsyncStream<JobEvent>?
        if let existing = try await job(jobId) {
            try await ledger.note("re-attaching to QEMU job \(jobId) (\(existing.status.explanation))")
            await joinBudget(jobId)
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
                let device = try deviceName(entry)
                // Subscribed before the job exists: an I/O error reported at once is not missed.
                earlyEvents = session.jobEvents()
                try await startCopyJob(jobId) { [self] speed in
                    try await ledger.intend(.stream, "job \(jobId), speed \(speed), on-error \(policy.onError.rawValue)")
                    try await session.startPull(disk: device, jobId: jobId, speed: speed, onError: policy.onError.rawValue)
                    ledger.sent()
                    try await ledger.outcome("job \(jobId) started")
                }
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
            await leaveBudget()
            if let error {
                throw StreamFailure(description: "stream job \(jobId) failed: \(error)")
            }
        }
        try await verifyStandalone()
        try await updateManagerRecord()
        try await ledger.transition(to: .retiring, "\(disk.destination) stands alone") { $0.error = nil }
    }

    struct StreamFailure: Error, CustomStringConvertible { let description: String }

    /// QEMU did not confirm the flush before `job-finalize`: the job stays pending and the
    /// disk fails (never rolls back for this: the copy itself is whole), to flush again later.
    struct FlushNotConfirmed: Error, CustomStringConvertible { let description: String }

    /// While the stream runs (at each progress poll) the kernel is asked to start writing
    /// the destination's dirty pages back, so the flush before finalizing has little left
    /// to write. This does not touch QEMU: a flush through QEMU would stall its main loop,
    /// and with it the rate-limited copy. Best effort; the flush before finalizing is the
    /// one relied on.
    func startWritebackWhileStreaming() {
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
    func flushThenFinalize(_ jobId: String) async throws {
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
        if let problem = evidence.problem {
            try await ledger.outcome("refused: flush \(problem)")
            throw FlushNotConfirmed(
                description: "the flush of \(disk.destination) before finalizing \(problem); job \(jobId) waits in pending and nothing was finalized, so \(disk.destination) keeps its backing file \(disk.source ?? "?"); livecopy recover or run flushes again")
        }
        try await session.finalize(jobId: jobId)
        ledger.sent()
        try await ledger.outcome("destination flushed (confirmed by QEMU); job finalized")
    }

    /// Brings a job just started or re-attached to in line with the operator's settings,
    /// read after the job exists (a request recorded earlier may have found no job).
    func applyControls(to jobId: String) async throws {
        let settings = controls()
        guard let job = try await job(jobId), job.status.acceptsControls else { return }
        // QEMU refusing a control (the job concluded meanwhile, say) fails nothing: the
        // watch that follows reads the job's fate.
        let can = session.capabilities
        do {
            // Under a host budget the job started (or re-attached) at its share already.
            if let speed = settings.speedOverride, can.contains(.throttleJobs), budget == nil {
                try await session.setSpeed(jobId: jobId, speed: speed)
                try await ledger.note("job \(jobId): speed \(OperatorAction.speedText(speed)) (livecopy throttle)")
            }
            if settings.paused, job.status != .paused, can.contains(.pauseJobs) {
                try await session.pause(jobId: jobId)
                try await ledger.note("job \(jobId) paused: the plan is paused (livecopy resume \(disk.planId))")
            } else if !settings.paused, job.status == .paused, can.contains(.pauseJobs),
                      try await session.ioErrorStatus(ofJob: jobId) == nil {
                // Paused on purpose by an earlier owner, and resumed since.
                try await session.resume(jobId: jobId)
                try await ledger.note("job \(jobId) resumed: the plan is no longer paused")
            }
        } catch let error as BackendError where error.isRefusal {
            try await ledger.note("job \(jobId): the plan's operator settings were not applied: \(error.reason)")
        }
    }

    func watch(jobId: String, ready: (() async throws -> Void)?) async throws -> String? {
        var callbacks = JobWatcher.Callbacks()
        callbacks.ready = ready
        return try await watch(jobId: jobId, callbacks: callbacks)
    }

    func watch(jobId: String, callbacks given: JobWatcher.Callbacks, events: AsyncStream<JobEvent>? = nil) async throws -> String? {
        let ledger = self.ledger
        var callbacks = given
        callbacks.progress = { job in
            await ledger.progress(done: job.currentProgress, total: job.totalProgress, persistEvery: 2)
        }
        // Kept as the disk's error too, so `status` shows why the copy stands still.
        callbacks.ioError = { message in
            FailureKind.ioError.record()
            try? await ledger.report("job \(jobId): \(message)")
        }
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
    func verifyStandalone() async throws {
        if let problem = try await sourceRetirementProblem() {
            throw NeedsAttention(description: "after the stream: \(problem)")
        }
        try await ledger.note("verified: \(disk.destination) is active with no backing file; nothing opens the source")
    }

    /// Tells the VM's manager which image the disk runs on now, when it keeps a record
    /// that the next boot follows (libvirt's persistent definition), and notes a change.
    /// The device is named as preflight found it (a QMP VM answers without asking QEMU).
    func updateManagerRecord() async throws {
        if let change = try await session.updateManagerRecord(disk: disk.qmpDevice ?? disk.device) {
            try await ledger.note(change)
        }
    }
}
