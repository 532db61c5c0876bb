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
    let finalizing = LibvirtTurns()

    init(domain: LibvirtDomainConnection, registry: LibvirtJobRegistry) {
        self.domain = domain
        self.qemu = QMPVMSession(LibvirtMonitor(domain))
        self.registry = registry
        self.endings = LibvirtJobEndings(domain.events.blockJobEvents())
    }

    /// The copy runs as a QEMU job (held, flushed with evidence, pausable); libvirt's own
    /// jobs (a rollback's commit or copy) cannot be paused, and say so when asked.
    public var capabilities: Set<BackendCapability> { Set(BackendCapability.allCases).subtracting([.mirrorCopy, .dirtyTracking]) }

    // MARK: What the VM shows

    /// libvirt's disks (named by target, `vda`), each with the image file and backing
    /// file libvirt's live definition records, and the node name and chain QEMU reports.
    public func disks() async throws -> [VMDisk] { try await disks(recorded: try await liveDisks()) }

    /// The VM's disks as `recorded` in libvirt's live definition (read once by the caller).
    func disks(recorded: [LibvirtDisk]) async throws -> [VMDisk] {
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
    // MARK: The recipe

    /// One disk-only snapshot of the VM (`virDomainSnapshotCreateXML` with `DISK_ONLY`,
    /// `NO_METADATA`, `REUSE_EXT`, `ATOMIC`): libvirt opens the overlays livecopy made,
    /// labels them for QEMU, and switches every listed disk in one QEMU transaction.
    public func switchToOverlays(_ requests: [OverlayRequest]) async throws {
        let disks = try await liveDisks()
        let known = try await self.disks(recorded: disks)
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

    public var isClosed: Bool { domain.isClosed }

    public func close() async {
        endings.stop()
        await domain.close()
    }

    // MARK: Helpers

    /// Records `job` before starting it (a crash in between leaves a record the next
    /// session reads), and forgets it when the hypervisor refused to start it.
    func starting(_ job: LibvirtJob, _ start: () async throws -> Void) async throws {
        try await registry.record(job)
        do {
            try await start()
        } catch let error as BackendError where error.isRefusal {
            try? await registry.forget(job.id)
            throw error
        }
    }

    /// The disk `name` designates, among those `recorded` (nil: read them now).
    func findDisk(_ name: String, recorded: [LibvirtDisk]? = nil) async throws -> VMDisk {
        let listed: [LibvirtDisk]
        if let recorded { listed = recorded } else { listed = try await liveDisks() }
        guard let disk = try await disks(recorded: listed).device(named: name) else {
            throw BackendError(.refused(transient: false), reason: "libvirt domain '\(domain.domainName)' has no disk '\(name)'")
        }
        return disk
    }

    func liveDisks() async throws -> [LibvirtDisk] {
        try LibvirtDomainXML.disks(try await xml(flags: 0))
    }

    func xml(flags: UInt32) async throws -> String {
        try await domain.call("virDomainGetXMLDesc") { pointer -> String? in
            guard let raw = virDomainGetXMLDesc(pointer, flags) else { return nil }
            defer { free(raw) }
            return String(cString: raw)
        }
    }
}
