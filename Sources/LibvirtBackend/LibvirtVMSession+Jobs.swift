// A libvirt domain's jobs: livecopy's held copies as QEMU shows them, libvirt's own
// jobs under the ids livecopy gave them, their events, and the controls.

import CLibvirt
import LivecopyBackend

extension LibvirtVMSession {
    public func jobs() async throws -> [CopyJob] {
        let running = try await qemu.jobs()
        var shown: [CopyJob] = []
        var claimed = Set<String>()
        for job in registry.all {
            switch job.kind {
            case .stream:
                // livecopy's own QEMU job: shown as QEMU shows it.
                continue
            case .finalizing, .commit, .copy:
                let ownJob = running.first { LibvirtVMSession.isLibvirtJob($0.id, onDisk: job.disk) }
                if let ownJob { claimed.insert(ownJob.id) }
                if job.kind == .finalizing, let held = running.first(where: { $0.id == job.id }) {
                    // Between the record and the cancel of the held copy: still waiting
                    // to be finalized, whatever QEMU says of the cancel.
                    claimed.insert(held.id)
                    shown.append(CopyJob(id: job.id, type: held.type, status: .pending, currentProgress: held.currentProgress,
                                         totalProgress: held.totalProgress, error: nil))
                    continue
                }
                shown.append(try await libvirtJob(job, seen: ownJob))
            }
        }
        return shown + running.filter { !claimed.contains($0.id) }
    }

    /// libvirt's job for `job`, in the words of QEMU's job model: as QEMU shows it while
    /// it runs; once QEMU has finished it, still running until libvirt has updated its
    /// definition (libvirt dismisses its jobs itself), then concluded, with an error
    /// unless the disk ended where the job takes it.
    func libvirtJob(_ job: LibvirtJob, seen: CopyJob?) async throws -> CopyJob {
        let type: String = switch job.kind {
        case .stream, .finalizing: "stream"
        case .commit: "commit"
        case .copy: "mirror"
        }
        // Progress as libvirt reports it; a job libvirt no longer shows is at its end: the
        // disk's size, of its size.
        let progress: (done: Int64, total: Int64)
        if let info = try await blockJobInfo(disk: job.disk) {
            progress = info
        } else {
            let size = try await disks().first { $0.device == job.disk }?.medium?.image.virtualSize ?? 0
            progress = (size, size)
        }
        func shown(_ status: JobStatus, error: String? = nil) -> CopyJob {
            CopyJob(id: job.id, type: type, status: status, currentProgress: progress.done, totalProgress: progress.total,
                    error: error)
        }
        if let seen {
            switch seen.status {
            case .concluded, .null:
                if let error = seen.error { return shown(.concluded, error: "libvirt's \(type) job of \(job.disk) failed: \(error)") }
            case .undefined, .created, .running, .paused, .ready, .standby, .waiting, .pending, .aborting, .unrecognized:
                return shown(seen.status)
            }
        }
        if let failure = endings.failure(of: job.disk) {
            return shown(.concluded, error: "libvirt's \(type) job of \(job.disk) \(failure)")
        }
        let disk = try await liveDisks().first { $0.target == job.disk }
        switch job.kind {
        case .stream:
            return shown(.concluded)
        case .finalizing:
            if disk?.backing.isEmpty == true { return shown(.concluded) }
            // QEMU finished the pull and libvirt has not updated its definition yet; or
            // libvirt's pull is yet to be (re)started, which `finalize` does.
            return shown(seen == nil ? .pending : .running)
        case .commit, .copy:
            if disk?.source == job.pivotTo { return shown(.concluded) }
            if seen != nil { return shown(.running) }  // libvirt is pivoting
            return shown(.concluded, error: "libvirt's \(type) job of \(job.disk) ended without pivoting onto \(job.pivotTo ?? "?") (the disk runs on \(disk?.source ?? "no image"))")
        }
    }

    /// The progress of libvirt's block job on `disk` (`virDomainGetBlockJobInfo`, in
    /// bytes), or nil when libvirt shows no job there.
    func blockJobInfo(disk: String) async throws -> (done: Int64, total: Int64)? {
        let answer = try await domain.call("virDomainGetBlockJobInfo") { pointer -> (found: Bool, done: Int64, total: Int64)? in
            var info = virDomainBlockJobInfo()
            let found = virDomainGetBlockJobInfo(pointer, disk, &info, VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES.rawValue)
            guard found >= 0 else { return nil }
            return (found == 1, Int64(clamping: info.cur), Int64(clamping: info.end))
        }
        return answer.found ? (answer.done, answer.total) : nil
    }

