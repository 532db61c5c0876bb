import Foundation
import Logging
import LivecopyBackend
import LivecopyModel

/// A VM session that sends an operation again when the hypervisor refused it for a
/// transient reason (a busy device or node, an image lock held for a moment: the
/// backend's `BackendError.Kind.refused(transient: true)`), with exponential backoff, as
/// the policy says (`qmp_retries`, `qmp_retry_backoff`).
///
/// Only refusals are retried: the hypervisor did nothing for them. An operation that
/// got no answer, or whose session broke, is never sent again blindly; the workflow asks
/// the VM what happened instead.
final class RetryingVMSession: VMSession {
    private let base: any VMSession
    private let retries: Int
    private let backoff: Double
    private let onRetry: @Sendable (String) async -> Void

    /// The longest single wait between two attempts, in seconds.
    static let maxBackoff: Double = 60

    init(_ base: any VMSession, policy: Policy, onRetry: @escaping @Sendable (String) async -> Void) {
        self.base = base
        self.retries = policy.qmpRetries
        self.backoff = policy.qmpRetryBackoff
        self.onRetry = onRetry
    }

    /// Runs `operation`, again after a transient refusal while retries are left.
    private func retrying<T>(_ operation: () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await operation()
            } catch let error as BackendError where attempt < retries && error.kind == .refused(transient: true) {
                attempt += 1
                let wait = min(backoff * pow(2, Double(attempt - 1)), Self.maxBackoff)
                logger.notice("operation refused for a transient reason; retrying", metadata: [
                    "operation": "\(error.operation ?? "?")", "attempt": "\(attempt)", "of": "\(retries)", "wait": "\(wait)",
                    "error": "\(error.description)",
                ])
                await onRetry("\(error.description); transient, retry \(attempt) of \(retries) in \(String(format: "%.2f", wait)) s")
                try await Task.sleep(for: .seconds(wait))
            }
        }
    }

    var capabilities: Set<BackendCapability> { base.capabilities }
    func disks() async throws -> [VMDisk] { try await retrying { try await base.disks() } }
    func jobs() async throws -> [CopyJob] { try await retrying { try await base.jobs() } }
    func ioErrorStatus(ofJob id: String) async throws -> String? { try await retrying { try await base.ioErrorStatus(ofJob: id) } }
    func migrationStatus() async throws -> String? { try await retrying { try await base.migrationStatus() } }
    func jobEvents() -> AsyncStream<JobEvent> { base.jobEvents() }
    func switchToOverlays(_ requests: [OverlayRequest]) async throws { try await retrying { try await base.switchToOverlays(requests) } }
    func startPull(disk: String, jobId: String, speed: Int64, onError: String) async throws {
        try await retrying { try await base.startPull(disk: disk, jobId: jobId, speed: speed, onError: onError) }
    }
    func finalize(jobId: String) async throws { try await retrying { try await base.finalize(jobId: jobId) } }
    func flush(nodeName: String) async throws -> FlushEvidence { try await retrying { try await base.flush(nodeName: nodeName) } }
    func startCommit(disk: String, jobId: String, baseFile: String?, speed: Int64) async throws {
        try await retrying { try await base.startCommit(disk: disk, jobId: jobId, baseFile: baseFile, speed: speed) }
    }
    func startMirror(disk: String, jobId: String, target: String, format: String) async throws {
        try await retrying { try await base.startMirror(disk: disk, jobId: jobId, target: target, format: format) }
    }
    func openImage(_ image: ImageToOpen) async throws { try await retrying { try await base.openImage(image) } }
    func closeImage(nodeName: String) async throws { try await retrying { try await base.closeImage(nodeName: nodeName) } }
    func startMirror(_ request: MirrorRequest) async throws { try await retrying { try await base.startMirror(request) } }
    func addDirtyBitmap(nodeName: String, name: String) async throws {
        try await retrying { try await base.addDirtyBitmap(nodeName: nodeName, name: name) }
    }
    func removeDirtyBitmap(nodeName: String, name: String) async throws {
        try await retrying { try await base.removeDirtyBitmap(nodeName: nodeName, name: name) }
    }
    func openVerificationExport(_ export: VerificationExport) async throws -> VerificationEndpoint {
        try await retrying { try await base.openVerificationExport(export) }
    }
    func closeVerificationExport(_ export: VerificationExport) async throws {
        try await retrying { try await base.closeVerificationExport(export) }
    }
    func complete(jobId: String) async throws { try await retrying { try await base.complete(jobId: jobId) } }
    func cancel(jobId: String, force: Bool) async throws { try await retrying { try await base.cancel(jobId: jobId, force: force) } }
    func pause(jobId: String) async throws { try await retrying { try await base.pause(jobId: jobId) } }
    func resume(jobId: String) async throws { try await retrying { try await base.resume(jobId: jobId) } }
    func setSpeed(jobId: String, speed: Int64) async throws { try await retrying { try await base.setSpeed(jobId: jobId, speed: speed) } }
    func dismiss(jobId: String) async throws { try await retrying { try await base.dismiss(jobId: jobId) } }
    func updateManagerRecord(disk: String) async throws -> String? { try await retrying { try await base.updateManagerRecord(disk: disk) } }
    var isClosed: Bool { base.isClosed }
    func close() async { await base.close() }
}
