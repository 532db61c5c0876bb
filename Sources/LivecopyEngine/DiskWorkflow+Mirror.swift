// The mirror strategy for one disk (docs/mirror.md): the destination made (or a block
// device checked), the mirror job, its watch, and the pivot: a flush QEMU confirms,
// `block-job-complete`, `job-finalize`. Until the pivot the source is the truth; after
// it, the destination.

import CSystemExtras
import Foundation
import LivecopyBackend
import LivecopyModel

extension DiskWorkflow {
    /// A pending mirror disk starts: its source found (a detached plan), and the VM seen
    /// on it.
    func beginMirror() async throws {
        if disk.source == nil { try await discoverSource() }
        let entry = try await locateDevice()
        guard let active = entry.medium?.file, active == disk.source else {
            throw NeedsAttention(
                description: "VM '\(disk.vmName)' device '\(disk.device)' is on \(entry.medium?.file ?? "no image"), not on the recorded source \(disk.source ?? "?")")
        }
        try await ledger.transition(to: .mirroring, "mirror \(disk.source ?? "?") → \(disk.destination) (\(disk.destinationFormat.rawValue), copy_mode \(policy.copyMode.rawValue))")
    }

    /// The `mirroring` step, re-entrant: re-attaches to the mirror job when QEMU lists it;
    /// otherwise looks at where the VM runs. On the destination, the pivot happened; on the
    /// source, the mirror starts (again, from scratch) once nothing says the destination
    /// may hold writes the source lacks.
    func mirror() async throws {
        let jobId = disk.mirrorJobId
        var earlyEvents: AsyncStream<JobEvent>?
        if let existing = try await job(jobId) {
            try await ledger.note("re-attaching to QEMU job \(jobId) (\(existing.status.explanation))")
            await joinBudget(jobId)
        } else {
            let entry = try await locateDevice()
            switch entry.medium?.file {
            case disk.destination?:
                guard disk.pivoted || disk.intent == .pivot else {
                    throw NeedsAttention(
                        description: "VM '\(disk.vmName)' device '\(disk.device)' runs on \(disk.destination), onto which livecopy never pivoted: it may be a partial copy. Stop the VM and start it on \(disk.source ?? "the source"), which holds every write livecopy saw, then run livecopy recover")
                }
                try await pivotSeen(entry)
            case disk.source?:
                try await refuseLostPivot()
                try await prepareMirrorDestination(entry)
                earlyEvents = session.jobEvents()
                try await startMirrorJob(entry, jobId: jobId)
            default:
                throw NeedsAttention(
                    description: "VM '\(disk.vmName)' device '\(disk.device)' runs on \(entry.medium?.file ?? "no image"), neither the source \(disk.source ?? "?") nor the destination \(disk.destination)")
            }
        }
        try await applyControls(to: jobId)
        if try await job(jobId) != nil {
            var callbacks = JobWatcher.Callbacks()
            callbacks.ready = { [self] in try await self.pivot(jobId) }
            callbacks.pending = { [self] in
                // Re-attached to a job already completed (livecopy died inside the pivot);
                // not a job this run completed and finalized already.
                guard try await self.job(jobId)?.status == .pending else { return }
                try await self.finishPivot(jobId)
            }
            let ledger = self.ledger
            callbacks.concluded = { [self] error in
                if let error {
                    try await ledger.report("mirror job \(jobId) failed: \(error)")
                } else {
                    // What the conclusion proves, recorded before job-dismiss erases the job.
                    let entry = try await self.locateDevice()
                    if entry.medium?.file == self.disk.destination { try await self.pivotSeen(entry) }
                }
            }
            let watched = try await watch(jobId: jobId, callbacks: callbacks, events: earlyEvents)
            await leaveBudget()
            if let error = watched {
                // The VM stays on its source; QEMU lets go of the partial copy.
                try? await session.closeImage(nodeName: disk.destinationNodeName)
                throw StreamFailure(description: "mirror job \(jobId) failed: \(error); the VM stays on \(disk.source ?? "the source"), which holds every write")
            }
            let entry = try await locateDevice()
            guard entry.medium?.file == disk.destination else {
                // Concluded without a pivot: cancelled by someone else. The source is whole.
                try await ledger.outcome("the mirror ended without a pivot; the VM is on \(entry.medium?.file ?? "no image")")
                throw StreamFailure(description: "mirror job \(jobId) ended without pivoting (cancelled outside livecopy?); the VM stays on \(disk.source ?? "the source"), which holds every write")
            }
            try await pivotSeen(entry)
        }
        // The VM runs on the destination now: its manager learns it first (a failed
        // on_switch may roll the disk back, which only `mirroring` still can).
        if try await runPendingHook() { return }
        try await verifyStandalone()
        try await updateManagerRecord()
        try await ledger.transition(to: .retiring, "\(disk.destination) stands alone") { $0.error = nil }
    }

    /// QEMU shows the VM on the destination: the pivot happened. Recorded once (closing
    /// the pivot intent), from then on the destination is the truth.
    func pivotSeen(_ entry: VMDisk) async throws {
        guard !disk.pivoted || disk.intent == .pivot else { return }
        try await ledger.outcome("pivoted: the VM runs on \(disk.destination)", calling: .onSwitch) {
            $0.pivoted = true
            $0.qmpDevice = (try? self.deviceName(entry)) ?? $0.qmpDevice
        }
    }

