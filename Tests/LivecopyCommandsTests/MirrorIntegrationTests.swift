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

/// The mirror strategy end to end against real QEMU (docs/mirror.md): qcow2, raw file and
/// block device destinations with guest writes before, during and after the copy; every
/// crash point, with a guest that keeps writing; QEMU dying at every crash point (a host
/// reboot) with the VM restarted on the image livecopy names; rollback before and after
/// the pivot. Each test checks the data offline at the end.
@Suite(.serialized, .requires(.qemu))
struct MirrorIntegrationTests {
    typealias Rig = RecoveryIntegrationTests.Rig

    /// A mirror policy retiring by rename, with `extra` keys (which may name another
    /// `retire_source`).
    static func policy(_ extra: String = "") -> String {
        "strategy: mirror\nprogress_interval: 200ms\n" + (extra.contains("retire_source:") ? "" : "retire_source: rename\n") + extra
    }

    // MARK: - 1. Each kind of destination

    @Test(.timeLimit(.minutes(3)), arguments: [("qcow2", "background"), ("raw", "write-blocking")])
    func copiesIntoAFileWithWritesBeforeDuringAndAfter(format: String, mode: String) async throws {
        let rig = try Rig("lc-mirror-\(format)", dataMiB: 16, policy: Self.policy("speed: 4M\ncopy_mode: \(mode)\n"),
                          format: format == "qcow2" ? nil : format)
        defer { rig.scratch.remove() }
        try await copyWithWritesBeforeDuringAndAfter(rig, "\(format), \(mode)")
        let info = try QEMUImage.info(rig.destination, format: format)
        #expect(info.format == format && info.virtualSize == 64 << 20, "\(info)")
    }

    /// A loop device stands for an LVM volume: larger than the disk (the guest still sees
    /// the disk's size) and full of old bytes, which must read as zeros wherever the
    /// source has nothing.
    @Test(.timeLimit(.minutes(3)), .requires(.loopDevice))
    func copiesIntoABlockDeviceThatReadsAsZerosWhereTheSourceHasNothing() async throws {
        let holder = try TemporaryDirectory(prefix: "lc-mirror-loop")
        defer { holder.remove() }
        let loop = try LoopDevice(backingFile: holder.appending("volume.img"), sizeMiB: 80, fill: 0xEE)
        defer { loop.detach() }
        let rig = try Rig("lc-mirror-block", dataMiB: 16, policy: Self.policy("speed: 4M\n"), destination: loop.path)
        defer { rig.scratch.remove() }
        try await copyWithWritesBeforeDuringAndAfter(rig, "block device")
        let zeros = try RecoveryIntegrationTests.verify(loop.path, [(0, "16M", "24M"), (0, "42M", "22M")], format: "raw")
        #expect(zeros.ok, "the device reads as zeros where the source was never written:\n\(zeros.output)")
        let untouched = try RecoveryIntegrationTests.verify(loop.path, [(0xEE, "64M", "16M")], format: "raw")
        #expect(untouched.ok, "nothing was written past the disk's size:\n\(untouched.output)")
        #expect(isBlockDevice(loop.path), "the device is never removed")
    }

