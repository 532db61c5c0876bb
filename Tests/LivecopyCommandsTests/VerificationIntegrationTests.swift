import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Verified retirement end to end against real QEMU (docs/retirement.md): the switch's
/// transaction carries the dirty bitmap (the QMP traffic, recorded by a proxy), a copy with
/// guest writes before, during and after passes `verify: full` and `sample`, a mirror gets
/// its bitmap at READY, a corrupted source cluster stops the disk with both images
/// untouched, and a bitmap lost with QEMU falls back to `on_unverifiable`.
@Suite(.serialized, .requires(.qemu))
struct VerificationIntegrationTests {
    typealias Rig = RecoveryIntegrationTests.Rig

    /// Every command livecopy sent through the proxy, in order, with its arguments.
    final class Traffic: @unchecked Sendable {
        private let lock = NSLock()
        private var commands: [(name: String, arguments: [String: Any])] = []
        func record(_ name: String, _ arguments: [String: Any]) { lock.lock(); commands.append((name, arguments)); lock.unlock() }
        var all: [(name: String, arguments: [String: Any])] { lock.lock(); defer { lock.unlock() }; return commands }
        func index(of name: String) -> Int? { all.firstIndex { $0.name == name } }
    }

    /// Puts a recording proxy between livecopy and the VM: the plan names the proxy's socket.
    static func recordTraffic(_ rig: Rig) throws -> (QMPProxy, Traffic) {
        let traffic = Traffic()
        let proxy = try QMPProxy(socketPath: rig.scratch.appending("proxy.qmp"), upstream: rig.vm.livecopySocket) { name, arguments in
            traffic.record(name, arguments)
            return nil
        }
        let plan = try String(contentsOfFile: rig.planPath, encoding: .utf8)
            .replacingOccurrences(of: rig.vm.livecopySocket, with: proxy.socketPath)
        try plan.write(toFile: rig.planPath, atomically: true, encoding: .utf8)
        return (proxy, traffic)
    }

    static func events(_ rig: Rig) throws -> [EventRecord] {
        try rig.store().events(ofPlan: try rig.planId())
    }

    // MARK: - The transaction, and a copy with guest writes that passes

    @Test(.timeLimit(.minutes(3)), arguments: ["full", "sample"])
    func theSwitchCarriesTheBitmapAndACopyWithGuestWritesPasses(verify: String) async throws {
        let rig = try Rig("lc-verify-\(verify)", dataMiB: 16,
                          policy: "verify: \(verify)\nspeed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        let (proxy, traffic) = try Self.recordTraffic(rig)
        defer { proxy.stop() }
        try await rig.write(slot: 0)  // before the copy: into the source
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        defer { RecoveryIntegrationTests.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        try await rig.write(slot: 1)  // during the copy: into the destination, recorded by the bitmap
        let result = try await submit.wait(timeout: 120)
        #expect(result.status == 0, "submit: \(result.stderr)")
        try await rig.write(slot: 2)  // after

        // The transaction: the snapshot, and the bitmap on the overlay's node, together.
        let transaction = try #require(traffic.all.first { $0.name == "transaction" }, "a transaction was sent")
        let actions = (transaction.arguments["actions"] as? [[String: Any]]) ?? []
        #expect(actions.map { $0["type"] as? String } == ["blockdev-snapshot-sync", "block-dirty-bitmap-add"], "\(actions)")
        let snapshot = actions.first?["data"] as? [String: Any]
        let bitmap = actions.last?["data"] as? [String: Any]
        let disk = try #require(try rig.store().disks(ofPlan: try rig.planId()).first)
        #expect(bitmap?["node"] as? String == snapshot?["snapshot-node-name"] as? String, "the bitmap is on the overlay: \(actions)")
        #expect(bitmap?["name"] as? String == disk.dirtyBitmapName)
        // The export was read-only, with the frozen copy, and ended before the rename.
        let export = try #require(traffic.all.first { $0.name == "block-export-add" })
        #expect(export.arguments["writable"] as? Bool == false)
        #expect((export.arguments["bitmaps"] as? [String]) == [disk.dirtyBitmapName + "-frozen"])
        #expect(traffic.index(of: "nbd-server-stop") != nil, "livecopy's NBD server is stopped")

        let events = try Self.events(rig)
        let intent = try #require(events.first { $0.kind == .intent && $0.detail.hasPrefix("verify:") }, "the comparison is announced")
        let outcome = try #require(events.first { $0.kind == .outcome && $0.detail.hasPrefix("verify:") }, "and its result recorded")
        #expect(outcome.detail.contains("identical"), "\(outcome.detail)")
        // Slot 1 was written by the guest during the copy: one cluster over the source's data
        // (skipped), one where the source has nothing (not compared at all).
        #expect(outcome.detail.contains(" 1 written by the guest skipped"), "\(outcome.detail)")
        if verify == "sample" {
            #expect(intent.detail.contains("seed "), "the sample's seed is recorded: \(intent.detail)")
        } else {
            // The source holds 16 MiB plus slot 0's 64 KiB at 40M: 257 clusters, one skipped,
            // every other one compared.
            #expect(outcome.detail.contains("256 of 256 clusters"), "\(outcome.detail)")
        }
        let rename = try #require(events.firstIndex { $0.kind == .intent && $0.detail.hasPrefix("rename:") })
        let verified = try #require(events.firstIndex { $0.kind == .outcome && $0.detail.hasPrefix("verify:") })
        #expect(verified < rename, "the data is compared before the source is renamed")
        let inserted = try await rig.vm.testMonitor().queryBlock().first { $0.device == "drive0" }?.inserted
        #expect((inserted?.dirtyBitmaps ?? []).isEmpty, "the bitmap is removed once the disk completed")
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything(verify)
        #expect(FileManager.default.fileExists(atPath: rig.source + ".retired"))
    }

    @Test(.timeLimit(.minutes(3)))
    func aMirrorGetsItsBitmapAtReadyAndPasses() async throws {
        let rig = try Rig("lc-verify-mirror", dataMiB: 16, policy: MirrorIntegrationTests.policy("verify: full\nspeed: 4M\n"))
        defer { rig.scratch.remove() }
        let (proxy, traffic) = try Self.recordTraffic(rig)
        defer { proxy.stop() }
        try await rig.write(slot: 0)
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        defer { RecoveryIntegrationTests.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        try await rig.write(slot: 1)  // into the source, mirrored
        let result = try await submit.wait(timeout: 120)
        #expect(result.status == 0, "submit: \(result.stderr)")

        let mirror = try #require(traffic.index(of: "blockdev-mirror"))
        let bitmap = try #require(traffic.index(of: "block-dirty-bitmap-add"), "a bitmap is added")
        let complete = try #require(traffic.index(of: "block-job-complete"))
        #expect(mirror < bitmap && bitmap < complete, "added at READY, before the pivot")
        let outcome = try #require(try Self.events(rig).first { $0.kind == .outcome && $0.detail.hasPrefix("verify:") })
        #expect(outcome.detail.contains("identical") && outcome.detail.contains("0 written by the guest skipped"),
                "the copy's own writes are not counted as the guest's: \(outcome.detail)")
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("mirror")
    }

    // MARK: - A corrupted source is caught, and nothing is touched

    @Test(.timeLimit(.minutes(3)), arguments: ["full", "sample"])
    func aChangedSourceClusterStopsTheDiskWithBothImagesUntouched(verify: String) async throws {
        let rig = try Rig("lc-verify-bad-\(verify)", dataMiB: 16,
                          policy: "verify: \(verify)\nretire_source: delete\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": "transition:retiring"])
        #expect(submit.status == RecoveryIntegrationTests.crashStatus, "submit: \(submit.stderr)")
        try await rig.write(slot: 1)  // into the destination, after the copy

        // One byte of the source changes, outside the guest's writes. QEMU no longer holds
        // the source, so qemu-io may write it. For `sample` it is the first cluster of the
        // source's only extent, which a sample always compares.
        let offset = verify == "full" ? 2 * 1048576 + 4097 : 7
        let changed = try QEMUTools.run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x99 \(offset) 1", rig.source])
        #expect(changed.status == 0, "\(changed.stderr)")
        let sourceBefore = try Data(contentsOf: URL(fileURLWithPath: rig.source))

        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status != 0, "recover reports the disk that needs attention")
        let disk = try #require(try rig.store().disks(ofPlan: try rig.planId()).first)
        #expect(disk.state == .needsAttention, "\(disk.state)")
        #expect(disk.error?.contains("differs from the source") == true && disk.error?.contains("offset \(offset)") == true,
                "the first differing offset is in the error: \(disk.error ?? "")")
        let outcome = try #require(try Self.events(rig).last { $0.kind == .outcome && $0.detail.hasPrefix("verify:") })
        #expect(outcome.detail.contains("different") && outcome.detail.contains("offset \(offset)"), "\(outcome.detail)")