    /// Whether QEMU job `id` is libvirt's block job on disk `target`: libvirt names them
    /// `<kind>-<target>-<node>` (`pull-vda-libvirt-2-format`).
    static func isLibvirtJob(_ id: String, onDisk target: String) -> Bool {
        ["pull", "commit", "active-commit", "copy"].contains { id.hasPrefix("\($0)-\(target)-") }
    }

    public func ioErrorStatus(ofJob id: String) async throws -> String? {
        if let job = registry.job(id), job.isLibvirtsOwn {
            guard let qemuJob = try await qemu.jobs().first(where: { LibvirtVMSession.isLibvirtJob($0.id, onDisk: job.disk) })
            else { return nil }
            return try await qemu.ioErrorStatus(ofJob: qemuJob.id)
        }
        return try await qemu.ioErrorStatus(ofJob: id)
    }

    public func migrationStatus() async throws -> String? { try await qemu.migrationStatus() }

    /// QEMU's job events, libvirt's jobs under livecopy's ids, and libvirt's block job
    /// events (`VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2`) for libvirt's jobs, which end without
    /// a status livecopy could watch for.
    public func jobEvents() -> AsyncStream<JobEvent> {
        let qemuEvents = qemu.jobEvents()
        let libvirtEvents = domain.events.blockJobEvents()
        let registry = self.registry
        return AsyncStream { continuation in
            let forwardQEMU = Task {
                for await event in qemuEvents {
                    switch event {
                    case .statusChanged(let id, let status):
                        if let job = registry.all.first(where: { $0.isLibvirtsOwn && LibvirtVMSession.isLibvirtJob(id, onDisk: $0.disk) }) {
                            // How libvirt's job ends is told by libvirt's own event, once
                            // libvirt has updated its definition.
                            switch status {
                            case .waiting, .pending, .concluded, .null: continue
                            case .undefined, .created, .running, .paused, .ready, .standby, .aborting, .unrecognized:
                                continuation.yield(.statusChanged(id: job.id, status: status))
                            }
                        } else if registry.job(id)?.kind != .finalizing {
                            continuation.yield(event)
                        }
                    case .ioError(let id, let operation, let action):
                        let job = registry.all.first { $0.isLibvirtsOwn && LibvirtVMSession.isLibvirtJob(id, onDisk: $0.disk) }
                        continuation.yield(.ioError(id: job?.id ?? id, operation: operation, action: action))
                    }
                }
                continuation.finish()
            }
            let forwardLibvirt = Task {
                for await event in libvirtEvents {
                    for job in registry.all where job.isLibvirtsOwn && job.disk == event.disk {
                        switch UInt32(event.status) {
                        case VIR_DOMAIN_BLOCK_JOB_READY.rawValue:
                            continuation.yield(.statusChanged(id: job.id, status: .ready))
                        case VIR_DOMAIN_BLOCK_JOB_COMPLETED.rawValue, VIR_DOMAIN_BLOCK_JOB_FAILED.rawValue,
                             VIR_DOMAIN_BLOCK_JOB_CANCELED.rawValue:
                            // The watcher reads how it ended from `jobs()`.
                            continuation.yield(.statusChanged(id: job.id, status: .concluded))
                        default:
                            continue
                        }
                    }
                }
            }
            continuation.onTermination = { _ in
                forwardQEMU.cancel()
                forwardLibvirt.cancel()
            }
        }
    }

    // MARK: The mirror strategy: not offered (`capabilities` lacks `.mirrorCopy`)

    public func openImage(_ image: ImageToOpen) async throws { throw Self.noMirrorStrategy("openImage") }
    public func closeImage(nodeName: String) async throws { throw Self.noMirrorStrategy("closeImage") }
    public func startMirror(_ request: MirrorRequest) async throws { throw Self.noMirrorStrategy("startMirror") }

    public func addDirtyBitmap(nodeName: String, name: String) async throws { throw Self.noDirtyTracking("addDirtyBitmap") }
    public func removeDirtyBitmap(nodeName: String, name: String) async throws { throw Self.noDirtyTracking("removeDirtyBitmap") }
    public func openVerificationExport(_ export: VerificationExport) async throws -> VerificationEndpoint {
        throw Self.noDirtyTracking("openVerificationExport")
    }
    public func closeVerificationExport(_ export: VerificationExport) async throws { throw Self.noDirtyTracking("closeVerificationExport") }

    /// libvirt's snapshot API cannot add a bitmap in the switch's transaction, and its
    /// checkpoints cannot join it either (docs/retirement.md#libvirt).
    private static func noDirtyTracking(_ operation: String) -> BackendError {
        BackendError(.unsupported, operation: operation, reason: "the libvirt backend cannot verify data (verify: none)")
    }