    func copyWithWritesBeforeDuringAndAfter(_ rig: Rig, _ context: String) async throws {
        try await rig.write(slot: 0)  // before the copy
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        defer { RecoveryIntegrationTests.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        let during = try await rig.activeImage()
        #expect(during.file == rig.source, "[\(context)] the VM stays on its source while the mirror runs")
        try await rig.write(slot: 1)  // during the copy: into the source, mirrored
        let result = try await submit.wait(timeout: 120)
        #expect(result.status == 0, "[\(context)] submit: \(result.stderr)")
        try await rig.write(slot: 2)  // after the pivot: into the destination
        let active = try await rig.activeImage()
        #expect(active.file == rig.destination && active.backing == nil, "[\(context)] VM on \(active.file ?? "nil")")
        #expect(try await rig.streamJob() == nil, "[\(context)] the mirror job is dismissed")
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything(context)
        try rig.expectUnbrokenTimeline(context)
        #expect(FileManager.default.fileExists(atPath: rig.source + ".retired"), "[\(context)] the source is retired")
        let planId = try rig.planId()
        let details = try rig.store().events(ofPlan: planId).map(\.detail)
        #expect(details.contains { $0.hasPrefix("pivot: flush") }, "[\(context)] the pivot intent is recorded")
        #expect(details.contains { $0.contains("guest I/O held for") && $0.contains("since block-job-complete") }, "[\(context)] the pivot window is measured")
        let disk = try rig.store().disks(ofPlan: planId).first
        #expect(disk?.strategy == .mirror && disk?.pivoted == true && disk?.state == .completed, "[\(context)]")
    }

    // MARK: - 2. Every crash point, with a guest that keeps writing

    @Test(.timeLimit(.minutes(8)), arguments: [Policy.RetireSource.rename, .delete])
    func recoverCompletesAfterACrashAtEveryMirrorCrashPointWhileTheGuestWrites(retire: Policy.RetireSource) async throws {
        for point in CrashPoint.mirrorForwardNames(retiring: retire) {
            let rig = try Rig("lc-mirror-crash", dataMiB: 8, policy: Self.policy("retire_source: \(retire.rawValue)\n"))
            defer { rig.scratch.remove() }
            try await rig.write(slot: 0)
            let writer = GuestWriter(vm: rig.vm)
            let writing = Task { try await writer.run() }

            let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": point])
            #expect(submit.status == RecoveryIntegrationTests.crashStatus, "[\(point)] submit: \(submit.status)\n\(submit.stderr)")
            guard submit.status == RecoveryIntegrationTests.crashStatus else {
                writing.cancel()
                await rig.vm.stop()
                continue
            }
            // After the crash, before recover. Inside the pivot's window the guest's I/O is
            // held until recover finalizes the job: a blocking write would hang QEMU.
            if point == "sent:pivot-complete" {
                try await rig.writeWithoutWaiting(slot: 1)
            } else {
                try await rig.write(slot: 1)
            }
            let recover = try await rig.livecopy.run(["recover"])
            #expect(recover.status == 0, "[\(point)] recover: \(recover.status)\n\(recover.stderr)")
            writing.cancel()
            _ = await writing.result
            try await rig.vm.guestFlushAll(drive: "drive0")

            let planId = try rig.planId()
            #expect(try rig.store().plan(id: planId)?.state == .completed, "[\(point)]\n\(recover.stderr)")
            try await rig.write(slot: 2)
            let active = try await rig.activeImage()
            #expect(active.file == rig.destination, "[\(point)] VM on \(active.file ?? "nil")")
            await rig.vm.stop()
            try rig.expectDestinationHoldsEverything(point)
            let written = await writer.written
            #expect(written.count > 0, "[\(point)] the guest wrote while livecopy ran")
            let result = try RecoveryIntegrationTests.verify(rig.destination, written, format: rig.destinationFormat)
            #expect(result.ok, "[\(point)] the destination lacks writes made while livecopy ran:\n\(result.output)")
            try rig.expectUnbrokenTimeline(point)
            #expect(!FileManager.default.fileExists(atPath: rig.source), "[\(point)] the source is retired")
            #expect(FileManager.default.fileExists(atPath: rig.source + ".retired") == (retire == .rename), "[\(point)]")
        }
    }

    // MARK: - 3. A host reboot at every crash point

    /// livecopy crashes at a crash point, the guest writes (flushed), then QEMU dies too.
    /// Before the pivot the source is the truth, after it the destination; with a pivot
    /// under way the images decide, and when they differ livecopy names no image: the
    /// operator starts the VM on the one that holds the newest writes (known here: the
    /// destination once `job-finalize` was sent).
    @Test(.timeLimit(.minutes(6)), arguments: [Policy.RetireSource.rename, .delete])
    func afterAHostRebootAtEveryCrashPointTheVMBootsFromTheRightImage(retire: Policy.RetireSource) async throws {
        let points = CrashPoint.mirrorForwardNames(retiring: retire)
        for point in points {
            // write-blocking: a write made at READY reaches both images before it completes.
            let rig = try Rig("lc-mirror-reboot", dataMiB: 8,
                              policy: Self.policy("copy_mode: write-blocking\nretire_source: \(retire.rawValue)\n"), format: "raw")
            defer { rig.scratch.remove() }
            try await rig.write(slot: 0)
            let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": point])
            #expect(submit.status == RecoveryIntegrationTests.crashStatus, "[\(point)] submit: \(submit.stderr)")
            // Inside the pivot's window the guest's writes wait (and die with QEMU): none.
            if point != "sent:pivot-complete" { try await rig.write(slot: 1) }
            rig.vm.kill()
            let planId = try rig.planId()

            let down = try await rig.livecopy.run(["recover"])
            let plan = try rig.store().plan(id: planId)
            let status = try await rig.livecopy.run(["status", String(planId), "--json"])
            let recorded = (try? JSONDecoder().decode(PlanDocument.self, from: Data(status.stdout.utf8)))?.disks.first?.bootImage
            let pivotSent = ["sent:pivot"].contains(point)
            let truth = pivotSent || points.drop(while: { $0 != "outcome:pivot" }).contains(point)
                ? rig.destination : rig.source
            if plan?.state == .completed {
                #expect(recorded == rig.destination, "[\(point)] completed, yet status says \(recorded ?? "unknown")")
            } else if pivotSent {
                // Finalized, then QEMU died after a write into the destination: the images
                // differ and the record cannot say whether the pivot happened.
                #expect(recorded == nil, "[\(point)] livecopy must not guess; it named \(recorded ?? "")")
                #expect(down.stderr.contains(rig.source) && down.stderr.contains(rig.destination),
                        "[\(point)] both images are named:\n\(down.stderr)")
            } else {
                #expect(recorded == truth, "[\(point)] status names \(recorded ?? "no image"), the VM's writes are in \(truth)\n\(down.stderr)")
            }
            let boot = recorded ?? truth
            let format = boot == rig.destination ? "raw" : "qcow2"
            rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: boot, format: format)])
            let recover = try await rig.livecopy.run(["recover"])
            #expect(recover.status == 0, "[\(point)] recover after restarting on \(boot): \(recover.stderr)")
            #expect(try rig.store().plan(id: planId)?.state == .completed, "[\(point)]")
            try await rig.write(slot: 2)
            await rig.vm.stop()
            try rig.expectDestinationHoldsEverything("\(point), booted from \(boot)")
        }
    }

    // MARK: - 4. Rollback

    @Test(.timeLimit(.minutes(2)))
    func cancelBeforeThePivotLeavesTheVMOnItsSourceAndRemovesTheDestination() async throws {
        let rig = try Rig("lc-mirror-cancel", dataMiB: 16, policy: Self.policy("speed: 2M\n"))
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        defer { RecoveryIntegrationTests.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        try await rig.write(slot: 1)
        let planId = try rig.planId()
        let cancel = try await rig.livecopy.run(["cancel", String(planId)])
        #expect(cancel.status == 0, "cancel: \(cancel.stderr)")
        _ = try await submit.wait(timeout: 60)
        #expect(try rig.store().plan(id: planId)?.state == .rolledBack)
        let active = try await rig.activeImage()
        #expect(active.file == rig.source, "the VM never left its source")
        #expect(!FileManager.default.fileExists(atPath: rig.destination), "the partial copy is deleted")
        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectSourceHoldsEverything("cancel before the pivot")
    }

    @Test(.timeLimit(.minutes(2)))
    func rollbackAfterThePivotMirrorsBackIntoTheSource() async throws {
        let rig = try Rig("lc-mirror-back", dataMiB: 16, policy: Self.policy(), format: "raw")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": "outcome:pivot"])
        #expect(submit.status == RecoveryIntegrationTests.crashStatus, "submit: \(submit.stderr)")
        try await rig.write(slot: 1)  // into the destination
        let rollback = try await rig.livecopy.run(["recover", "--rollback"])
        #expect(rollback.status == 0, "recover --rollback: \(rollback.stderr)")
        let planId = try rig.planId()
        #expect(try rig.store().plan(id: planId)?.state == .rolledBack)
        let active = try await rig.activeImage()
        #expect(active.file == rig.source, "the VM is back on its source")
        #expect(!FileManager.default.fileExists(atPath: rig.destination), "the destination is deleted")
        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectSourceHoldsEverything("rollback after the pivot")
    }
}

/// A guest that keeps writing while livecopy runs: one 64 KiB write every 10 ms, each to
/// a place of its own in the last 16 MiB of the disk, issued without waiting (a blocking
/// HMP write would hold QEMU's main loop while the pivot drains the device). After
/// `vm.guestFlushAll`, every write issued must be in the image livecopy left the VM on.
actor GuestWriter {
    let vm: QEMUVirtualMachine
    /// (pattern, offset, length) of every write issued.
    private(set) var written: [(UInt8, String, String)] = []

    init(vm: QEMUVirtualMachine) { self.vm = vm }

    func run() async throws {
        for index in 0..<256 {
            try Task.checkCancellation()
            let pattern = UInt8(0x40 + index % 0x80)
            let offset = "\(48 * 1024 + index * 64)k"
            try await vm.guestWriteWithoutWaiting(drive: "drive0", pattern: pattern, offset: offset, length: "64k")
            written.append((pattern, offset, "64k"))
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}
