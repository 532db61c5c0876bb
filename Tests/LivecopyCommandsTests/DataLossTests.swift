import Foundation
import LivecopyModel
import LivecopyStore
import QMP
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The paths that could lose a guest's data, each against real QEMU: a destructive step
/// resumed after the world changed, a finalize without a confirmed flush, a rename over
/// an existing file, and a rename recorded that never happened.
@Suite(.serialized, .requires(.qemu))
struct DataLossTests {
    typealias Rig = RecoveryIntegrationTests.Rig
    static let crashStatus = RecoveryIntegrationTests.crashStatus

    /// Runs `submit` until it dies at `point` (the stream finished, the destination stands
    /// alone), with a write before the copy and one into the destination after the crash.
    static func copyDyingAt(_ point: String, _ rig: Rig) async throws -> Int64 {
        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": point])
        #expect(submit.status == crashStatus, "[\(point)] submit: \(submit.status)\n\(submit.stderr)")
        try await rig.write(slot: 1)
        return try rig.planId()
    }

    /// Whatever the step to come (`rename` or `delete`), and wherever the crash left it:
    /// livecopy dies, the host "reboots", the VM's manager (told nothing) starts the VM on
    /// the source and the guest writes to it. `recover` must touch neither image.
    @Test(.timeLimit(.minutes(4)), arguments: [
        ("rename", "transition:retiring"), ("rename", "intent:rename"),
        ("delete", "transition:retiring"), ("delete", "intent:delete-source"),
    ])
    func aResumedRetirementNeverTouchesASourceTheVMRunsOn(retire: String, point: String) async throws {
        let rig = try Rig("lc-retire-src", dataMiB: 8, policy: "retire_source: \(retire)\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        let planId = try await Self.copyDyingAt(point, rig)
        rig.vm.kill()

        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.source, format: "qcow2")])
        try await rig.vm.guestWrite(drive: "drive0", pattern: 0x5a, offset: "2M", length: "64k")

        let recover = try await rig.livecopy.run(["recover"])
        let output = recover.stdout + recover.stderr
        #expect(recover.status != 0, "[\(retire) \(point)] recover must refuse:\n\(output)")
        let disk = try #require(try rig.store().disks(ofPlan: planId).first)
        #expect(disk.state == .needsAttention, "[\(retire) \(point)] disk is \(disk.state.rawValue): \(disk.error ?? "")")
        let message = disk.error ?? ""
        #expect(message.contains(rig.source) && message.contains(rig.destination), "the message names both images: \(message)")
        #expect(FileManager.default.fileExists(atPath: rig.source), "[\(retire) \(point)] the source is still there")
        #expect(!FileManager.default.fileExists(atPath: rig.source + ".retired"), "[\(retire) \(point)] nothing was renamed")
        let active = try await rig.activeImage()
        #expect(active.file == rig.source, "the VM still runs on the source")
        await rig.vm.stop()
        let afterRestart = try RecoveryIntegrationTests.verify(rig.source, [(0x5a, "2M", "64k")])
        #expect(afterRestart.ok, "[\(retire) \(point)] the guest's write into the source survives:\n\(afterRestart.output)")
        try rig.expectDestinationHoldsEverything("\(retire) \(point)")
    }

    /// Another process holds the source open when a resumed retirement comes: nothing is
    /// deleted; once it lets go, `recover` finishes.
    @Test(.timeLimit(.minutes(2)))
    func aSourceHeldOpenByAnotherProcessIsNotDeleted() async throws {
        let rig = try Rig("lc-retire-held", dataMiB: 8, policy: "retire_source: delete\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        let planId = try await Self.copyDyingAt("transition:retiring", rig)

        let holder = try FileHandle(forReadingFrom: URL(fileURLWithPath: rig.source))
        let refused = try await rig.livecopy.run(["recover"])
        #expect(refused.status != 0, "recover must refuse while the source is open:\n\(refused.stderr)")
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .needsAttention)
        #expect(FileManager.default.fileExists(atPath: rig.source), "the source held open is not deleted")
        try holder.close()

        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "recover once nothing holds the source: \(recover.stderr)")
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed)
        #expect(!FileManager.default.fileExists(atPath: rig.source), "the source is deleted now")
        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("held source")
    }

    /// `retire_source: rename` never replaces a `<source>.retired` that appeared meanwhile.
    @Test(.timeLimit(.minutes(2)))
    func renameNeverOverwritesAnExistingRetiredFile() async throws {
        let rig = try Rig("lc-retired-exists", dataMiB: 8, policy: "retire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        let planId = try await Self.copyDyingAt("transition:retiring", rig)
        let retired = rig.source + ".retired"
        try "precious".write(toFile: retired, atomically: false, encoding: .utf8)

        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status != 0, "recover must refuse:\n\(recover.stderr)")
        let disk = try #require(try rig.store().disks(ofPlan: planId).first)
        #expect(disk.state == .needsAttention, "disk is \(disk.state.rawValue)")
        #expect((disk.error ?? "").contains(retired), "the message names \(retired): \(disk.error ?? "")")
        #expect(try String(contentsOfFile: retired, encoding: .utf8) == "precious", "the existing file is untouched")
        #expect(FileManager.default.fileExists(atPath: rig.source), "the source is still there")

        // The operator moves the file away; recover retires the source.
        try FileManager.default.removeItem(atPath: retired)
        let resolved = try await rig.livecopy.run(["recover"])
        #expect(resolved.status == 0, "recover: \(resolved.stderr)")
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed)
        #expect(FileManager.default.fileExists(atPath: retired) && !FileManager.default.fileExists(atPath: rig.source))
        await rig.vm.stop()
    }

    /// A source that vanished before livecopy retired it is not recorded as renamed or
    /// deleted by livecopy: the timeline says what really happened.
    @Test(.timeLimit(.minutes(2)), arguments: ["rename", "delete"])
    func aSourceGoneBeforeRetirementIsNotRecordedAsRetiredByLivecopy(retire: String) async throws {
        let rig = try Rig("lc-src-gone", dataMiB: 8, policy: "retire_source: \(retire)\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        let planId = try await Self.copyDyingAt("transition:retiring", rig)
        try FileManager.default.removeItem(atPath: rig.source)

        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "[\(retire)] the copy itself is whole: \(recover.stderr)")
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed)
        let details = try rig.store().events(ofPlan: planId).map(\.detail)
        #expect(!details.contains { $0.contains("source renamed") || $0.contains("source deleted") || $0.contains("retired to")
            || $0.contains("\(rig.source) deleted") },
                "[\(retire)] no event claims livecopy retired the source:\n\(details.joined(separator: "\n"))")
        #expect(details.contains { $0.contains("was gone before livecopy retired it") }, "[\(retire)] the timeline says so")
        #expect(recover.stderr.contains("was gone before livecopy retired it"), "[\(retire)] and the operator is told:\n\(recover.stderr)")
        #expect(!FileManager.default.fileExists(atPath: rig.source + ".retired"))
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("source gone, \(retire)")
    }

    /// A rollback resumed at its last step does not delete a destination that another
    /// process holds open.
    @Test(.timeLimit(.minutes(2)))
    func aResumedRollbackDoesNotDeleteADestinationHeldOpen() async throws {
        let rig = try Rig("lc-rb-held", dataMiB: 16, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        let planId = try await rig.submitDyingMidStream("held destination")
        let cancel = try await rig.livecopy.run(["cancel", String(planId)], environment: ["LIVECOPY_CRASH_AT": "intent:delete-destination"])
        #expect(cancel.status == Self.crashStatus, "cancel should stop before deleting: \(cancel.stderr)")

        let holder = try FileHandle(forReadingFrom: URL(fileURLWithPath: rig.destination))
        let refused = try await rig.livecopy.run(["recover"])
        #expect(refused.status != 0, "recover must refuse while the destination is open:\n\(refused.stderr)")
        #expect(FileManager.default.fileExists(atPath: rig.destination), "the destination held open is not deleted")
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .needsAttention)
        try holder.close()

        try await RecoveryIntegrationTests.expectRecoverFinishesTheRollback(rig, planId: planId, point: "held destination")
    }

    /// The flush before `job-finalize` fails (a blkdebug rule the test puts under the
    /// destination's file mid-stream fails the next flush, once): livecopy must not
    /// finalize. The job stays pending, the destination keeps its backing file, the disk
    /// fails with a message; `recover` flushes again and, confirmed this time, finishes.
    @Test(.timeLimit(.minutes(3)))
    func aFlushThatFailsBeforeFinalizingLeavesTheJobPendingAndRecoverRetries() async throws {
        let (rig, planId, removeTheFlushFault) = try await Self.planFailedByItsFlush("lc-flush-fail")
        defer { rig.scratch.remove() }
        let disk = try #require(try rig.store().disks(ofPlan: planId).first)
        #expect((disk.error ?? "").contains("flush") && (disk.error ?? "").contains("Input/output error"),
                "the disk says the flush failed: \(disk.error ?? "")")
        #expect(try await rig.streamJob()?.status == "pending", "the stream job waits in pending, not finalized")
        let info = try QEMUImage.info(rig.destination)
        #expect(info.backingFilename == rig.source, "the destination keeps its backing file: \(info.backingFilename ?? "none")")
        #expect(FileManager.default.fileExists(atPath: rig.source), "the source is untouched")

        // The fault goes away (the rule fired once); the test's filter node leaves the graph.
        try await removeTheFlushFault()
        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "recover flushes again and finishes: \(recover.stderr)")
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed)
        let details = try rig.store().events(ofPlan: planId).map(\.detail)
        #expect(details.contains { $0.contains("confirmed by QEMU") }, "the finalize followed a confirmed flush")
        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("flush failed once")
    }

    /// A plan left `failed` by a flush that failed is cancelled: the disk rolls back from
    /// `failed` (the pending job cancelled, the destination committed into the source), and
    /// every write is in the source.
    @Test(.timeLimit(.minutes(3)))
    func aDiskFailedByItsFlushRollsBackOnCancel() async throws {
        let (rig, planId, removeTheFlushFault) = try await Self.planFailedByItsFlush("lc-flush-cancel")
        defer { rig.scratch.remove() }
        try await removeTheFlushFault()
        try await rig.write(slot: 2)  // into the destination, before the rollback
        let cancel = try await rig.livecopy.run(["cancel", String(planId)])
        #expect(cancel.status == 0, "cancel: \(cancel.stderr)")
        let events = try rig.store().events(ofPlan: planId).filter { $0.kind == .transition && $0.diskId != nil }
        #expect(events.contains { $0.from == "failed" && $0.to == "rolling_back" }, "the disk rolls back from failed")
        try await RecoveryIntegrationTests.expectRecoverFinishesTheRollback(rig, planId: planId, point: "cancel after a failed flush")
    }

    /// A plan left `failed` by a flush that failed; then the VM is restarted on a third
    /// image (neither source nor destination): `recover` touches nothing and the disk
    /// needs attention.
    @Test(.timeLimit(.minutes(3)))
    func aFailedDiskWhoseVMRunsOnAThirdImageNeedsAttention() async throws {
        let (rig, planId, _) = try await Self.planFailedByItsFlush("lc-flush-third")
        defer { rig.scratch.remove() }
        rig.vm.kill()
        let third = rig.scratch.appending("third.qcow2")
        try QEMUImage.create(third, size: "64M")
        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: third, format: "qcow2")])
        let destinationBefore = try Data(contentsOf: URL(fileURLWithPath: rig.destination))

        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status != 0, "recover must refuse: \(recover.stderr)")
        let disk = try #require(try rig.store().disks(ofPlan: planId).first)
        #expect(disk.state == .needsAttention, "disk is \(disk.state.rawValue)")
        #expect((disk.error ?? "").contains(third), "the message names the image the VM runs on: \(disk.error ?? "")")
        let events = try rig.store().events(ofPlan: planId).filter { $0.kind == .transition && $0.diskId != nil }
        #expect(events.contains { $0.from == "failed" && $0.to == "needs_attention" })
        #expect(FileManager.default.fileExists(atPath: rig.source), "the source is untouched")
        #expect(try Data(contentsOf: URL(fileURLWithPath: rig.destination)) == destinationBefore, "the destination is untouched")
        await rig.vm.stop()
    }

    /// Runs `submit` until the flush before finalizing fails (see the test above); the
    /// plan ends `failed` with the job pending. Returns what takes the fault out again.
    static func planFailedByItsFlush(_ prefix: String) async throws -> (Rig, Int64, () async throws -> Void) {
        let rig = try Rig(prefix, dataMiB: 24, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        try await rig.write(slot: 0)
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        defer { RecoveryIntegrationTests.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        let removeTheFlushFault = try await failNextFlushOfTheDestination(rig)
        let result = try await submit.wait(timeout: 120)
        #expect(result.status == 1, "submit ends the plan failed: \(result.status)\n\(result.stderr)")
        let planId = try rig.planId()
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .failed)
        #expect(try await rig.streamJob()?.status == "pending")
        return (rig, planId, removeTheFlushFault)
    }

    /// Puts a blkdebug node that fails the next flush (once) between the destination's
    /// qcow2 node and its file, through the test monitor (`blockdev-add`, `blockdev-reopen`).
    /// Returns what takes it out again.
    static func failNextFlushOfTheDestination(_ rig: Rig) async throws -> () async throws -> Void {
        let monitor = try await rig.vm.testMonitor()
        let blocks = try await monitor.execute("query-block")
        let top = try #require(blocks.arrayValue?.first { $0["device"]?.stringValue == "drive0" }?["inserted"]?["node-name"]?.stringValue)
        let graph = try await monitor.execute("x-debug-query-block-graph")
        var names: [Int64: String] = [:]
        for node in graph["nodes"]?.arrayValue ?? [] {
            if let id = node["id"]?.int64Value, let name = node["name"]?.stringValue { names[id] = name }
        }
        func child(_ role: String) -> String? {
            (graph["edges"]?.arrayValue ?? []).first {
                $0["name"]?.stringValue == role && $0["parent"]?.int64Value.flatMap { names[$0] } == top
            }?["child"]?.int64Value.flatMap { names[$0] }
        }
        let file = try #require(child("file"))
        let backing = try #require(child("backing"))
        try await monitor.execute("blockdev-add", [
            "driver": "blkdebug", "node-name": "lc-test-flushfail", "image": .string(file),
            "inject-error": [["event": "none", "iotype": "flush", "errno": 5, "once": true]],
        ])
        try await monitor.execute("blockdev-reopen", [
            "options": [["driver": "qcow2", "node-name": .string(top), "file": "lc-test-flushfail", "backing": .string(backing)]],
        ])
        return {
            try await monitor.execute("blockdev-reopen", [
                "options": [["driver": "qcow2", "node-name": .string(top), "file": .string(file), "backing": .string(backing)]],
            ])
            try await monitor.execute("blockdev-del", ["node-name": "lc-test-flushfail"])
        }
    }
}

