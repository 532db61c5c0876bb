import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import QMPBackend
import TestSupport
import Testing

/// I/O errors during the copy against real QEMU: a real ENOSPC on the destination (a
/// small tmpfs) with `on_error: enospc` pauses the job; livecopy records it, retries
/// `block-job-resume` every 10 s and waits up to `io_error_wait`, then `on_failure`
/// applies. Errors injected with blkdebug, which need no tmpfs, are in `InjectedIOErrorTests`.
@Suite(.serialized, .requires(.qemu, .tmpfs))
struct IOErrorTests {
    static func policy(ioErrorWait: Double, onFailure: Policy.OnFailure) throws -> Policy {
        var policy = try EngineFailureTests.policy(onFailure: onFailure)
        policy.onError = .enospc
        policy.ioErrorWait = ioErrorWait
        return policy
    }

    static func waitForEvent(_ store: SQLiteStore, planId: Int64, containing text: String, timeout: Double = 30) async throws -> EventRecord {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let event = try store.events(ofPlan: planId).first(where: { $0.detail.contains(text) }) { return event }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw WaitTimeout(what: "an event containing '\(text)'")
    }

    @Test(.timeLimit(.minutes(2)))
    func enospcPausesTheJobUntilSpaceIsFreedThenCompletes() async throws {
        let setup = try EngineFailureTests.setUp("lc-enospc-wait")
        defer { setup.scratch.remove() }
        let engine = Engine(store: setup.store, hypervisor: QMPHypervisor(connector: TestConnector()))
        let policy = try Self.policy(ioErrorWait: 300, onFailure: .stop)
        let (planId, run) = try await EngineFailureTests.startAndWriteDuringCopy(setup, engine: engine, policy: policy)

        let paused = try await Self.waitForEvent(setup.store, planId: planId, containing: "paused by an I/O error (io-status nospace)")
        #expect(paused.diskId != nil)
        let jobs = try await setup.vm.testMonitor().queryBlockJobs()
        #expect(jobs.first?.paused == true)
        #expect(jobs.first?.ioStatus == "nospace")
        #expect(try setup.store.disks(ofPlan: planId).first?.state == .streaming, "the disk waits, streaming")

        // The operator frees space; livecopy's next block-job-resume (every 10 s) finishes the copy.
        try setup.filesystem.resize("128m")
        let plan = try await run.value
        await engine.shutdown()
        #expect(plan.state == .completed, "\(plan.error ?? "")")
        let transitions = try setup.store.events(ofPlan: planId).filter { $0.kind == .transition && $0.diskId != nil }
            .map { "\($0.from ?? "")→\($0.to ?? "")" }
        #expect(transitions == ["pending→snapshotting", "snapshotting→streaming", "streaming→retiring", "retiring→completed"])
        try await EngineFailureTests.expectFinishedCopy(setup.vm, destination: setup.destination)
    }

    @Test(.timeLimit(.minutes(2)))
    func enospcOutlastingTheWaitStopsOnTheOverlayAndResumesLater() async throws {
        let setup = try EngineFailureTests.setUp("lc-enospc-stop")
        defer { setup.scratch.remove() }
        let engine = Engine(store: setup.store, hypervisor: QMPHypervisor(connector: TestConnector()))
        let policy = try Self.policy(ioErrorWait: 2, onFailure: .stop)
        let (planId, run) = try await EngineFailureTests.startAndWriteDuringCopy(setup, engine: engine, policy: policy)
        let stopped = try await run.value

        #expect(stopped.state == .failed)
        let failed = try #require(try setup.store.disks(ofPlan: planId).first)
        #expect(failed.state == .failed)
        #expect(failed.error?.contains("stayed paused by an I/O error (nospace)") == true, "\(failed.error ?? "")")
        #expect(failed.bootImage == setup.destination)
        let details = try setup.store.events(ofPlan: planId).map(\.detail)
        #expect(details.contains { $0.contains("paused by an I/O error (io-status nospace)") })
        let active = try await EngineFailureTests.activeImage(setup.vm)
        #expect(active.file == setup.destination, "the VM stays on its destination overlay")
        #expect(active.backing == setup.source)
        #expect(try await setup.vm.testMonitor().queryJobs().isEmpty, "the cancelled job was dismissed")

        try setup.filesystem.resize("128m")
        let resumed = try await engine.run(planId: planId)
        await engine.shutdown()
        #expect(resumed.state == .completed, "\(resumed.error ?? "")")
        try await EngineFailureTests.expectFinishedCopy(setup.vm, destination: setup.destination)
    }
}
