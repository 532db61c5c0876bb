import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import QMPBackend
import TestSupport
import Testing

/// I/O errors injected through blkdebug under the source, against real QEMU (no tmpfs
/// needed). blkdebug in the source chain is refused by preflight (`json:` name): the
/// `on_error: stop` case records its plan without preflight; the `report` + rollback case
/// cannot (QEMU rewrites the `json:` name on the pivot back, so the source no longer
/// matches the record) and runs against the fake VM in `QMPFaultTests`.
@Suite(.serialized, .requires(.qemu))
struct InjectedIOErrorTests {
    /// A VM whose drive0 is a qcow2 over blkdebug that fails the first data read with EIO
    /// (once), and a plan recorded without preflight (which refuses a source that is not a
    /// plain file).
    static func blkdebugSetUp(_ name: String, policy: Policy, errno: Int32 = EIO) async throws
        -> (scratch: TemporaryDirectory, vm: QEMUVirtualMachine, store: SQLiteStore, engine: Engine, source: String, blkdebugSource: String, destination: String, planId: Int64)
    {
        let scratch = try TemporaryDirectory(prefix: name)
        let source = scratch.appending("src.qcow2")
        try QEMUImage.create(source, size: "64M")
        try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "24M")
        // blkdebug's config-file syntax: QEMU then names the image `blkdebug:CONF:IMAGE`, the
        // same string every time (its json: names reorder their keys from one query to the next).
        let rules = scratch.appending("blkdebug.conf")
        try "[inject-error]\nevent = \"read_aio\"\nerrno = \"\(errno)\"\nonce = \"on\"\n".write(toFile: rules, atomically: true, encoding: .utf8)
        let drive = "if=none,id=drive0,format=qcow2,file=blkdebug:\(rules):\(source)"
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [], extraArguments: ["-drive", drive])
        let inserted = try #require(try await vm.testMonitor().queryBlock().first { $0.device == "drive0" }?.inserted)
        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        let engine = Engine(store: store, hypervisor: QMPHypervisor(connector: TestConnector()))
        let destination = scratch.appending("dst.qcow2")
        let plan = Plan(name: "eio", policyReference: nil, vms: [
            .init(name: "vm", address: .qmp(socket: vm.livecopySocket), disks: [.init(device: "drive0", destination: destination)]),
        ])
        let disk = NewPlan.Disk(vmName: "vm", vmAddress: vm.livecopySocket, device: "drive0", destination: destination,
                                source: inserted.file, sourceFormat: "qcow2", qmpDevice: "drive0")
        // The recorded source is the `blkdebug:` name, whose rule would fail the
        // verification's own read of it too: these tests are about the copy's I/O errors.
        var policy = policy
        policy.verify = .none
        let record = try engine.record(plan, policy: policy, disks: [disk])
        return (scratch, vm, store, engine, source, inserted.file, destination, record.id)
    }

    /// A read error injected under the source pauses the job (EIO with `on_error: stop`,
    /// ENOSPC with `on_error: enospc`); `status` shows why; livecopy's resume completes it.
    @Test(.timeLimit(.minutes(2)), arguments: [
        (EIO, Policy.OnIOError.stop, "failed", "lc-eio-stop"), (ENOSPC, Policy.OnIOError.enospc, "nospace", "lc-nospc"),
    ])
    func anInjectedErrorPausesTheJobThenAResumeCompletesIt(errno: Int32, onError: Policy.OnIOError, ioStatus: String, name: String) async throws {
        var policy = try EngineFailureTests.policy(onFailure: .stop)
        policy.onError = onError
        policy.ioErrorWait = 60
        let setup = try await Self.blkdebugSetUp(name, policy: policy, errno: errno)
        defer { setup.scratch.remove() }
        defer { setup.vm.kill() }
        let run = Task { try await setup.engine.run(planId: setup.planId) }
        let paused = try await IOErrorTests.waitForEvent(setup.store, planId: setup.planId, containing: "paused by an I/O error (io-status \(ioStatus))")
        #expect(paused.diskId != nil)
        // `status` shows why the copy stands still: the disk's error names the pause.
        let disk = try #require(try setup.store.disks(ofPlan: setup.planId).first)
        // (The event's own line, "I/O error on read, action stop", may come last.)
        #expect(disk.error?.contains("I/O error") == true, "\(disk.error ?? "no error")")
        try await setup.vm.guestWrite(drive: "drive0", pattern: 0x55, offset: "60M", length: "64k")
        let plan = try await run.value
        await setup.engine.shutdown()
        #expect(plan.state == .completed, "\(plan.error ?? "")")
        #expect(try setup.store.disks(ofPlan: setup.planId).first?.error == nil, "cleared once the copy went on")
        let details = try setup.store.events(ofPlan: setup.planId).map(\.detail)
        #expect(details.contains { $0.contains("I/O error on read, action stop") }, "\(details)")
        try await EngineFailureTests.expectFinishedCopy(setup.vm, destination: setup.destination)
    }

    @Test(.timeLimit(.minutes(2)))
    func sourceReadErrorWithOnErrorReportRollsBackWithEveryWrite() async throws {
        var policy = try EngineFailureTests.policy(onFailure: .rollback)
        policy.onError = .report
        let setup = try await Self.blkdebugSetUp("lc-eio-report", policy: policy)
        defer { setup.scratch.remove() }
        defer { setup.vm.kill() }
        // Written while the VM is on its source, before the copy.
        try await setup.vm.guestWrite(drive: "drive0", pattern: 0x44, offset: "40M", length: "64k")
        let run = Task { try await setup.engine.run(planId: setup.planId) }
        let plan = try await run.value
        await setup.engine.shutdown()
        #expect(plan.state == .rolledBack, "\(plan.error ?? "")")
        let disk = try #require(try setup.store.disks(ofPlan: setup.planId).first)
        #expect(disk.error?.contains("Input/output error") == true, "\(disk.error ?? "")")
        let details = try setup.store.events(ofPlan: setup.planId).map(\.detail)
        #expect(details.contains { $0.contains("I/O error on read, action report") }, "\(details)")
        let active = try await EngineFailureTests.activeImage(setup.vm)
        #expect(active.file == setup.blkdebugSource, "back on the blkdebug source: \(active.file ?? "none")")
        #expect(active.backing == nil)
        #expect(!FileManager.default.fileExists(atPath: setup.destination), "the destination livecopy made is deleted")
        try await setup.vm.guestWrite(drive: "drive0", pattern: 0x66, offset: "50M", length: "64k")
        await setup.vm.stop()
        #expect(try QEMUImage.verify(setup.source, pattern: 0x11, offset: "0", length: "24M"))
        #expect(try QEMUImage.verify(setup.source, pattern: 0x44, offset: "40M", length: "64k"))
        #expect(try QEMUImage.verify(setup.source, pattern: 0x66, offset: "50M", length: "64k"))
    }

    /// A source opened through blkdebug options has a `json:` file name, which livecopy
    /// refuses before touching anything (the tests above record their plans directly).
    @Test(.timeLimit(.minutes(1)))
    func aBlkdebugSourceIsRefusedByPreflight() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-blkdebug")
        defer { scratch.remove() }
        let source = scratch.appending("src.qcow2")
        try QEMUImage.create(source, size: "16M")
        try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "4M")
        let drive = "if=none,id=drive0,driver=qcow2,file.driver=blkdebug,file.image.filename=\(source),"
            + "file.inject-error.0.event=read_aio,file.inject-error.0.errno=5,file.inject-error.0.once=on"
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [], extraArguments: ["-drive", drive])
        defer { vm.kill() }
        let inserted = try await vm.testMonitor().queryBlock().first { $0.device == "drive0" }?.inserted
        #expect(inserted?.file.hasPrefix("json:") == true, "\(inserted?.file ?? "none")")

        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        let engine = Engine(store: store, hypervisor: QMPHypervisor(connector: TestConnector()))
        let plan = Plan(name: "eio", policyReference: nil, vms: [
            .init(name: "vm", address: .qmp(socket: vm.livecopySocket), disks: [.init(device: "drive0", destination: scratch.appending("dst.qcow2"))]),
        ])
        let error = try await #require(throws: PreflightError.self) { _ = try await engine.preflight(plan, policy: try Policy.resolve(nil)) }
        #expect(error.description.contains("is not a plain file"), "\(error)")
        await engine.shutdown()
        #expect(!FileManager.default.fileExists(atPath: scratch.appending("dst.qcow2")))
    }
}