    /// The VM runs on the source and no mirror job is listed. If the record says the VM
    /// moved to the destination, or was about to, the destination may hold writes the
    /// source lacks (QEMU stopped around the pivot and was started again on the source):
    /// go on only when both images hold the same bytes.
    func refuseLostPivot() async throws {
        guard disk.pivoted || disk.intent == .pivot else { return }
        let source = disk.source ?? "the source"
        var info = stat()
        if lstat(disk.destination, &info) != 0 && errno == ENOENT {
            // The operator decided for the source and deleted the destination.
            try await ledger.outcome("the VM runs on \(source) again and \(disk.destination) is gone: mirroring again from scratch") {
                $0.pivoted = false
                $0.destinationCreated = false
            }
            return
        }
        if await inspector.sourceMatchesDestination(disk) {
            try await ledger.outcome("the VM runs on \(source) again and \(disk.destination) holds the same data: nothing written after the pivot is lost; mirroring again") {
                $0.pivoted = false
            }
            return
        }
        let when = disk.pivoted ? "the VM had pivoted onto \(disk.destination)" : "a pivot onto \(disk.destination) was under way"
        throw NeedsAttention(
            description: "\(when) when QEMU stopped, and the VM now runs on \(source), which differs from \(disk.destination): livecopy cannot tell which holds the newest writes and touched neither. If \(disk.destination) does, start the VM on it and run livecopy recover; if \(source) does, delete \(disk.destination) yourself, then run livecopy recover (the mirror starts again) or livecopy cancel \(disk.planId)")
    }

    /// Readies the destination for a mirror from scratch: a file livecopy made earlier is
    /// removed (after the checks), then made again exclusively; a block device is checked
    /// (size, nothing using it). Any node of an earlier attempt is closed first.
    func prepareMirrorDestination(_ entry: VMDisk) async throws {
        guard let image = entry.medium?.image, let source = disk.source, image.filename == source else {
            throw NeedsAttention(description: "device '\(disk.device)' is not on the recorded source \(disk.source ?? "?")")
        }
        try? await session.closeImage(nodeName: disk.destinationNodeName)
        if isBlockDevice(disk.destination) {
            if let problem = await BlockDeviceDestination.problemNow(disk.destination, virtualSize: image.virtualSize) {
                throw NeedsAttention(description: "\(problem); nothing was written to it")
            }
            return
        }
        var info = stat()
        if disk.destinationCreated {
            try await deleteOwnFile(disk.destination, because: "the mirror starts again from scratch")
            try await ledger.outcome("removed \(disk.destination), the partial copy of an earlier attempt") { $0.destinationCreated = false }
        } else if disk.intent == .createDestination, lstat(disk.destination, &info) == 0 {
            throw NeedsAttention(
                description: "livecopy was interrupted while creating \(disk.destination) and cannot prove the file there is its own, so it left it; delete it if nothing else uses it, then run livecopy recover")
        }
        try await ledger.intend(.createDestination, "\(disk.destination): \(disk.destinationFormat.rawValue) of \(image.virtualSize) bytes, no backing file") {
            $0.destinationCreated = false
        }
        do {
            try creator.createImage(at: disk.destination, format: disk.destinationFormat, virtualSize: image.virtualSize)
        } catch {
            try await ledger.outcome("refused: \(describe(error))")
            throw error
        }
        ledger.sent()
        try await ledger.outcome("created \(disk.destination) (mode 0600, \(disk.destinationFormat.rawValue))", next: .mirror) {
            $0.destinationCreated = true
        }
    }

    /// Opens the destination in QEMU and starts the mirror job.
    func startMirrorJob(_ entry: VMDisk, jobId: String) async throws {
        let blockDevice = isBlockDevice(disk.destination)
        // A block device larger than the disk shows the guest only the disk's size (a
        // raw file livecopy made has that size already).
        let size = entry.medium?.image.virtualSize
        let limit = blockDevice && size != BlockDeviceDestination.size(of: disk.destination) ? size : nil
        // Opened as the source is (cache mode, zero detection): the VM runs on it after the pivot.
        let target = ImageToOpen(nodeName: disk.destinationNodeName, path: disk.destination, format: disk.destinationFormat.rawValue,
                                 isBlockDevice: blockDevice, size: limit, ioSettings: entry.medium?.ioSettings)
        let device = try deviceName(entry)
        try await startCopyJob(jobId) { [self] speed in
            if disk.intent != .mirror {
                try await ledger.intend(.mirror, "job \(jobId) into \(disk.destination), speed \(speed), copy-mode \(policy.copyMode.rawValue), on-error \(policy.onError.rawValue)")
            }
            try await session.openImage(target)
            do {
                try await session.startMirror(MirrorRequest(
                    disk: device, jobId: jobId, targetNode: target.nodeName, speed: speed,
                    onError: policy.onError.rawValue, copyMode: policy.copyMode.rawValue))
            } catch let error as BackendError where error.isRefusal {
                try? await session.closeImage(nodeName: target.nodeName)
                try await ledger.outcome("refused: \(error.reason)")
                throw error
            }
            ledger.sent()
            try await ledger.outcome("job \(jobId) started")
        }
    }
}