        // Untouched: the source byte for byte, still where it was; the VM on its destination.
        #expect(try Data(contentsOf: URL(fileURLWithPath: rig.source)) == sourceBefore, "the source is untouched")
        let active = try await rig.activeImage()
        #expect(active.file == rig.destination && active.backing == nil)
        // A second recover finds the same and still touches nothing.
        let again = try await rig.livecopy.run(["recover"])
        #expect(again.status != 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: rig.source)) == sourceBefore)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("mismatch")
    }

    // MARK: - A bitmap lost with QEMU

    @Test(.timeLimit(.minutes(3)), arguments: [OnUnverifiable.keepSource, .needsAttention, .retire])
    func aBitmapLostWithQEMUFallsBackToThePolicy(choice: OnUnverifiable) async throws {
        let rig = try Rig("lc-verify-lost", dataMiB: 8,
                          policy: "verify: full\non_unverifiable: \(choice.rawValue)\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": "transition:retiring"])
        #expect(submit.status == RecoveryIntegrationTests.crashStatus, "submit: \(submit.stderr)")
        // A host reboot: QEMU dies with its bitmap; the VM comes back on its destination.
        rig.vm.kill()
        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.destination, format: "qcow2")])
        try await rig.write(slot: 1)

        let recover = try await rig.livecopy.run(["recover"])
        let disk = try #require(try rig.store().disks(ofPlan: try rig.planId()).first)
        let details = try Self.events(rig).map(\.detail)
        #expect(details.contains { $0.contains("cannot verify") && $0.contains("QEMU was restarted since the switch") }, "\(details)")
        switch choice {
        case .keepSource:
            #expect(recover.status == 0, "\(recover.stderr)")
            #expect(disk.state == .completed)
            #expect(FileManager.default.fileExists(atPath: rig.source) && !FileManager.default.fileExists(atPath: rig.source + ".retired"),
                    "the source is kept where it was")
        case .needsAttention:
            #expect(recover.status != 0)
            #expect(disk.state == .needsAttention && FileManager.default.fileExists(atPath: rig.source))
        case .retire:
            #expect(recover.status == 0, "\(recover.stderr)")
            #expect(disk.state == .completed && FileManager.default.fileExists(atPath: rig.source + ".retired"))
        }
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything(choice.rawValue)
    }
}
