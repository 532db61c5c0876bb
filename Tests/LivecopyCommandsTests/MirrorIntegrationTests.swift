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

    static func policy(_ extra: String = "") -> String {
        "strategy: mirror\nretire_source: rename\nprogress_interval: 200ms\n" + extra
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

    @Test(.timeLimit(.minutes(8)))
    func recoverCompletesAfterACrashAtEveryMirrorCrashPointWhileTheGuestWrites() async throws {
        for point in CrashPoint.mirrorForwardNames(retiring: .rename) {
            let rig = try Rig("lc-mirror-crash", dataMiB: 8, policy: Self.policy())
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
            #expect(FileManager.default.fileExists(atPath: rig.source + ".retired"), "[\(point)]")
        }
    }

    // MARK: - 3. A host reboot at every crash point

    /// livecopy crashes at a crash point, the guest writes (flushed), then QEMU dies too.
    /// Before the pivot the source is the truth, after it the destination; with a pivot
    /// under way the images decide, and when they differ livecopy names no image: the
    /// operator starts the VM on the one that holds the newest writes (known here: the
    /// destination once `job-finalize` was sent).
    @Test(.timeLimit(.minutes(6)))
    func afterAHostRebootAtEveryCrashPointTheVMBootsFromTheRightImage() async throws {
        for point in CrashPoint.mirrorForwardNames(retiring: .rename) {
            // write-blocking: a write made at READY reaches both images before it completes.
            let rig = try Rig("lc-mirror-reboot", dataMiB: 8, policy: Self.policy("copy_mode: write-blocking\n"), format: "raw")
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
            let truth = pivotSent || CrashPoint.mirrorForwardNames(retiring: .rename).drop(while: { $0 != "outcome:pivot" }).contains(point)
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

extension MirrorIntegrationTests {
    // MARK: - 5. Two disks of one VM pivot together

    /// Two disks that become READY seconds apart (8 and 24 MiB at 8 MiB/s) pivot in one
    /// group: the first waits for the second, both are flushed, completed, then finalized.
    @Test(.timeLimit(.minutes(3)))
    func theDisksOfAVMPivotTogether() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-mirror-two")
        defer { scratch.remove() }
        var drives: [(id: String, image: String, format: String)] = []
        for (index, mib) in [8, 24].enumerated() {
            let source = scratch.appending("src\(index).qcow2")
            try QEMUImage.create(source, size: "64M")
            try QEMUImage.write(source, pattern: UInt8(0x11 + index), offset: "0", length: "\(mib)M")
            drives.append((id: "drive\(index)", image: source, format: "qcow2"))
        }
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: drives)
        try Self.policy("speed: 8M\n").write(toFile: scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)
        let disks = (0..<2).map { "      - device: drive\($0)\n        destination: \(scratch.appending("dst\($0).raw"))\n        format: raw\n" }
        try "policy: ./policy.yaml\nvms:\n  - name: vm\n    qmp: \(vm.livecopySocket)\n    disks:\n\(disks.joined())"
            .write(toFile: scratch.appending("plan.yaml"), atomically: true, encoding: .utf8)
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let submit = try livecopy.start(["submit", scratch.appending("plan.yaml")])
        defer { RecoveryIntegrationTests.killIfRunning(submit) }
        // Written while both mirrors run (the first one READY soon after).
        let deadline = Date().addingTimeInterval(60)
        while try await vm.testMonitor().queryJobs().filter({ $0.id.hasPrefix("livecopy-mirror-") }).count < 2 {
            guard Date() < deadline else { throw WaitTimeout(what: "two mirror jobs") }
            try await Task.sleep(for: .milliseconds(30))
        }
        try await vm.guestWrite(drive: "drive0", pattern: 0x31, offset: "32M", length: "64k")
        try await vm.guestWrite(drive: "drive1", pattern: 0x32, offset: "32M", length: "64k")
        let result = try await submit.wait(timeout: 120)
        #expect(result.status == 0, "submit: \(result.stderr)")
        try await vm.guestWrite(drive: "drive0", pattern: 0x41, offset: "40M", length: "64k")
        try await vm.guestWrite(drive: "drive1", pattern: 0x42, offset: "40M", length: "64k")
        await vm.stop()

        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        let planId = try #require(try store.plans(states: nil, vm: nil, limit: 1).first?.id)
        let events = try store.events(ofPlan: planId)
        let together = events.filter { $0.detail.contains("pivoting together with the VM's other disks: drive0, drive1") }
        #expect(together.count == 2, "each disk notes the group:\n\(events.map(\.detail).joined(separator: "\n"))")
        // The group's order: both intents and flushes, then both finalizes (no pivot of
        // one before the other's destination was flushed).
        let pivotSteps = events.filter { $0.detail.hasPrefix("pivot: flush") || $0.detail.contains("completed and finalized") }
        #expect(pivotSteps.map { $0.detail.hasPrefix("pivot: flush") } == [true, true, false, false],
                "\(pivotSteps.map(\.detail))")
        for (index, mib) in [8, 24].enumerated() {
            let destination = scratch.appending("dst\(index).raw")
            let checks: [(UInt8, String, String)] = [
                (UInt8(0x11 + index), "0", "\(mib)M"), (UInt8(0x31 + index), "32M", "64k"), (UInt8(0x41 + index), "40M", "64k"),
                (0, "\(mib)M", "1M"),
            ]
            let verified = try RecoveryIntegrationTests.verify(destination, checks, format: "raw")
            #expect(verified.ok, "drive\(index):\n\(verified.output)")
        }
    }

    // MARK: - 6. Bad input: one line, non-zero, nothing touched

    @Test(.timeLimit(.minutes(2)), .requires(.loopDevice))
    func destinationsTheStrategyCannotTakeAreRefusedAtPreflight() async throws {
        let holder = try TemporaryDirectory(prefix: "lc-mirror-refuse")
        defer { holder.remove() }
        let small = try LoopDevice(backingFile: holder.appending("small.img"), sizeMiB: 32, fill: 0xEE)
        defer { small.detach() }
        let big = try LoopDevice(backingFile: holder.appending("big.img"), sizeMiB: 64, fill: 0xEE)
        defer { big.detach() }
        let cases: [(policy: String, destination: String?, format: String?, message: String)] = [
            ("retire_source: rename\n", nil, "raw", "format: raw needs strategy: mirror"),
            ("retire_source: rename\n", big.path, nil, "is a block device, which needs strategy: mirror"),
            (Self.policy(), big.path, "qcow2", "livecopy fills with raw data only"),
            (Self.policy(), small.path, nil, "less than the disk's 64.0 MiB"),
        ]
        for (policy, destination, format, message) in cases {
            let rig = try Rig("lc-mirror-refuse", dataMiB: 4, policy: policy, destination: destination, format: format)
            defer { rig.scratch.remove() }
            let submit = try await rig.livecopy.run(["submit", rig.planPath])
            let context = "\(destination ?? "file") \(format ?? "-"): \(submit.stderr)"
            #expect(submit.status != 0, "\(context)")
            #expect(submit.stderr.contains(message), "\(context)")
            #expect(submit.stderr.split(whereSeparator: \.isNewline).count == 1, "one line: \(context)")
            let active = try await rig.activeImage()
            #expect(active.file == rig.source, "nothing touched: \(context)")
            if destination == nil { #expect(!FileManager.default.fileExists(atPath: rig.destination), "\(context)") }
            await rig.vm.stop()
        }
        // A device something holds open is refused too, and never written.
        let holderProcess = Process()
        holderProcess.executableURL = URL(fileURLWithPath: "/bin/sh")
        holderProcess.arguments = ["-c", "exec sleep 60 < \(big.path)"]
        try holderProcess.run()
        defer { holderProcess.terminate() }
        try await Task.sleep(for: .milliseconds(200))
        let rig = try Rig("lc-mirror-refuse", dataMiB: 4, policy: Self.policy(), destination: big.path)
        defer { rig.scratch.remove() }
        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        #expect(submit.status != 0 && submit.stderr.contains("holds block device \(big.path) open"), "\(submit.stderr)")
        await rig.vm.stop()
        let untouched = try RecoveryIntegrationTests.verify(big.path, [(0xEE, "0", "64M")], format: "raw")
        #expect(untouched.ok, "the device was not written:\n\(untouched.output)")
    }
}

extension MirrorIntegrationTests {
    // MARK: - 7. The copy fails; the VM never left its source

    @Test(.timeLimit(.minutes(2)), .requires(.tmpfs))
    func aMirrorOutOfSpaceFailsWithTheVMOnItsSourceAndResumesOnceThereIsRoom() async throws {
        let holder = try TemporaryDirectory(prefix: "lc-mirror-enospc")
        defer { holder.remove() }
        let small = try #require(SmallFilesystem(path: holder.appending("small"), size: "4M"))
        let rig = try Rig("lc-mirror-enospc", dataMiB: 16, policy: Self.policy("on_error: report\nspace_margin: 0\n"),
                          destination: small.path + "/dst.raw", format: "raw")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        #expect(submit.status != 0, "submit: \(submit.stderr)")
        let planId = try rig.planId()
        let disk = try rig.store().disks(ofPlan: planId).first
        #expect(disk?.state == .failed && disk?.error?.contains("No space left") == true, "\(disk?.error ?? "")")
        #expect(try await rig.activeImage().file == rig.source, "the VM never left its source")
        try await rig.write(slot: 1)

        try small.resize("80M")
        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "recover: \(recover.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .completed)
        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("after ENOSPC")
    }

    // MARK: - 8. Started on the wrong image after a pivot: touch nothing

    /// The pivot was sent, QEMU died after a write into the destination, and the VM was
    /// started again on its source: the images differ, so livecopy touches neither and
    /// names both; started on the destination, recover finishes.
    @Test(.timeLimit(.minutes(2)))
    func aVMRestartedOnItsSourceAfterThePivotNeedsAttention() async throws {
        let rig = try Rig("lc-mirror-wrong", dataMiB: 8, policy: Self.policy(), format: "raw")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": "sent:pivot"])
        #expect(submit.status == RecoveryIntegrationTests.crashStatus, "submit: \(submit.stderr)")
        try await rig.write(slot: 1)  // into the destination, after the pivot
        rig.vm.kill()
        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.source, format: "qcow2")])
        let refused = try await rig.livecopy.run(["recover"])
        #expect(refused.status != 0, "recover: \(refused.stderr)")
        let planId = try rig.planId()
        let disk = try rig.store().disks(ofPlan: planId).first
        #expect(disk?.state == .needsAttention, "\(disk?.state.rawValue ?? "?")")
        #expect(disk?.error?.contains(rig.source) == true && disk?.error?.contains(rig.destination) == true, "\(disk?.error ?? "")")
        #expect(FileManager.default.fileExists(atPath: rig.destination), "the destination is untouched")
        await rig.vm.stop()

        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.destination, format: "raw")])
        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "recover: \(recover.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .completed)
        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("restarted on the destination")
    }
}

