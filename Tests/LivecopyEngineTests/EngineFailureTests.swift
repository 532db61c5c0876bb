import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import QMPBackend
import TestSupport
import Testing

/// Connects the engine to real QEMU monitors.
struct TestConnector: QMPConnector {
    func connect(socketPath: String, commandTimeout: Double) async throws -> any QMPSession {
        try await QMPConnection.connect(socketPath: socketPath, connectTimeout: 5, commandTimeout: commandTimeout)
    }
}

/// Copy failures against real QEMU with a real ENOSPC on the destination: `on_failure`
/// rolls back (the VM ends on its source holding every write) or stops (the disk waits,
/// failed, on its destination overlay, and a later run completes it).
@Suite(.requires(.qemu, .tmpfs))
struct EngineFailureTests {
    struct Setup {
        let scratch: TemporaryDirectory
        let filesystem: SmallFilesystem
        let vm: QEMUVirtualMachine
        let store: SQLiteStore
        let source: String
        let destination: String
    }

    /// A VM whose drive0 holds 24 MiB of 0x11, and a 6 MiB tmpfs for the destination.
    static func setUp(_ name: String) throws -> Setup {
        let scratch = try TemporaryDirectory(prefix: name)
        guard let filesystem = SmallFilesystem(path: scratch.appending("small"), size: "6m") else {
            throw WaitTimeout(what: "mount tmpfs")
        }
        let source = scratch.appending("src.qcow2")
        try QEMUImage.create(source, size: "64M")
        try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "24M")
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: source, format: "qcow2")])
        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        return Setup(scratch: scratch, filesystem: filesystem, vm: vm, store: store, source: source,
                     destination: filesystem.path + "/dst.qcow2")
    }

    static func plan(_ setup: Setup) -> Plan {
        Plan(name: "enospc", policyReference: nil, vms: [
            .init(name: "vm", address: .qmp(socket: setup.vm.livecopySocket), disks: [.init(device: "drive0", destination: setup.destination)]),
        ])
    }

    static func policy(onFailure: Policy.OnFailure) throws -> Policy {
        var policy = try Policy.resolve(nil)
        policy.onError = .report
        policy.onFailure = onFailure
        policy.speed = 8 << 20
        policy.retireSource = .keep
        policy.progressInterval = 0.2
        // The tmpfs is too small on purpose: these tests need the copy itself to hit ENOSPC,
        // so the preflight's free-space check (tested on its own below) is off.
        policy.spaceMargin = 0
        return policy
    }

    /// Starts the plan and writes into the guest while it streams; returns the run's task.
    static func startAndWriteDuringCopy(_ setup: Setup, engine: Engine, policy: Policy) async throws -> (Int64, Task<PlanRecord, Error>) {
        let disks = try await engine.preflight(plan(setup), policy: policy)
        let record = try engine.record(plan(setup), policy: policy, disks: disks)
        let run = Task { try await engine.run(planId: record.id) }
        let deadline = Date().addingTimeInterval(30)
        while try setup.store.disks(ofPlan: record.id).first?.state != .streaming {
            guard Date() < deadline else { throw WaitTimeout(what: "streaming") }
            try await Task.sleep(for: .milliseconds(20))
        }
        try await setup.vm.guestWrite(drive: "drive0", pattern: 0x55, offset: "60M", length: "64k")
        return (record.id, run)
    }

    /// The copy finished: the VM runs on `destination` with no backing file, and once the
    /// VM is stopped the destination alone holds the 24 MiB written offline and the guest's
    /// write at 60M.
    static func expectFinishedCopy(_ vm: QEMUVirtualMachine, destination: String,
                                   sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let active = try await activeImage(vm)
        #expect(active.file == destination, sourceLocation: sourceLocation)
        #expect(active.backing == nil, sourceLocation: sourceLocation)
        await vm.stop()
        #expect(try QEMUImage.verify(destination, pattern: 0x11, offset: "0", length: "24M"), sourceLocation: sourceLocation)
        #expect(try QEMUImage.verify(destination, pattern: 0x55, offset: "60M", length: "64k"), sourceLocation: sourceLocation)
        #expect(try QEMUImage.info(destination).backingFilename == nil, sourceLocation: sourceLocation)
    }

    static func activeImage(_ vm: QEMUVirtualMachine) async throws -> (file: String?, backing: String?) {
        let devices = try await vm.testMonitor().queryBlock()
        let inserted = devices.first { $0.device == "drive0" }?.inserted
        return (inserted?.file, inserted?.backingFile)
    }

    @Test(.timeLimit(.minutes(2)))
    func aFailedCopyRollsBackToTheSourceWithEveryWrite() async throws {
        let setup = try Self.setUp("lc-rollback")
        defer { setup.scratch.remove() }
        let engine = Engine(store: setup.store, hypervisor: QMPHypervisor(connector: TestConnector()))
        let (planId, run) = try await Self.startAndWriteDuringCopy(setup, engine: engine, policy: try Self.policy(onFailure: .rollback))
        let plan = try await run.value
        await engine.shutdown()

        #expect(plan.state == .rolledBack)
        let disk = try #require(try setup.store.disks(ofPlan: planId).first)
        #expect(disk.state == .rolledBack)
        #expect(disk.error?.contains("failed") == true, "\(disk.error ?? "no error")")
        let active = try await Self.activeImage(setup.vm)
        #expect(active.file == setup.source)
        #expect(active.backing == nil)
        #expect(!FileManager.default.fileExists(atPath: setup.destination), "the destination livecopy created is deleted")
        let transitions = try setup.store.events(ofPlan: planId).filter { $0.kind == .transition && $0.diskId != nil }
            .map { "\($0.from ?? "")→\($0.to ?? "")" }
        #expect(transitions == ["pending→snapshotting", "snapshotting→streaming", "streaming→rolling_back", "rolling_back→rolled_back"])

        await setup.vm.stop()
        #expect(try QEMUImage.verify(setup.source, pattern: 0x11, offset: "0", length: "24M"))
        #expect(try QEMUImage.verify(setup.source, pattern: 0x55, offset: "60M", length: "64k"), "the guest write made during the copy is in the source")
    }

    @Test(.timeLimit(.minutes(2)))
    func aStoppedCopyWaitsOnItsOverlayAndResumesLater() async throws {
        let setup = try Self.setUp("lc-stop")
        defer { setup.scratch.remove() }
        let engine = Engine(store: setup.store, hypervisor: QMPHypervisor(connector: TestConnector()))
        let (planId, run) = try await Self.startAndWriteDuringCopy(setup, engine: engine, policy: try Self.policy(onFailure: .stop))
        let stopped = try await run.value

        #expect(stopped.state == .failed)
        let failed = try #require(try setup.store.disks(ofPlan: planId).first)
        #expect(failed.state == .failed)
        #expect(failed.bootImage == setup.destination)
        let active = try await Self.activeImage(setup.vm)
        #expect(active.file == setup.destination, "the VM stays on its destination overlay")
        #expect(active.backing == setup.source)

        // The operator frees space; running the plan again finishes the copy.
        try setup.filesystem.resize("128m")
        let resumed = try await engine.run(planId: planId)
        await engine.shutdown()
        #expect(resumed.state == .completed)
        try await Self.expectFinishedCopy(setup.vm, destination: setup.destination)
        #expect(FileManager.default.fileExists(atPath: setup.source), "retire_source: keep")
    }

    @Test(.timeLimit(.minutes(1)))
    func preflightRefusesADestinationFilesystemTooSmallForTheSource() async throws {
        let setup = try Self.setUp("lc-space")
        defer { setup.scratch.remove() }
        let engine = Engine(store: setup.store, hypervisor: QMPHypervisor(connector: TestConnector()))
        defer { Task { await engine.shutdown() } }
        var policy = try Policy.resolve(nil)
        #expect(policy.spaceMargin == 1.1, "the shipped default margin")
        do {
            _ = try await engine.preflight(Self.plan(setup), policy: policy)
            Issue.record("a 6 MiB filesystem was accepted for 24 MiB of source data")
        } catch let error as PreflightError {
            let text = error.description
            #expect(text.contains("VM 'vm' disk 'drive0'"), "\(text)")
            #expect(text.contains("free") && text.contains("space_margin 1.1"), "\(text)")
            #expect(!text.contains("\n"))
        }
        #expect(!FileManager.default.fileExists(atPath: setup.destination), "nothing created")
        #expect(try setup.store.plans(states: nil, vm: nil, limit: nil).isEmpty, "nothing recorded")
        #expect(try await Self.activeImage(setup.vm).file == setup.source)

        // With room enough (the margin included), the same plan passes.
        try setup.filesystem.resize("28m")
        _ = try await engine.preflight(Self.plan(setup), policy: policy)
        // A margin the room does not cover is refused again; 0 turns the check off.
        policy.spaceMargin = 2
        await #expect(throws: PreflightError.self) { _ = try await engine.preflight(Self.plan(setup), policy: policy) }
        try setup.filesystem.resize("6m")
        policy.spaceMargin = 0
        _ = try await engine.preflight(Self.plan(setup), policy: policy)
    }
}

