// One VM through its QMP monitor: the backend's operations as QMP commands.

import Foundation
import LivecopyBackend
import QMP

/// A `VMSession` over a QMP session: each operation is one QMP command (typed in
/// `QMP/BlockCommands.swift`), its errors turned into `BackendError`.
public final class QMPVMSession: VMSession {
    let qmp: any QMPSession
    /// The NBD server livecopy runs in this VM for verification exports, if any.
    let nbdServer = NBDServerSlot()

    public init(_ qmp: any QMPSession) {
        self.qmp = qmp
    }

    /// QMP with block-stream does everything the recipe needs.
    public var capabilities: Set<BackendCapability> { Set(BackendCapability.allCases) }

    public func disks() async throws -> [VMDisk] {
        try await QMPErrors.mapping("query-block") { try await qmp.queryBlock().map(VMDisk.init) }
    }

    public func jobs() async throws -> [CopyJob] {
        try await QMPErrors.mapping("query-jobs") { try await qmp.queryJobs().map(CopyJob.init) }
    }

    public func ioErrorStatus(ofJob id: String) async throws -> String? {
        try await QMPErrors.mapping("query-block-jobs") {
            let status = try await qmp.queryBlockJobs().first(where: { $0.device == id })?.ioStatus ?? "ok"
            return status == "ok" ? nil : status
        }
    }

    public func migrationStatus() async throws -> String? {
        try await QMPErrors.mapping("query-migrate") { try await qmp.queryMigrate().status }
    }

    public func jobEvents() -> AsyncStream<JobEvent> {
        let events = qmp.events()
        return AsyncStream { continuation in
            let task = Task {
                for await event in events {
                    if let jobEvent = JobEvent(event) { continuation.yield(jobEvent) }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    public func switchToOverlays(_ requests: [OverlayRequest]) async throws {
        try await QMPErrors.mapping("transaction") {
            try await qmp.snapshotTransaction(requests.map { request in
                let target: BlockTarget
                switch request.disk {
                case .device(let name): target = .device(name)
                case .node(let name): target = .node(name)
                }
                // mode existing: QEMU opens the file livecopy made, and never creates one.
                return SnapshotRequest(target: target, snapshotFile: request.overlayFile,
                                       snapshotNodeName: request.overlayNodeName, mode: "existing",
                                       dirtyBitmap: request.dirtyBitmap)
            })
        }
    }

    public func startPull(disk: String, jobId: String, speed: Int64, onError: String) async throws {
        try await QMPErrors.mapping("block-stream") {
            try await qmp.blockStream(device: disk, jobId: jobId, speed: speed, onError: onError)
        }
    }

    public func finalize(jobId: String) async throws {
        try await QMPErrors.mapping("job-finalize") { try await qmp.jobFinalize(jobId: jobId) }
    }

    /// Flushes block node `nodeName` to disk, with evidence: HMP `qemu-io NODE "reopen"`
    /// reopens the node with its own options, and QEMU flushes a node before reopening it
    /// (`bdrv_reopen_prepare`), reporting a failure as "Error flushing drive: …" in the
    /// HMP reply. QMP has no flush command, and neither HMP `qemu-io … "flush"` (its reply
    /// is empty whether the flush worked or not) nor `query-blockstats` (it does not count
    /// flushes that are not the guest's) can confirm one: both were checked on QEMU 7.2
    /// with a blkdebug rule failing every flush of the image's file.
    ///
    /// The node must be a format node such as the qcow2 destination (`query-block`'s
    /// `inserted.node-name`, which skips the implicit copy-on-read filter of a stream
    /// job); filters refuse to reopen, and that is reported as not confirmed too.
    public func flush(nodeName: String) async throws -> FlushEvidence {
        try await QMPErrors.mapping("human-monitor-command") { try await flushByReopening(nodeName) }
    }

    private func flushByReopening(_ nodeName: String) async throws -> FlushEvidence {
        let reply = try await qmp.execute("human-monitor-command", ["command-line": .string("qemu-io \(nodeName) \"reopen\"")])
        guard let text = reply.stringValue else {
            return .notConfirmed("HMP answered \(reply.compactText) instead of text")
        }
        let answer = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if answer.isEmpty { return .confirmed }
        if answer.contains("Error flushing drive") { return .failed(answer) }
        return .notConfirmed(answer)
    }

    public func openImage(_ image: ImageToOpen) async throws {
        try await QMPErrors.mapping("blockdev-add") {
            try await qmp.blockdevAdd(nodeName: image.nodeName, filename: image.path, format: image.format,
                                      blockDevice: image.isBlockDevice, size: image.size,
                                      cacheDirect: image.ioSettings?.cacheDirect, cacheNoFlush: image.ioSettings?.cacheNoFlush,
                                      detectZeroes: image.ioSettings?.detectZeroes)
        }
    }

    public func closeImage(nodeName: String) async throws {
        try await QMPErrors.mapping("blockdev-del") { try await qmp.blockdevDel(nodeName: nodeName) }
    }

    public func startMirror(_ request: MirrorRequest) async throws {
        try await QMPErrors.mapping("blockdev-mirror") {
            try await qmp.blockdevMirror(
                device: request.disk, jobId: request.jobId, targetNode: request.targetNode, speed: request.speed,
                onError: request.onError, copyMode: request.copyMode)
        }
    }

    public func startCommit(disk: String, jobId: String, baseFile: String?, speed: Int64) async throws {
        try await QMPErrors.mapping("block-commit") {
            try await qmp.blockCommit(device: disk, jobId: jobId, baseFile: baseFile, speed: speed)
        }
    }

    public func startMirror(disk: String, jobId: String, target: String, format: String) async throws {
        try await QMPErrors.mapping("drive-mirror") {
            try await qmp.driveMirrorToExisting(device: disk, jobId: jobId, target: target, format: format)
        }
    }

    public func complete(jobId: String) async throws {
        try await QMPErrors.mapping("block-job-complete") { try await qmp.blockJobComplete(jobId: jobId) }
    }

    public func cancel(jobId: String, force: Bool) async throws {
        try await QMPErrors.mapping("block-job-cancel") { try await qmp.blockJobCancel(jobId: jobId, force: force) }
    }

    public func pause(jobId: String) async throws {
        try await QMPErrors.mapping("block-job-pause") { try await qmp.blockJobPause(jobId: jobId) }
    }

    public func resume(jobId: String) async throws {
        try await QMPErrors.mapping("block-job-resume") { try await qmp.blockJobResume(jobId: jobId) }
    }

    public func setSpeed(jobId: String, speed: Int64) async throws {
        try await QMPErrors.mapping("block-job-set-speed") { try await qmp.blockJobSetSpeed(jobId: jobId, speed: speed) }
    }

    public func dismiss(jobId: String) async throws {
        try await QMPErrors.mapping("job-dismiss") { try await qmp.jobDismiss(jobId: jobId) }
    }

    /// A VM reached by its QMP socket has no manager keeping a record of its disks.
    public func updateManagerRecord(disk: String) async throws -> String? { nil }

    public var isClosed: Bool { qmp.isClosed }

    public func close() async { await qmp.close() }
}