extension MirrorIntegrationTests {
    // MARK: - 9. Operator controls and history, as for streaming

    @Test(.timeLimit(.minutes(2)))
    func throttlePauseResumeAndHistoryWorkOnAMirror() async throws {
        let rig = try Rig("lc-mirror-controls", dataMiB: 16, policy: Self.policy("speed: 2M\n"))
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        defer { RecoveryIntegrationTests.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        let planId = try rig.planId()
        func mirrorJob() async throws -> BlockJobInfo? {
            try await rig.vm.testMonitor().queryBlockJobs().first { $0.device.hasPrefix("livecopy-mirror-") }
        }
        #expect(try await mirrorJob()?.speed == 2 << 20, "the mirror starts at the policy's speed")

        let throttle = try await rig.livecopy.run(["throttle", String(planId), "--speed", "1M"])
        #expect(throttle.status == 0 && throttle.stdout.contains("job livecopy-mirror-"), "\(throttle.stdout)\n\(throttle.stderr)")
        #expect(try await mirrorJob()?.speed == 1 << 20)

        let pause = try await rig.livecopy.run(["pause", String(planId)])
        #expect(pause.status == 0, "pause: \(pause.stderr)")
        let paused = try await rig.waitForStreamJob(status: ["paused"], timeout: 5)
        try await rig.write(slot: 1)  // into the source while the mirror is paused
        try await Task.sleep(for: .seconds(2))
        let later = try await rig.streamJob()
        #expect(later?.status == "paused" && later?.currentProgress == paused.currentProgress, "the mirror stays paused")
        #expect(try await rig.activeImage().file == rig.source, "and the VM on its source")

        let resume = try await rig.livecopy.run(["resume", String(planId)])
        #expect(resume.status == 0, "resume: \(resume.stderr)")
        _ = try await rig.livecopy.run(["throttle", String(planId), "--speed", "0"])
        let owner = try await submit.wait(timeout: 120)
        #expect(owner.status == 0, "submit: \(owner.stderr)")

        let history = try await rig.livecopy.run(["history"])
        #expect(history.status == 0 && history.stdout.contains("completed"), "\(history.stdout)")
        let show = try await rig.livecopy.run(["show", String(planId)])
        #expect(show.stdout.contains("mirroring → retiring"), "show tells the mirror's steps:\n\(show.stdout)")
        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("controls")
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
