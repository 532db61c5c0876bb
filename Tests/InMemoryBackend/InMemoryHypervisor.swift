// The in-memory backend: VMs that exist only in this process, for the engine's fast
// tests and the conformance suite. No socket, no QEMU: each VM is a few devices with
// image chains, and jobs that advance one step each time the job list is read.

import Foundation
import LivecopyBackend
import Synchronization

/// A hypervisor whose VMs live in memory. Tests add VMs, then hand it to the engine (or
/// to the conformance suite) like any other `Hypervisor`.
public final class InMemoryHypervisor: Hypervisor {
    private let vms = Mutex<[String: InMemoryVM]>([:])

    public init() {}

    public var name: String { "in-memory" }

    /// Adds a VM at `address` (any string) and returns it, to script and inspect.
    @discardableResult
    public func addVM(at address: String, capabilities: Set<BackendCapability> = Set(BackendCapability.allCases).subtracting([.mirrorCopy, .dirtyTracking]),
                      devices: [InMemoryVM.Device]) -> InMemoryVM {
        let vm = InMemoryVM(address: address, capabilities: capabilities, devices: devices)
        vms.withLock { $0[address] = vm }
        return vm
    }

    /// The VM at `address`.
    public func vm(at address: String) -> InMemoryVM? {
        vms.withLock { $0[address] }
    }

    /// In-memory VMs are this process's own.
    public func checkAddress(_ address: String, allowShared: Bool) throws {}

    public func connect(to address: String, commandTimeout: Double) async throws -> any VMSession {
        guard let vm = vm(at: address), vm.isRunning else {
            throw BackendError(.unreachable, reason: "cannot reach VM \(address): no such VM runs")
        }
        return vm.openSession()
    }
}

/// One session to an in-memory VM. Closing it (or the VM losing it) ends its events.
final class InMemoryVMSession: VMSession {
    let vm: InMemoryVM
    let id: Int
    private let closed = Mutex(false)

    init(vm: InMemoryVM, id: Int) {
        self.vm = vm
        self.id = id
    }

    var capabilities: Set<BackendCapability> { vm.capabilities }
    var isClosed: Bool { closed.withLock { $0 } }

    func markClosed() { closed.withLock { $0 = true } }

    func close() async { vm.closeSession(self) }

    private func perform<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        guard !isClosed else {
            throw BackendError(.sessionLost, operation: operation, reason: "connection lost: the session is closed")
        }
        return try vm.perform(operation, session: self, body)
    }

    func disks() async throws -> [VMDisk] { try perform("disks") { vm.disksNow() } }
    func jobs() async throws -> [CopyJob] { try perform("jobs") { vm.jobsAdvancingOneStep() } }
    func ioErrorStatus(ofJob id: String) async throws -> String? { try perform("ioErrorStatus") { vm.ioErrorStatus(id) } }
    func migrationStatus() async throws -> String? { try perform("migrationStatus") { vm.migration } }
    func jobEvents() -> AsyncStream<JobEvent> { vm.subscribe(self) }
    func switchToOverlays(_ requests: [OverlayRequest]) async throws {
        try perform("switchToOverlays") { try vm.switchToOverlays(requests) }
    }
    func startPull(disk: String, jobId: String, speed: Int64, onError: String) async throws {
        try perform("startPull") { try vm.startJob(.pull, disk: disk, jobId: jobId) }
    }
    func finalize(jobId: String) async throws { try perform("finalize") { try vm.finalize(jobId) } }
    func flush(nodeName: String) async throws -> FlushEvidence { try perform("flush") { vm.flush(nodeName) } }
    func startCommit(disk: String, jobId: String, baseFile: String?, speed: Int64) async throws {
        try perform("startCommit") { try vm.startJob(.commit(baseFile: baseFile), disk: disk, jobId: jobId) }
    }
    func startMirror(disk: String, jobId: String, target: String, format: String) async throws {
        try perform("startMirror") { try vm.startJob(.mirror(target: target, format: format), disk: disk, jobId: jobId) }
    }
    func openImage(_ image: ImageToOpen) async throws { throw Self.realQEMUOnly("openImage") }
    func closeImage(nodeName: String) async throws { throw Self.realQEMUOnly("closeImage") }
    func startMirror(_ request: MirrorRequest) async throws { throw Self.realQEMUOnly("startMirror") }
    func addDirtyBitmap(nodeName: String, name: String) async throws { throw Self.realQEMUOnly("addDirtyBitmap") }
    func removeDirtyBitmap(nodeName: String, name: String) async throws { throw Self.realQEMUOnly("removeDirtyBitmap") }
    func openVerificationExport(_ export: VerificationExport) async throws -> VerificationEndpoint {
        throw Self.realQEMUOnly("openVerificationExport")
    }
    func closeVerificationExport(_ export: VerificationExport) async throws { throw Self.realQEMUOnly("closeVerificationExport") }
    /// The mirror strategy and data verification are tested against real QEMU only.
    private static func realQEMUOnly(_ operation: String) -> BackendError {
        BackendError(.unsupported, operation: operation, reason: "the in-memory backend has no mirror strategy and no data verification")
    }
    func complete(jobId: String) async throws { try perform("complete") { try vm.complete(jobId) } }
    func cancel(jobId: String, force: Bool) async throws { try perform("cancel") { try vm.cancel(jobId) } }
    func pause(jobId: String) async throws { try perform("pause") { try vm.pause(jobId) } }
    func resume(jobId: String) async throws { try perform("resume") { try vm.resume(jobId) } }
    func setSpeed(jobId: String, speed: Int64) async throws { try perform("setSpeed") { try vm.setSpeed(jobId, speed) } }
    func dismiss(jobId: String) async throws { try perform("dismiss") { try vm.dismiss(jobId) } }
    /// The in-memory VM has no manager keeping a record of its disks.
    func updateManagerRecord(disk: String) async throws -> String? { nil }
}
