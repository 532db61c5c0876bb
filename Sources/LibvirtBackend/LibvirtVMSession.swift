// One libvirt domain: the recipe through libvirt's block APIs, with the copy held and
// flushed through QEMU's monitor (libvirt's pull cannot be held; docs/libvirt.md).

import CLibvirt
import Foundation
import LivecopyBackend
import QMP
import QMPBackend

/// A `VMSession` to a libvirt domain.
///
/// Everything that changes which image a disk runs on goes through libvirt's own API, so
/// libvirt's records (the live and the persistent definition, its security labels, its
/// nodes) follow: the snapshot (`virDomainSnapshotCreateXML`), the final pull that drops
/// the backing file (`virDomainBlockPull`), a rollback's commit or copy and its pivot
/// (`virDomainBlockCommit`, `virDomainBlockCopy`, `virDomainBlockJobAbort`).
///
/// The copy itself is a QEMU stream job sent through libvirt's monitor pass-through,
/// held in `pending` when done (libvirt's pull finalizes by itself, and QEMU does not
/// flush the copied clusters' L2 tables before the header rewrite: a QEMU killed right
/// after a libvirt pull completes was seen to leave a destination with neither its data
/// nor its backing file). `finalize` then cancels the held job, whose copied data stays,
/// and lets libvirt's own pull, which has nothing left to copy, drop the backing file.
public final class LibvirtVMSession: VMSession {
    let domain: LibvirtDomainConnection
    let qemu: QMPVMSession
    let registry: LibvirtJobRegistry

    let endings: LibvirtJobEndings
    /// One disk's finalize at a time (`finalize`).
    private let finalizing = LibvirtTurns()

    init(domain: LibvirtDomainConnection, registry: LibvirtJobRegistry) {
        self.domain = domain
        self.qemu = QMPVMSession(LibvirtMonitor(domain))
        self.registry = registry
        self.endings = LibvirtJobEndings(domain.events.blockJobEvents())
    }

    /// The copy runs as a QEMU job (held, flushed with evidence, pausable); libvirt's own
    /// jobs (a rollback's commit or copy) cannot be paused, and say so when asked.
    public var capabilities: Set<BackendCapability> { Set(BackendCapability.allCases) }

    // MARK: What the VM shows

    /// libvirt's disks (named by target, `vda`), each with the image file and backing
    /// file libvirt's live definition records, and the node name and chain QEMU reports.
    public func disks() async throws -> [VMDisk] {
        let recorded = try await liveDisks()
        let running = try await qemu.disks()
        return recorded.map { disk in
            let qemuDisk = running.first { entry in
                guard let alias = disk.alias, let qdev = entry.guestDevice else { return false }
                return qdev == alias || qdev.hasPrefix("/machine/peripheral/\(alias)/")
            }
            let medium: VMDisk.Medium? = disk.source.flatMap { file in
                guard disk.notCopyable == nil || disk.sourceType == "block" else { return nil }
                let image = qemuDisk?.medium?.image
                    ?? DiskImage(filename: file, format: disk.format ?? "raw", virtualSize: 0, backingFilename: disk.backing.first)
                return VMDisk.Medium(file: file, nodeName: qemuDisk?.medium?.nodeName, backingFile: disk.backing.first, image: image)
            }
            return VMDisk(device: disk.target, guestDevice: disk.alias, medium: medium, notCopyable: disk.notCopyable)
        }
    }

