import Foundation
import InMemoryBackend
import LivecopyBackend
@testable import LivecopyEngine
import LivecopyModel
import LivecopyStore
import Synchronization
import TestSupport
import Testing

/// The engine against the in-memory backend: fast runs of the whole recipe, and the
/// faults real QEMU cannot be made to show on cue (a refusal before the snapshot, a lost
/// session while retiring, a refused commit during a rollback, a flush not confirmed).
/// Each test names the transitions it takes; together with the real-QEMU suites they
/// reach every edge of the table (`TransitionCoverageTests`).
@Suite struct InMemoryEngineTests {
    /// A VM at `/mem/vm` with drive0 on `source` (a placeholder file), a store, and a plan
    /// copying drive0 to `destination`.
    struct Rig {
        let scratch: TemporaryDirectory
        let hypervisor = InMemoryHypervisor()
        let vm: InMemoryVM
        let store: SQLiteStore
        let source: String
        let destination: String

        init(_ name: String, capabilities: Set<BackendCapability> = Set(BackendCapability.allCases)) throws {
            scratch = try TemporaryDirectory(prefix: name)
            source = scratch.appending("source.qcow2")
            destination = scratch.appending("destination.qcow2")
            _ = FileManager.default.createFile(atPath: source, contents: Data("source".utf8))
            vm = hypervisor.addVM(at: "/mem/vm", capabilities: capabilities, devices: [
                .init(name: "drive0", chain: [.init(file: source)]),
            ])
            store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        }

        var plan: Plan {
            Plan(name: "in-memory", policyReference: nil, vms: [
                Plan.VM(name: "vm", address: .qmp(socket: "/mem/vm"), disks: [Plan.Disk(device: "drive0", destination: destination)]),
            ])
        }

        func policy(onFailure: Policy.OnFailure = .stop) throws -> Policy {
            var policy = try Policy.resolve(nil)
            policy.retireSource = .rename
            policy.onFailure = onFailure
            policy.progressInterval = 0.02
            policy.qmpRetries = 0
            policy.verify = .none  // data verification needs real QEMU (VerificationIntegrationTests)
            return policy
        }

        func engine(_ observer: any EngineObserver = SilentObserver()) -> Engine {
            Engine(store: store, hypervisor: hypervisor, observer: observer, inspector: StubInspector())
        }

        /// Checks and records the plan; returns its id.
        func record(_ policy: Policy) async throws -> Int64 {
            let engine = engine()
            defer { Task { await engine.shutdown() } }
            let disks = try await engine.preflight(plan, policy: policy)
            return try engine.record(plan, policy: policy, disks: disks).id
        }

        func run(_ planId: Int64, mode: RunMode = .resume, observer: any EngineObserver = SilentObserver()) async throws -> PlanRecord {
            let engine = engine(observer)
            let plan = try await engine.run(planId: planId, mode: mode)
            await engine.shutdown()
            return plan
        }

        func disk(_ planId: Int64) throws -> DiskRecord {
            try #require(try store.disks(ofPlan: planId).first)
        }

        func transitions(_ planId: Int64) throws -> [String] {
            try store.events(ofPlan: planId).filter { $0.kind == .transition && $0.diskId != nil }
                .map { "\($0.from ?? "")→\($0.to ?? "")" }
        }
    }

    /// Calls `action` once, the first time a disk moves to `state`.
    final class OnMove: EngineObserver {
        let state: DiskState
        let action: @Sendable () -> Void
        private let done = Mutex(false)

        init(to state: DiskState, _ action: @escaping @Sendable () -> Void) {
            self.state = state
            self.action = action
        }