    private static func noMirrorStrategy(_ operation: String) -> BackendError {
        BackendError(.unsupported, operation: operation, reason: "the libvirt backend copies with strategy: stream only")
    }

    // MARK: Rollback

    /// libvirt's active commit (`virDomainBlockCommit` with `ACTIVE`) of the disk's
    /// active image into `baseFile` (nil: the bottom of the chain); ready when caught up.
    public func startCommit(disk: String, jobId: String, baseFile: String?, speed: Int64) async throws {
        let target = try await findDisk(disk)
        guard let base = baseFile ?? target.medium?.image.chain.last?.filename else {
            throw BackendError(.refused(transient: false), operation: "virDomainBlockCommit", reason: "libvirt disk \(target.device) has no image")
        }
        endings.clear(target.device)
        let flags = VIR_DOMAIN_BLOCK_COMMIT_ACTIVE.rawValue | VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES.rawValue
        try await starting(LibvirtJob(id: jobId, disk: target.device, kind: .commit, pivotTo: base)) {
            try await domain.check("virDomainBlockCommit") { pointer in
                virDomainBlockCommit(pointer, target.device, base, nil, UInt(speed), flags)
            }
        }
    }

    /// libvirt's block copy (`virDomainBlockCopy` with `REUSE_EXT`) of the disk's whole
    /// chain into the existing image `target`; ready when caught up.
    public func startMirror(disk: String, jobId: String, target: String, format: String) async throws {
        let entry = try await findDisk(disk)
        endings.clear(entry.device)
        let xml = LibvirtDomainXML.copyTarget(file: target, format: format)
        let flags = VIR_DOMAIN_BLOCK_COPY_REUSE_EXT.rawValue | VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB.rawValue
        try await starting(LibvirtJob(id: jobId, disk: entry.device, kind: .copy, pivotTo: target)) {
            try await domain.check("virDomainBlockCopy") { pointer in
                virDomainBlockCopy(pointer, entry.device, xml, nil, 0, flags)
            }
        }
    }

    /// Pivots a ready commit or copy (`virDomainBlockJobAbort` with `PIVOT`, which
    /// returns once libvirt has pivoted).
    public func complete(jobId: String) async throws {
        guard let job = registry.job(jobId), job.isLibvirtsOwn else { return try await qemu.complete(jobId: jobId) }
        try await domain.check("virDomainBlockJobAbort") { pointer in
            virDomainBlockJobAbort(pointer, job.disk, VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT.rawValue)
        }
    }

    // MARK: Job controls

    public func cancel(jobId: String, force: Bool) async throws {
        guard let job = registry.job(jobId), job.isLibvirtsOwn else { return try await qemu.cancel(jobId: jobId, force: force) }
        try await domain.check("virDomainBlockJobAbort") { pointer in
            virDomainBlockJobAbort(pointer, job.disk, 0)
        }
    }

    public func pause(jobId: String) async throws {
        try refuseForLibvirtsOwn(jobId, "pause")
        try await qemu.pause(jobId: jobId)
    }

    public func resume(jobId: String) async throws {
        try refuseForLibvirtsOwn(jobId, "resume")
        try await qemu.resume(jobId: jobId)
    }

    func refuseForLibvirtsOwn(_ jobId: String, _ verb: String) throws {
        guard let job = registry.job(jobId), job.isLibvirtsOwn else { return }
        throw BackendError(.refused(transient: false), operation: verb,
                           reason: "libvirt cannot \(verb) its block jobs (job \(jobId) on \(job.disk) is libvirt's \(job.kind.rawValue))")
    }

    public func setSpeed(jobId: String, speed: Int64) async throws {
        guard let job = registry.job(jobId), job.isLibvirtsOwn else { return try await qemu.setSpeed(jobId: jobId, speed: speed) }
        try await domain.check("virDomainBlockJobSetSpeed") { pointer in
            virDomainBlockJobSetSpeed(pointer, job.disk, UInt(speed), VIR_DOMAIN_BLOCK_JOB_SPEED_BANDWIDTH_BYTES.rawValue)
        }
    }

    /// Forgets a concluded job: libvirt's jobs are dismissed by libvirt itself, so only
    /// livecopy's record goes; a QEMU job is dismissed in QEMU.
    public func dismiss(jobId: String) async throws {
        let job = registry.job(jobId)
        if job?.isLibvirtsOwn != true {
            try await qemu.dismiss(jobId: jobId)
        }
        try await registry.forget(jobId)
    }
}