    /// Every QEMU job, livecopy's held copies under their own ids, and libvirt's jobs
    /// under the id livecopy gave them (`LibvirtJobRegistry`).
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
        return shown + running.filter { !claimed.contains($0.id) && registry.job($0.id)?.kind != .finalizing }
    }

    /// libvirt's job for `job`, in the words of QEMU's job model: as QEMU shows it while
    /// it runs; once QEMU has finished it, still running until libvirt has updated its
    /// definition (libvirt dismisses its jobs itself), then concluded, with an error
    /// unless the disk ended where the job takes it.
    private func libvirtJob(_ job: LibvirtJob, seen: CopyJob?) async throws -> CopyJob {
        let type: String = switch job.kind {
        case .stream, .finalizing: "stream"
        case .commit: "commit"
        case .copy: "mirror"
        }
        // A job libvirt no longer shows is at its end: the disk's size, of its size.
        let size = seen == nil ? (try await disks().first { $0.device == job.disk }?.medium?.image.virtualSize ?? 0) : 0
        func shown(_ status: JobStatus, error: String? = nil) -> CopyJob {
            CopyJob(id: job.id, type: type, status: status, currentProgress: seen?.currentProgress ?? size,
                    totalProgress: seen?.totalProgress ?? size, error: error)
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

    // MARK: The recipe

    /// One disk-only snapshot of the VM (`virDomainSnapshotCreateXML` with `DISK_ONLY`,
    /// `NO_METADATA`, `REUSE_EXT`, `ATOMIC`): libvirt opens the overlays livecopy made,
    /// labels them for QEMU, and switches every listed disk in one QEMU transaction.
    public func switchToOverlays(_ requests: [OverlayRequest]) async throws {
        let disks = try await liveDisks()
        let known = try await self.disks()
        var overlays: [String: String] = [:]
        for request in requests {
            guard let target = known.device(named: request.disk.name)?.device else {
                throw BackendError(.refused(transient: false), operation: "virDomainSnapshotCreateXML",
                                   reason: "libvirt domain '\(domain.domainName)' has no disk '\(request.disk.name)'")
            }
            overlays[target] = request.overlayFile
        }
        let xml = LibvirtDomainXML.snapshot(overlays: overlays, disks: disks)
        let flags = VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY.rawValue | VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA.rawValue
            | VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT.rawValue | VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC.rawValue
        _ = try await domain.call("virDomainSnapshotCreateXML") { pointer -> Bool? in
            guard let snapshot = virDomainSnapshotCreateXML(pointer, xml, flags) else { return nil }
            virDomainSnapshotFree(snapshot)
            return true
        }
    }

    /// A QEMU stream job on the disk's active node, held in `pending` when done.
    public func startPull(disk: String, jobId: String, speed: Int64, onError: String) async throws {
        let target = try await findDisk(disk)
        guard let node = target.medium?.nodeName else {
            throw BackendError(.refused(transient: false), operation: "block-stream",
                               reason: "QEMU shows no active node for libvirt disk \(target.device)")
        }
        try await starting(LibvirtJob(id: jobId, disk: target.device, kind: .stream, pivotTo: nil)) {
            try await qemu.startPull(disk: node, jobId: jobId, speed: speed, onError: onError)
        }
    }

    /// Finalizes a held copy the libvirt way: records the step, cancels the held QEMU job
    /// (a stream cancelled in `pending` keeps every copied cluster and the backing file),
    /// dismisses it, and starts libvirt's pull, which finds nothing left to copy, drops
    /// the backing file and updates libvirt's live and persistent definitions. The job
    /// then shows as libvirt's pull until it concludes. Safe to repeat at any point.
    ///
    /// One disk at a time, and only while no other job of the domain moves: QEMU 7.2 was
    /// seen to crash (SIGSEGV at address 0x40, as in `bdrv_refresh_filename`) when
    /// libvirt's handling of one disk's pull ran while another disk's stream was running.
    /// Held copies wait in `pending` meanwhile, their destinations still backed by their
    /// sources, so waiting costs time only.
    public func finalize(jobId: String) async throws {
        guard let job = registry.job(jobId) else {
            throw BackendError(.refused(transient: false), operation: "finalize", reason: "no held copy job \(jobId) on this domain")
        }
        await finalizing.acquire()
        do {
            try await waitUntilNoOtherJobMoves(jobId, disk: job.disk)
            try await finalizeAlone(job)
        } catch {
            await finalizing.release()
            throw error
        }
        await finalizing.release()
    }

    /// Waits while another job of the domain is created, running, waiting or aborting
    /// (livecopy's copies of other disks, or anyone's), polling every 100 ms.
    private func waitUntilNoOtherJobMoves(_ jobId: String, disk: String) async throws {
        while true {
            let moving = try await qemu.jobs().filter { other in
                guard other.id != jobId, !LibvirtVMSession.isLibvirtJob(other.id, onDisk: disk) else { return false }
                switch other.status {
                case .created, .running, .waiting, .aborting: return true
                case .undefined, .paused, .ready, .standby, .pending, .concluded, .null, .unrecognized: return false
                }
            }
            if moving.isEmpty { return }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    private func finalizeAlone(_ job: LibvirtJob) async throws {
        let jobId = job.id
        try await registry.record(LibvirtJob(id: jobId, disk: job.disk, kind: .finalizing, pivotTo: nil))
        if let held = try await qemu.jobs().first(where: { $0.id == jobId }) {
            if held.status != .concluded {
                try await qemu.cancel(jobId: jobId, force: true)
                try await waitUntilConcluded(jobId)
            }
            try await qemu.dismiss(jobId: jobId)
        }
        if try await qemu.jobs().contains(where: { LibvirtVMSession.isLibvirtJob($0.id, onDisk: job.disk) }) {
            return  // libvirt's pull already runs (a repeated finalize)
        }
        guard let disk = try await liveDisks().first(where: { $0.target == job.disk }), !disk.backing.isEmpty else {
            return  // already standalone: the pull finished
        }
        endings.clear(job.disk)
        try await domain.check("virDomainBlockPull") { pointer in
            virDomainBlockPull(pointer, job.disk, 0, 0)
        }
    }

    private func waitUntilConcluded(_ jobId: String) async throws {
        for _ in 0..<600 {
            guard let job = try await qemu.jobs().first(where: { $0.id == jobId }), job.status != .concluded else { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw BackendError(.refused(transient: true), operation: "job-cancel",
                           reason: "QEMU job \(jobId) did not conclude within 30 s of its cancel")
    }

    public func flush(nodeName: String) async throws -> FlushEvidence { try await qemu.flush(nodeName: nodeName) }

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

    private func refuseForLibvirtsOwn(_ jobId: String, _ verb: String) throws {
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

    // MARK: The VM's manager

    /// For a persistent domain: when the inactive definition (what the next `virsh start`
    /// boots) names another image for `disk` than the one it runs on, or a backing chain
    /// the running image no longer has, redefines the domain with only that disk's source
    /// changed (`virDomainDefineXML`).
    public func updateManagerRecord(disk name: String) async throws -> String? {
        let persistent = try await domain.call("virDomainIsPersistent") { pointer -> Int32? in
            let answer = virDomainIsPersistent(pointer)
            return answer < 0 ? nil : answer
        }
        guard persistent == 1 else { return nil }
        let entry = try await findDisk(name)
        guard let live = try await liveDisks().first(where: { $0.target == entry.device }), let file = live.source else { return nil }
        let definition = try await xml(flags: VIR_DOMAIN_XML_INACTIVE.rawValue)
        guard let recorded = try LibvirtDomainXML.disks(definition).first(where: { $0.target == entry.device }) else { return nil }
        // The same image: stale only when it records a backing chain the image no longer
        // has (mid-copy, libvirt records the chain itself).
        guard recorded.source != file || (live.backing.isEmpty && !recorded.backing.isEmpty) else { return nil }
        guard let updated = try LibvirtDomainXML.redefining(definition, target: entry.device, file: file, format: live.format ?? "qcow2")
        else { return nil }
        let connection = domain.connection
        _ = try await domain.call("virDomainDefineXML") { _ -> Bool? in
            guard let defined = virDomainDefineXML(connection.pointer, updated) else { return nil }
            virDomainFree(defined)
            return true
        }
        let before = recorded.source.map { $0 + (recorded.backing.isEmpty ? "" : " (backed by \(recorded.backing.joined(separator: ", ")))") } ?? "no image"
        return "libvirt's persistent definition of \(domain.domainName) named \(before) for \(entry.device); livecopy redefined it to \(file), which \(entry.device) runs on"
    }

    public var isClosed: Bool { domain.isClosed }

    public func close() async {
        endings.stop()
        await domain.close()
    }

    // MARK: Helpers

    /// Records `job` before starting it (a crash in between leaves a record the next
    /// session reads), and forgets it when the hypervisor refused to start it.
    private func starting(_ job: LibvirtJob, _ start: () async throws -> Void) async throws {
        try await registry.record(job)
        do {
            try await start()
        } catch let error as BackendError where error.isRefusal {
            try? await registry.forget(job.id)
            throw error
        }
    }

    private func findDisk(_ name: String) async throws -> VMDisk {
        guard let disk = try await disks().device(named: name) else {
            throw BackendError(.refused(transient: false), reason: "libvirt domain '\(domain.domainName)' has no disk '\(name)'")
        }
        return disk
    }

    func liveDisks() async throws -> [LibvirtDisk] {
        try LibvirtDomainXML.disks(try await xml(flags: 0))
    }

    private func xml(flags: UInt32) async throws -> String {
        try await domain.call("virDomainGetXMLDesc") { pointer -> String? in
            guard let raw = virDomainGetXMLDesc(pointer, flags) else { return nil }
            defer { free(raw) }
            return String(cString: raw)
        }
    }
}