extension EngineFailureTests {
    /// A plan recorded detached (no VM asked) gets the free-space check when it first
    /// runs, before any snapshot: refused in one line, nothing created, the VM untouched.
    @Test(.timeLimit(.minutes(2)))
    func aDetachedPlanIsRefusedWhenItRunsIfTheDestinationFilesystemIsTooSmall() async throws {
        let setup = try Self.setUp("lc-space-detached")
        defer { setup.scratch.remove() }
        let engine = Engine(store: setup.store, hypervisor: QMPHypervisor(connector: TestConnector()))
        var policy = try Self.policy(onFailure: .stop)
        policy.spaceMargin = 1.1
        func recordDetached() throws -> Int64 {
            try engine.checkOffline(Self.plan(setup), policy: policy)
            return try engine.record(Self.plan(setup), policy: policy, disks: Self.plan(setup).allDisks.map {
                NewPlan.Disk(vm: $0.vm, disk: $0.disk, strategy: policy.strategy)
            }).id
        }
        let refusedId = try recordDetached()
        let refused = try await engine.run(planId: refusedId)
        #expect(refused.state == .refused)
        let reason = try #require(refused.error)
        #expect(reason.hasPrefix("VM 'vm' disk 'drive0': the filesystem of"), "\(reason)")
        #expect(reason.contains("space_margin 1.1"), "\(reason)")
        #expect(!reason.contains("\n"))
        let disk = try #require(try setup.store.disks(ofPlan: refusedId).first)
        #expect(disk.state == .rolledBack)
        #expect(disk.error == reason)
        #expect(!FileManager.default.fileExists(atPath: setup.destination), "nothing created")
        #expect(try await Self.activeImage(setup.vm).file == setup.source, "no snapshot")

        // With room enough, the same plan recorded again runs to its end.
        try setup.filesystem.resize("28m")
        let plan = try await engine.run(planId: try recordDetached())
        await engine.shutdown()
        #expect(plan.state == .completed, "\(plan.error ?? "")")
        #expect(try await Self.activeImage(setup.vm).file == setup.destination)
    }
}

struct WaitTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out or failed: \(what)" }
}