        func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String) {
            guard disk.state == state, done.withLock({ done in defer { done = true }; return !done }) else { return }
            action()
        }
        func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64) {}
        func note(_ disk: DiskRecord?, _ message: String) {}
    }

    @Test(.timeLimit(.minutes(1)))
    func aPlanRunsThroughTheWholeRecipe() async throws {
        let rig = try Rig("lc-mem-recipe")
        defer { rig.scratch.remove() }
        let planId = try await rig.record(try rig.policy())
        let plan = try await rig.run(planId)
        #expect(plan.state == .completed)
        #expect(rig.vm.chain(of: "drive0") == [rig.destination])
        #expect(rig.vm.jobIds.isEmpty, "the stream job was dismissed")
        #expect(FileManager.default.fileExists(atPath: rig.source + ".retired"))
        #expect(!FileManager.default.fileExists(atPath: rig.source))
        #expect(try rig.transitions(planId) == ["pending→snapshotting", "snapshotting→streaming", "streaming→retiring", "retiring→completed"])
        // The flush came before the finalize.
        let calls = rig.vm.calls.filter { ["flush", "finalize"].contains($0) }
        #expect(calls == ["flush", "finalize"])
    }

    @Test(.timeLimit(.minutes(1)))
    func aVMRestartedOnAnotherImageBeforeTheSnapshotNeedsAttention() async throws {
        // pending→needs_attention: the plan was checked, then the VM's manager restarted it on another image.
        let rig = try Rig("lc-mem-moved")
        defer { rig.scratch.remove() }
        let planId = try await rig.record(try rig.policy())
        let other = rig.scratch.appending("other.qcow2")
        rig.vm.restart(device: "drive0", on: [.init(file: other)])
        let plan = try await rig.run(planId)
        #expect(plan.state == .needsAttention)
        let disk = try rig.disk(planId)
        #expect(disk.state == .needsAttention)
        #expect(disk.error?.contains("is on \(other), not on the recorded source \(rig.source)") == true, "\(disk.error ?? "")")
        #expect(try rig.transitions(planId) == ["pending→needs_attention"])
        #expect(!FileManager.default.fileExists(atPath: rig.destination), "nothing was created")
        #expect(rig.vm.chain(of: "drive0") == [other])
    }

    @Test(.timeLimit(.minutes(1)))
    func aRefusalBeforeTheSnapshotFailsTheDiskAndTheNextRunCompletesIt() async throws {
        // pending→failed, then failed→snapshotting on the next run.
        let rig = try Rig("lc-mem-refused")
        defer { rig.scratch.remove() }
        let planId = try await rig.record(try rig.policy())
        rig.vm.fail("disks", with: .refuse(reason: "Device 'drive0' is being reconfigured", transient: false))
        let failed = try await rig.run(planId)
        #expect(failed.state == .failed)
        #expect(try rig.disk(planId).error?.contains("being reconfigured") == true)
        #expect(!FileManager.default.fileExists(atPath: rig.destination))
        #expect(rig.vm.chain(of: "drive0") == [rig.source])

        let plan = try await rig.run(planId)
        #expect(plan.state == .completed)
        #expect(try rig.transitions(planId) == [
            "pending→failed", "failed→snapshotting", "snapshotting→streaming", "streaming→retiring", "retiring→completed",
        ])
    }

    @Test(.timeLimit(.minutes(1)))
    func aSessionLostWhileRetiringFailsTheDiskAndTheNextRunRetiresAgain() async throws {
        // retiring→failed, then failed→retiring: the checks before the rename run again.
        let rig = try Rig("lc-mem-retire")
        defer { rig.scratch.remove() }
        let planId = try await rig.record(try rig.policy())
        let vm = rig.vm
        let failed = try await rig.run(planId, observer: OnMove(to: .retiring) {
            vm.fail("disks", with: .loseSessionBefore)
        })
        #expect(failed.state == .failed)
        let disk = try rig.disk(planId)
        #expect(disk.state == .failed)
        #expect(disk.intent == .renameSource, "the rename was intended, not done")
        #expect(FileManager.default.fileExists(atPath: rig.source), "nothing was renamed")

        let plan = try await rig.run(planId)
        #expect(plan.state == .completed)
        #expect(FileManager.default.fileExists(atPath: rig.source + ".retired"))
        #expect(try rig.transitions(planId).suffix(3) == ["retiring→failed", "failed→retiring", "retiring→completed"])
    }

    @Test(.timeLimit(.minutes(1)))
    func aRefusedCommitFailsTheRollbackAndTheNextRollbackFinishesIt() async throws {
        // streaming→failed (the copy failed, on_failure: stop), failed→rolling_back,
        // rolling_back→failed (the commit refused), then the rollback again to the end.
        let rig = try Rig("lc-mem-rollback")
        defer { rig.scratch.remove() }
        let planId = try await rig.record(try rig.policy())
        rig.vm.failNextJob(with: "Input/output error")
        let failed = try await rig.run(planId)
        #expect(failed.state == .failed)
        #expect(try rig.disk(planId).error?.contains("Input/output error") == true)
        #expect(rig.vm.chain(of: "drive0") == [rig.destination, rig.source])

        rig.vm.fail("startCommit", with: .refuse(reason: "Node 'lc-dst' is read-only", transient: false))
        let refused = try await rig.run(planId, mode: .rollback)
        #expect(refused.state == .failed)
        #expect(try rig.disk(planId).state == .failed)
        #expect(rig.vm.chain(of: "drive0") == [rig.destination, rig.source], "nothing moved")

        let plan = try await rig.run(planId, mode: .rollback)
        #expect(plan.state == .rolledBack)
        #expect(rig.vm.chain(of: "drive0") == [rig.source])
        #expect(!FileManager.default.fileExists(atPath: rig.destination), "the destination livecopy made is deleted")
        #expect(try rig.transitions(planId) == [
            "pending→snapshotting", "snapshotting→streaming", "streaming→failed", "failed→rolling_back",
            "rolling_back→failed", "failed→rolling_back", "rolling_back→rolled_back",
        ])
    }

    @Test(.timeLimit(.minutes(1)))
    func aFlushNotConfirmedKeepsTheJobPendingAndTheBackingFile() async throws {
        let rig = try Rig("lc-mem-flush")
        defer { rig.scratch.remove() }
        let planId = try await rig.record(try rig.policy(onFailure: .rollback))
        rig.vm.answerFlushes(.failed("Error flushing drive: Input/output error"))
        let failed = try await rig.run(planId)
        #expect(failed.state == .failed, "never rolled back for this: the copy itself is whole")
        #expect(try rig.disk(planId).error?.contains("waits in pending and nothing was finalized") == true)
        #expect(rig.vm.chain(of: "drive0") == [rig.destination, rig.source], "the destination keeps its backing file")
        #expect(!rig.vm.calls.contains("finalize"))
        // recover's report names QEMU's job state as QEMU's, and says what comes next.
        let engine = rig.engine()
        let report = try await engine.reconciliationReport(planId: planId)
        await engine.shutdown()
        let disk = try rig.disk(planId)
        #expect(report.first?.finding.contains("QEMU job \(disk.streamJobId) done copying, waiting to be finalized") == true,
                "\(report.first?.finding ?? "")")
        #expect(report.first?.finding.hasSuffix("next: resuming the stream") == true, "\(report.first?.finding ?? "")")

        rig.vm.answerFlushes(.confirmed)
        let plan = try await rig.run(planId)
        #expect(plan.state == .completed)
        #expect(rig.vm.chain(of: "drive0") == [rig.destination])
    }

    @Test(.timeLimit(.minutes(1)))
    func aBackendThatCannotHoldAFinishedCopyIsRefusedBeforeAnythingIsTouched() async throws {
        let rig = try Rig("lc-mem-caps", capabilities: [.throttleJobs, .atomicSwitch, .commitBack, .mirrorBack])
        defer { rig.scratch.remove() }
        let engine = rig.engine()
        let error = try await #require(throws: PreflightError.self) {
            _ = try await engine.preflight(rig.plan, policy: try rig.policy())
        }
        await engine.shutdown()
        #expect(error.description.contains("cannot confirmed-flush, holds-finished-pull"), "\(error)")
        #expect(!error.description.contains("\n"))
        #expect(rig.vm.calls.allSatisfy { ["disks", "jobs", "migrationStatus"].contains($0) }, "\(rig.vm.calls)")
    }

    /// A backend without the mirror strategy (libvirt's, this one) refuses a mirror plan
    /// at preflight, in one line, touching nothing.
    @Test(.timeLimit(.minutes(1)))
    func aBackendWithoutTheMirrorStrategyRefusesAMirrorPlan() async throws {
        let rig = try Rig("lc-mem-mirror", capabilities: Set(BackendCapability.allCases).subtracting([.mirrorCopy]))
        defer { rig.scratch.remove() }
        let engine = rig.engine()
        var policy = try rig.policy()
        policy.strategy = .mirror
        let error = try await #require(throws: PreflightError.self) {
            _ = try await engine.preflight(rig.plan, policy: policy)
        }
        await engine.shutdown()
        #expect(error.description.contains("cannot mirror-copy, which strategy: mirror needs; use strategy: stream"), "\(error)")
        #expect(!error.description.contains("\n"))
        #expect(rig.vm.calls.allSatisfy { ["disks", "jobs", "migrationStatus"].contains($0) }, "\(rig.vm.calls)")
    }
}
