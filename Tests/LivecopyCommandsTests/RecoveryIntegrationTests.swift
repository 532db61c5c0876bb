import Foundation
import LivecopyEngine
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

/// Crash recovery end to end against real QEMU: `livecopy` is crashed at every crash point,
/// SIGKILLed at random moments, loses its VM to a "host reboot", meets a split brain, is
/// cancelled from another process, and races another owner. Each test starts its own VM
/// in its own directory and checks the data offline at the end.
@Suite(.serialized, .requires(.qemu))
struct RecoveryIntegrationTests {
    /// The crash points of a forward copy, in the order a run reaches them (the contract's list).
    static let copyCrashPoints = [
        "plan:running", "transition:snapshotting", "intent:blockdev-snapshot-sync", "sent:blockdev-snapshot-sync",
        "outcome:blockdev-snapshot-sync", "transition:streaming", "intent:block-stream", "sent:block-stream",
        "outcome:block-stream", "intent:job-finalize", "sent:job-finalize", "outcome:job-finalize",
        "sent:job-dismiss", "transition:retiring", "intent:verify", "sent:verify", "intent:rename", "sent:rename",
        "transition:completed", "plan:completed",
    ]

    /// The exit status of a process stopped at a crash point.
    static let crashStatus: Int32 = 86

    @Test func theCrashPointsAreThoseOfTheContract() {
        #expect(CrashPoint.exitStatus == Self.crashStatus)
        #expect(CrashPoint.forwardNames == Self.copyCrashPoints)
        for name in ["intent:block-commit", "sent:block-commit", "intent:block-job-complete"] {
            #expect(CrashPoint.rollbackNames.contains(name), "\(name)")
        }
        // Every name is one the code can reach: `kind:what`, with a documented kind, a
        // state for plan and disk transitions, and no name twice.
        #expect(Set(CrashPoint.names).count == CrashPoint.names.count, "a crash point is listed twice")
        for name in CrashPoint.names {
            let parts = name.split(separator: ":", maxSplits: 1).map(String.init)
            #expect(parts.count == 2 && !parts[1].isEmpty, "\(name)")
            switch parts.first ?? "" {
            case "plan": #expect(PlanState(rawValue: parts[1]) != nil, "\(name): no such plan state")
            case "transition": #expect(DiskState(rawValue: parts[1]) != nil, "\(name): no such disk state")
            case "intent", "sent", "outcome": #expect(!parts[1].contains(" "), "\(name)")
            default: Issue.record("\(name): not a documented kind (plan, transition, intent, sent, outcome)")
            }
        }
    }

    // MARK: - 1. Every crash point

    @Test(.timeLimit(.minutes(6)), arguments: [Policy.RetireSource.rename, .delete, .quarantine])
    func recoverCompletesAfterACrashAtEveryCrashPoint(retire: Policy.RetireSource) async throws {
        for point in CrashPoint.forwardNames(retiring: retire) {
            let rig = try Rig("lc-crash", dataMiB: 8, policy: "retire_source: \(retire.rawValue)\nprogress_interval: 200ms\n")
            defer { rig.scratch.remove() }
            try await rig.write(slot: 0)  // before the copy

            let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": point])
            #expect(submit.status == Self.crashStatus, "[\(point)] submit should stop at the crash point: status \(submit.status)\n\(submit.stderr)")
            guard submit.status == Self.crashStatus else { await rig.vm.stop(); continue }

            try await rig.write(slot: 1)  // after the crash, before recover
            let recover = try await rig.livecopy.run(["recover"])
            #expect(recover.status == 0, "[\(point)] recover: status \(recover.status)\n\(recover.stderr)\n\(recover.stdout)")

            let planId = try rig.planId()
            let plan = try rig.store().plan(id: planId)
            let disk = try rig.store().disks(ofPlan: planId).first
            #expect(plan?.state == .completed, "[\(point)] plan is \(plan?.state.rawValue ?? "?")\n\(recover.stderr)")
            #expect(disk?.state == .completed, "[\(point)] disk is \(disk?.state.rawValue ?? "?"): \(disk?.error ?? "")")

            try await rig.write(slot: 2)  // after recovery: into the destination
            let active = try await rig.activeImage()
            #expect(active.file == rig.destination && active.backing == nil, "[\(point)] VM on \(active.file ?? "nil") backing \(active.backing ?? "nil")")
            await rig.vm.stop()

            try rig.expectDestinationHoldsEverything(point)
            try rig.expectUnbrokenTimeline(point)
            #expect(!FileManager.default.fileExists(atPath: rig.source), "[\(point)] the source is retired")
            #expect(FileManager.default.fileExists(atPath: rig.source + ".retired") == (retire == .rename),
                    "[\(point)] the source is renamed to .retired by rename, and deleted by delete")
            let quarantined = Quarantine.path(for: rig.source, planId: planId, diskId: disk?.id ?? 0)
            #expect(FileManager.default.fileExists(atPath: quarantined) == (retire == .quarantine),
                    "[\(point)] the source is in quarantine with quarantine only")
            #expect(try rig.store().quarantinedImages(ofPlan: planId).count == (retire == .quarantine ? 1 : 0), "[\(point)] one row")
            let details = try rig.store().events(ofPlan: planId).map(\.detail)
            #expect(!details.contains { $0.contains("was gone before livecopy retired it") }, "[\(point)] livecopy itself retired the source")
        }
    }

    // MARK: - 2. SIGKILL at random moments

    @Test(.timeLimit(.minutes(3)))
    func survivesRepeatedSIGKILLsAtRandomMoments() async throws {
        let seed = ProcessInfo.processInfo.environment["LIVECOPY_TEST_SEED"].flatMap(UInt64.init)
            ?? UInt64(Date().timeIntervalSince1970 * 1000)
        var random = SplitMix64(seed: seed)
        print("RecoveryIntegrationTests.survivesRepeatedSIGKILLsAtRandomMoments: seed \(seed) (set LIVECOPY_TEST_SEED to replay)")

        // 24 MiB at 4 MiB/s: about six seconds of streaming for five kills.
        let rig = try Rig("lc-sigkill", dataMiB: 24, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)

        var process = try rig.livecopy.start(["submit", rig.planPath])
        defer { Self.killIfRunning(process) }
        // The first kill lands while the stream job surely runs.
        try await rig.waitForStreamJob(status: ["running"])
        var kills: [String] = []
        for round in 0..<5 {
            // Later rounds may land anywhere in recover: reconciliation, lease takeover, the watch.
            let delay = Int.random(in: round == 0 ? 0...800 : 0...1200, using: &random)
            try await Task.sleep(for: .milliseconds(delay))
            let job = try await rig.streamJob()
            let state = (try? rig.store().disks(ofPlan: rig.planId()).first?.state.rawValue) ?? "?"
            let result = try await Self.sigkill(process)
            kills.append("round \(round): +\(delay) ms, disk \(state), job \(job?.status ?? "none"), exit \(result.status)")
            #expect(result.status == SIGKILL || result.status == 0 || result.status == Self.crashStatus,
                    "seed \(seed) \(kills.last!)\n\(result.stderr)")
            try await rig.write(slot: 1 + round)  // while no livecopy runs
            process = try rig.livecopy.start(["recover"])
        }
        let recover = try await process.wait(timeout: 120)
        let context = "seed \(seed); \(kills.joined(separator: "; "))"
        print("RecoveryIntegrationTests.survivesRepeatedSIGKILLsAtRandomMoments: \(context)")
        #expect(recover.status == 0, "\(context)\nrecover: \(recover.stderr)")
        #expect(kills.first?.contains("job running") == true, "the first kill landed mid-stream: \(context)")

        let planId = try rig.planId()
        #expect(try rig.store().plan(id: planId)?.state == .completed, "\(context)")
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed, "\(context)")
        try await rig.write(slot: 6)
        #expect(try await rig.streamJob() == nil, "the stream job is dismissed: \(context)")
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything(context)
        try rig.expectUnbrokenTimeline(context)
        #expect(FileManager.default.fileExists(atPath: rig.source + ".retired"), "\(context)")
    }

    // MARK: - 3. The stream ends while livecopy is down

    @Test(.timeLimit(.minutes(2)))
    func recoverFinishesAStreamThatConcludedWhileLivecopyWasDown() async throws {
        let rig = try Rig("lc-concluded", dataMiB: 16, policy: "speed: 8M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)

        let submit = try rig.livecopy.start(["submit", rig.planPath])

        defer { Self.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        try await rig.write(slot: 1)  // during the stream
        let killed = try await Self.sigkill(submit)
        #expect(killed.status == SIGKILL)

        try await rig.write(slot: 2)  // while livecopy is down
        // The stream copies everything on its own, then waits in `pending`: livecopy starts it
        // with auto-finalize off, so the backing file goes only after livecopy flushed.
        let finished = try await rig.waitForStreamJob(status: ["pending"], timeout: 30)
        #expect(finished.error == nil, "the stream job succeeded: \(finished.error ?? "")")
        let before = try await rig.activeImage()
        #expect(before.file == rig.destination && before.backing == rig.source,
                "QEMU keeps the backing file until livecopy finalizes the job")

        let recover = try await rig.livecopy.run(["recover", "--json"])
        #expect(recover.status == 0, "recover: \(recover.stderr)")
        #expect(recover.stderr.contains("vm/drive0") && recover.stderr.contains("done copying, waiting to be finalized"),
                "recover reports what it found per disk, QEMU's job state in words:\n\(recover.stderr)")
        let documents = try? JSONDecoder().decode([PlanDocument].self, from: Data(recover.stdout.utf8))
        #expect(documents?.map(\.state) == ["completed"], "recover --json:\n\(recover.stdout)")
        #expect(documents?.first?.disks.first?.bootImage == rig.destination)

        let planId = try rig.planId()
        #expect(try rig.store().plan(id: planId)?.state == .completed)
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed)
        #expect(try await rig.streamJob() == nil, "recover finalized and dismissed the job")
        try await rig.write(slot: 3)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("concluded while down")
        #expect(!FileManager.default.fileExists(atPath: rig.source))
        #expect(FileManager.default.fileExists(atPath: rig.source + ".retired"))
    }

    // MARK: - 4. Host reboot

    @Test(.timeLimit(.minutes(2)))
    func afterAHostRebootTheVMBootsFromTheDestinationAndRecoverFinishes() async throws {
        let rig = try Rig("lc-reboot", dataMiB: 16, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)

        let submit = try rig.livecopy.start(["submit", rig.planPath])

        defer { Self.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        try await rig.write(slot: 1)  // into the destination, flushed
        // The host goes down: livecopy and QEMU die at once.
        kill(submit.process.processIdentifier, SIGKILL)
        rig.vm.kill()
        _ = try await submit.wait(timeout: 10)
        let planId = try rig.planId()

        let status = try await rig.livecopy.run(["status", String(planId), "--json"])
        #expect(status.status == 0, "status: \(status.stderr)")
        let document = try JSONDecoder().decode(PlanDocument.self, from: Data(status.stdout.utf8))
        #expect(document.disks.first?.bootImage == rig.destination, "status names the destination as boot image:\n\(status.stdout)")

        let refused = try await rig.livecopy.run(["recover"])
        #expect(refused.status != 0, "recover must fail while the VM is down:\n\(refused.stderr)")
        #expect(!refused.stderr.isEmpty || !refused.stdout.isEmpty, "recover says why")
        let stillBoot = try await rig.livecopy.run(["status", String(planId), "--json"])
        let after = try? JSONDecoder().decode(PlanDocument.self, from: Data(stillBoot.stdout.utf8))
        #expect(after?.disks.first?.bootImage == rig.destination, "the boot image is still the destination:\n\(stillBoot.stdout)")
        #expect(after?.state != "completed" && after?.state != "rolled_back")

        // The operator starts the VM on the destination; its backing source opens by itself.
        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.destination, format: "qcow2")])
        try await rig.write(slot: 2)
        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "recover: \(recover.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .completed)
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed)
        try await rig.write(slot: 3)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("host reboot")
        // The dirty bitmap went with QEMU, so the data could not be compared exactly: the
        // default `on_unverifiable: keep_source` leaves the source where it was, untouched.
        #expect(FileManager.default.fileExists(atPath: rig.source) && !FileManager.default.fileExists(atPath: rig.source + ".retired"))
        #expect(try rig.store().events(ofPlan: planId).contains { $0.detail.contains("cannot verify") && $0.detail.contains("QEMU was restarted") })
    }

    // MARK: - 4c. Host reboot at every crash point: livecopy's boot advice is right

    /// livecopy crashes at a crash point, the guest writes (flushed), then QEMU dies too.
    /// The operator restarts the VM on the image livecopy names (`status --json`
    /// boot_image, else what `recover` prints), and recover finishes with every write.
    @Test(.timeLimit(.minutes(4)), arguments: [Policy.RetireSource.rename, .delete])
    func afterAHostRebootAtEveryCrashPointTheAdvisedBootImageHoldsEveryWrite(retire: Policy.RetireSource) async throws {
        for point in CrashPoint.forwardNames(retiring: retire) {
            let rig = try Rig("lc-advice", dataMiB: 8, policy: "retire_source: \(retire.rawValue)\nprogress_interval: 200ms\n")
            defer { rig.scratch.remove() }
            try await rig.write(slot: 0)
            let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": point])
            #expect(submit.status == Self.crashStatus, "[\(point)] submit: \(submit.stderr)")
            try await rig.write(slot: 1)
            rig.vm.kill()
            let planId = try rig.planId()

            let down = try await rig.livecopy.run(["recover"])
            let plan = try rig.store().plan(id: planId)
            #expect((down.status == 0) == (plan?.state == .completed), "[\(point)] recover with the VM down: \(down.stderr)")
            let status = try await rig.livecopy.run(["status", String(planId), "--json"])
            let recorded = (try? JSONDecoder().decode(PlanDocument.self, from: Data(status.stdout.utf8)))?.disks.first?.bootImage
            let printed = Self.bootAdvice(in: down.stderr)
            if plan?.state == .completed {
                #expect(recorded == rig.destination, "[\(point)] completed, yet status says \(recorded ?? "unknown")")
            } else {
                // Both answer through Engine.bootImage(of:).
                #expect(recorded == printed, "[\(point)] status says \(recorded ?? "unknown"), recover says \(printed ?? "unknown")")
            }
            guard let advice = recorded ?? printed else {
                Issue.record("[\(point)] livecopy names no boot image:\n\(down.stderr)\n\(status.stdout)")
                continue
            }

            rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: advice, format: "qcow2")])
            let recover = try await rig.livecopy.run(["recover"])
            #expect(recover.status == 0, "[\(point)] recover after restarting on \(advice): \(recover.stderr)")
            #expect(try rig.store().plan(id: planId)?.state == .completed, "[\(point)]")
            try await rig.write(slot: 2)
            await rig.vm.stop()
            try rig.expectDestinationHoldsEverything("\(point), booted from \(advice)")
        }
    }

    // MARK: - 4b. Host reboot with two VMs, restarted one at a time

    @Test(.timeLimit(.minutes(2)))
    func afterAHostRebootRecoverFinishesEachVMOnceItRuns() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-reboot2")
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.appending("new"), withIntermediateDirectories: true)
        let names = ["vm1", "vm2"]
        var vms: [String: QEMUVirtualMachine] = [:]
        for name in names {
            let source = scratch.appending("\(name).qcow2")
            try QEMUImage.create(source, size: "64M")
            try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "16M")
            vms[name] = try QEMUVirtualMachine(name: name, directory: scratch.url, drives: [(id: "drive0", image: source, format: "qcow2")])
        }
        try "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n"
            .write(toFile: scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)
        let vmEntries = names.map { name in
            "  - name: \(name)\n    qmp: \(vms[name]!.livecopySocket)\n    disks:\n      - device: drive0\n        destination: \(scratch.appending("new/\(name).qcow2"))\n"
        }.joined()
        try "name: two\npolicy: ./policy.yaml\nvms:\n\(vmEntries)".write(toFile: scratch.appending("plan.yaml"), atomically: true, encoding: .utf8)
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let submit = try livecopy.start(["submit", scratch.appending("plan.yaml")])
        defer { Self.killIfRunning(submit) }
        let store = try await waitForStore(at: scratch.appending("livecopy.db"))
        for name in names {
            let deadline = Date().addingTimeInterval(30)
            while try await vms[name]!.testMonitor().queryJobs().first(where: { $0.id.hasPrefix("livecopy-stream-") })?.status != "running" {
                guard Date() < deadline else { throw WaitTimeout(what: "\(name) streams") }
                try await Task.sleep(for: .milliseconds(30))
            }
            try await vms[name]!.guestWrite(drive: "drive0", pattern: 0x21, offset: "32M", length: "64k")
        }
        kill(submit.process.processIdentifier, SIGKILL)
        for name in names { vms[name]!.kill() }
        _ = try await submit.wait(timeout: 10)
        let planId = try #require(try store.plans(states: nil, vm: nil, limit: 1).first?.id)

        // Only vm1 comes back, on its destination.
        vms["vm1"] = try QEMUVirtualMachine(name: "vm1", directory: scratch.url,
                                            drives: [(id: "drive0", image: scratch.appending("new/vm1.qcow2"), format: "qcow2")])
        let partial = try await livecopy.run(["recover"])
        #expect(partial.status != 0, "vm2 is still down:\n\(partial.stderr)")
        #expect(try store.disks(ofPlan: planId).map(\.state) == [.completed, .streaming], "vm1's disk finishes, vm2's waits")
        let status = try await livecopy.run(["status", String(planId), "--json"])
        let document = try? JSONDecoder().decode(PlanDocument.self, from: Data(status.stdout.utf8))
        #expect(document?.disks.map { $0.bootImage ?? "nil" } == names.map { scratch.appending("new/\($0).qcow2") }, "\(status.stdout)")

        vms["vm2"] = try QEMUVirtualMachine(name: "vm2", directory: scratch.url,
                                            drives: [(id: "drive0", image: scratch.appending("new/vm2.qcow2"), format: "qcow2")])
        let recover = try await livecopy.run(["recover"])
        #expect(recover.status == 0, "recover: \(recover.stderr)")
        #expect(try store.plan(id: planId)?.state == .completed)
        for name in names {
            await vms[name]!.stop()
            let destination = scratch.appending("new/\(name).qcow2")
            #expect(try Self.verify(destination, [(0x11, "0", "16M"), (0x21, "32M", "64k"), (0, "16M", "1M")]).ok, "\(name)")
            #expect(try QEMUImage.info(destination).backingFilename == nil, "\(name)")
            // QEMU restarted since the switch: unverifiable, so the source is kept (keep_source).
            #expect(FileManager.default.fileExists(atPath: scratch.appending("\(name).qcow2")), "\(name)")
        }
    }

    // MARK: - 5. Split brain

    @Test(.timeLimit(.minutes(2)))
    func aVMRestartedOnTheSourceIsASplitBrainAndNothingIsTouched() async throws {
        let rig = try Rig("lc-split", dataMiB: 16, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)

        let submit = try rig.livecopy.start(["submit", rig.planPath])

        defer { Self.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        try await rig.write(slot: 1)  // goes into the destination only
        kill(submit.process.processIdentifier, SIGKILL)
        rig.vm.kill()
        _ = try await submit.wait(timeout: 10)
        let planId = try rig.planId()

        // The wrong restart: on the source, which lacks the write above.
        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.source, format: "qcow2")])
        _ = try await rig.activeImage()  // QEMU has opened the image
        let sourceBefore = try Data(contentsOf: URL(fileURLWithPath: rig.source))
        let destinationBefore = try Data(contentsOf: URL(fileURLWithPath: rig.destination))

        let recover = try await rig.livecopy.run(["recover"])
        let output = recover.stdout + recover.stderr
        #expect(recover.status != 0, "recover must refuse a split brain:\n\(output)")
        let plan = try rig.store().plan(id: planId)
        let disk = try rig.store().disks(ofPlan: planId).first
        #expect(plan?.state == .needsAttention, "plan is \(plan?.state.rawValue ?? "?")")
        #expect(disk?.state == .needsAttention, "disk is \(disk?.state.rawValue ?? "?")")
        #expect(output.contains(rig.source) && output.contains(rig.destination), "the message names both images:\n\(output)")
        let diskError = disk?.error ?? ""
        #expect(diskError.contains(rig.destination), "the disk's error names the destination: \(diskError)")

        let active = try await rig.activeImage()
        #expect(active.file == rig.source && active.backing == nil, "recover did not touch the VM")
        #expect(try await rig.vm.testMonitor().queryJobs().isEmpty, "recover started no job")
        #expect(try Data(contentsOf: URL(fileURLWithPath: rig.source)) == sourceBefore, "the source is unchanged")
        #expect(try Data(contentsOf: URL(fileURLWithPath: rig.destination)) == destinationBefore, "the destination is unchanged")

        // The operator follows the advice: the VM goes back onto the destination, and recover finishes.
        await rig.vm.stop()
        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.destination, format: "qcow2")])
        try await rig.write(slot: 2)
        let resolved = try await rig.livecopy.run(["recover"])
        #expect(resolved.status == 0, "recover after the VM was restarted on the destination: \(resolved.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .completed)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("split brain resolved")
    }

    // MARK: - 6. Cancel from a second process

    @Test(.timeLimit(.minutes(2)))
    func cancelFromASecondProcessRollsBackALiveOwner() async throws {
        let rig = try Rig("lc-cancel", dataMiB: 16, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)

        let submit = try rig.livecopy.start(["submit", rig.planPath])

        defer { Self.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        try await rig.write(slot: 1)  // into the destination
        try await rig.write(slot: 2)
        let planId = try rig.planId()

        let cancel = try await rig.livecopy.run(["cancel", String(planId)])
        #expect(cancel.status == 0, "cancel: \(cancel.stderr)")
        let owner = try await submit.wait(timeout: 30)
        #expect(owner.status != 0 && owner.status != SIGKILL, "the owner's submit exits non-zero on its own: \(owner.status)\n\(owner.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .rolledBack)
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .rolledBack)

        let active = try await rig.activeImage()
        #expect(active.file == rig.source && active.backing == nil, "the VM is back on its source: \(active.file ?? "nil")")
        #expect(!FileManager.default.fileExists(atPath: rig.destination), "the destination is deleted")
        try await rig.write(slot: 3)  // into the source
        await rig.vm.stop()
        try rig.expectSourceHoldsEverything("cancel")
    }

    // MARK: - 7. A rollback interrupted, resumed by recover

    @Test(.timeLimit(.minutes(5)))
    func recoverResumesACancelInterruptedAtEveryRollbackCrashPoint() async throws {
        for point in CrashPoint.rollbackNames {
            let rig = try Rig("lc-rbcrash", dataMiB: 16, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
            defer { rig.scratch.remove() }
            let planId = try await rig.submitDyingMidStream("[\(point)]")

            let cancel = try await rig.livecopy.run(["cancel", String(planId)], environment: ["LIVECOPY_CRASH_AT": point])
            #expect(cancel.status == Self.crashStatus, "[\(point)] cancel should stop at the crash point: \(cancel.status)\n\(cancel.stderr)")
            try await rig.write(slot: 2)  // still into the destination (or the source if the pivot happened)
            try await Self.expectRecoverFinishesTheRollback(rig, planId: planId, point: point)
        }
    }

    /// After a cancel stopped at `point`: `recover` ends the plan rolled back, the VM on its
    /// source with no job left, the destination deleted, and every write in the source.
    static func expectRecoverFinishesTheRollback(_ rig: Rig, planId: Int64, point: String) async throws {
        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "[\(point)] recover: \(recover.status)\n\(recover.stderr)")
        let plan = try rig.store().plan(id: planId)
        let disk = try rig.store().disks(ofPlan: planId).first
        #expect(plan?.state == .rolledBack, "[\(point)] plan is \(plan?.state.rawValue ?? "?")")
        #expect(disk?.state == .rolledBack, "[\(point)] disk is \(disk?.state.rawValue ?? "?"): \(disk?.error ?? "")")

        let active = try await rig.activeImage()
        #expect(active.file == rig.source && active.backing == nil, "[\(point)] VM on \(active.file ?? "nil")")
        #expect(try await rig.vm.testMonitor().queryJobs().isEmpty, "[\(point)] no job is left behind")
        #expect(!FileManager.default.fileExists(atPath: rig.destination), "[\(point)] the destination is deleted")
        try await rig.write(slot: 3)
        await rig.vm.stop()
        try rig.expectSourceHoldsEverything(point)
        try rig.expectUnbrokenTimeline(point)
    }

    // MARK: - 7b. A rollback by mirror (the stream had concluded) interrupted at every step

    @Test(.timeLimit(.minutes(3)))
    func recoverResumesAMirrorRollbackInterruptedAtEveryStep() async throws {
        let points = ["transition:rolling_back", "intent:drive-mirror", "sent:drive-mirror", "outcome:drive-mirror",
                      "intent:block-job-complete", "sent:block-job-complete", "outcome:block-job-complete",
                      "sent:job-dismiss", "intent:delete-destination", "sent:delete-destination", "outcome:delete-destination", "transition:rolled_back"]
        for point in points {
            let rig = try Rig("lc-mirror", dataMiB: 8, policy: "retire_source: rename\nprogress_interval: 200ms\n")
            defer { rig.scratch.remove() }
            try await rig.write(slot: 0)
            // The stream has concluded and been dismissed: the destination stands alone.
            let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": "sent:job-dismiss"])
            #expect(submit.status == Self.crashStatus, "[\(point)] submit: \(submit.stderr)")
            try await rig.write(slot: 1)  // into the destination only
            let planId = try rig.planId()

            let cancel = try await rig.livecopy.run(["cancel", String(planId)], environment: ["LIVECOPY_CRASH_AT": point])
            #expect(cancel.status == Self.crashStatus, "[\(point)] cancel should stop there: \(cancel.status)\n\(cancel.stderr)")
            try await rig.write(slot: 2)  // wherever the VM is now
            try await Self.expectRecoverFinishesTheRollback(rig, planId: planId, point: point)
        }
    }

    // MARK: - 7c. Crash between the commit job's dismissal and its record

    /// After a host reboot the VM runs on the destination with no stream job; cancel
    /// commits it back, pivots, dismisses the commit job, and dies before recording it.
    /// The VM is then on its source with every write: not a split brain.
    @Test(.timeLimit(.minutes(2)))
    func aCrashJustAfterTheCommitJobIsDismissedIsNotASplitBrain() async throws {
        let rig = try Rig("lc-dismissed", dataMiB: 16, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        _ = try await rig.submitDyingMidStream("dismissed")
        rig.vm.kill()
        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.destination, format: "qcow2")])
        try await rig.write(slot: 2)
        let planId = try rig.planId()

        // The first job this cancel dismisses is its commit job, after the pivot.
        let cancel = try await rig.livecopy.run(["cancel", String(planId)], environment: ["LIVECOPY_CRASH_AT": "sent:job-dismiss"])
        #expect(cancel.status == Self.crashStatus, "cancel: \(cancel.status)\n\(cancel.stderr)")
        let pivoted = try await rig.activeImage()
        #expect(pivoted.file == rig.source, "the pivot happened before the crash")
        try await rig.write(slot: 3)  // into the source

        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "recover: \(recover.status)\n\(recover.stderr)")
        #expect(!recover.stderr.contains("never on \(rig.source)"), "livecopy must not advise leaving the image holding the newest writes:\n\(recover.stderr)")
        let disk = try rig.store().disks(ofPlan: planId).first
        #expect(disk?.state == .rolledBack, "disk is \(disk?.state.rawValue ?? "?"): \(disk?.error ?? "")")
        #expect(!FileManager.default.fileExists(atPath: rig.destination), "the destination is deleted")
        try await rig.write(slot: 4)
        await rig.vm.stop()
        try rig.expectSourceHoldsEverything("commit dismissed")
    }

    // MARK: - 7d. Host reboot in the middle of a rollback: livecopy's boot advice is right

    /// cancel dies at a rollback step, the guest writes (flushed), then QEMU dies too. The
    /// operator restarts the VM on the image livecopy names, and recover finishes the
    /// rollback with every write in the source.
    @Test(.timeLimit(.minutes(4)))
    func afterAHostRebootMidRollbackTheAdvisedBootImageHoldsEveryWrite() async throws {
        for point in CrashPoint.rollbackNames {
            let rig = try Rig("lc-rbadvice", dataMiB: 24, policy: "speed: 8M\nretire_source: rename\nprogress_interval: 200ms\n")
            defer { rig.scratch.remove() }
            let planId = try await rig.submitDyingMidStream("[\(point)]")
            // Let the stream copy past the slots, so the destination's copies would shadow later writes.
            let deadline = Date().addingTimeInterval(30)
            while (try await rig.streamJob()?.currentProgress ?? 0) < 6 << 20 {
                guard Date() < deadline else { throw WaitTimeout(what: "the stream passes 6 MiB") }
                try await Task.sleep(for: .milliseconds(50))
            }
            let cancel = try await rig.livecopy.run(["cancel", String(planId)], environment: ["LIVECOPY_CRASH_AT": point])
            #expect(cancel.status == Self.crashStatus, "[\(point)] cancel: \(cancel.stderr)")
            try await rig.write(slot: 2)
            let before = try await rig.activeImage().file ?? "?"
            rig.vm.kill()

            let down = try await rig.livecopy.run(["recover"])
            let status = try await rig.livecopy.run(["status", String(planId), "--json"])
            let recorded = (try? JSONDecoder().decode(PlanDocument.self, from: Data(status.stdout.utf8)))?.disks.first?.bootImage
            let printed = Self.bootAdvice(in: down.stderr)
            if try rig.store().plan(id: planId)?.state.isFinal == true {
                #expect(printed == nil, "[\(point)] a final plan gets no advice: \(down.stderr)")
            } else {
                // Both answer through Engine.bootImage(of:) (nil: nobody can tell).
                #expect(recorded == printed, "[\(point)] status says \(recorded ?? "unknown"), recover says \(printed ?? "unknown")")
            }
            // Between the pivot request and its recorded conclusion, nobody can tell from the
            // record alone: livecopy may say so (the operator then compares the images, as it
            // advises; the test knows the answer) or name the source when both are identical.
            let pivotWindow = ["intent:block-job-complete", "sent:block-job-complete", "outcome:block-job-complete"].contains(point)
            let advice: String
            var ambiguous = false
            if let named = recorded ?? printed {
                advice = named
                #expect(advice == before || (pivotWindow && advice == rig.source),
                        "[\(point)] the VM ran on \(before) before the reboot, livecopy advises \(advice)\n\(down.stderr)")
            } else if pivotWindow && down.stderr.contains("nobody can tell") {
                advice = before
                ambiguous = true
            } else {
                Issue.record("[\(point)] livecopy names no boot image:\n\(down.stderr)\n\(status.stdout)")
                continue
            }

            rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: advice, format: "qcow2")])
            if ambiguous && advice == rig.source {
                // On the source, livecopy still cannot tell whether it got every write: it
                // must touch nothing until the operator, having compared, deletes the other.
                let sourceBytes = try Data(contentsOf: URL(fileURLWithPath: rig.source))
                let destinationBytes = try Data(contentsOf: URL(fileURLWithPath: rig.destination))
                let unsure = try await rig.livecopy.run(["recover"])
                #expect(unsure.status != 0, "[\(point)] recover must not guess: \(unsure.stderr)")
                #expect(try rig.store().disks(ofPlan: planId).first?.state == .needsAttention, "[\(point)]")
                #expect(try Data(contentsOf: URL(fileURLWithPath: rig.source)) == sourceBytes, "[\(point)] source untouched")
                #expect(try Data(contentsOf: URL(fileURLWithPath: rig.destination)) == destinationBytes, "[\(point)] destination untouched")
                try FileManager.default.removeItem(atPath: rig.destination)
            }
            let recover = try await rig.livecopy.run(["recover"])
            #expect(recover.status == 0, "[\(point)] recover after restarting on \(advice): \(recover.stderr)")
            let again = Self.bootAdvice(in: recover.stderr)
            #expect(again == nil || again == advice, "[\(point)] the VM runs on \(advice), which holds every write, yet livecopy now advises \(again ?? "")")
            #expect(try rig.store().disks(ofPlan: planId).first?.bootImage == rig.source, "[\(point)] rolled back: boot from the source")
            let state = try rig.store().plan(id: planId)?.state
            #expect(state == .rolledBack, "[\(point)] plan is \(state?.rawValue ?? "?")")
            let active = try await rig.activeImage()
            #expect(active.file == rig.source && active.backing == nil, "[\(point)] VM on \(active.file ?? "nil")")
            try await rig.write(slot: 3)
            await rig.vm.stop()
            try rig.expectSourceHoldsEverything("\(point), booted from \(advice)")
        }
    }

    // MARK: - 8. One owner at a time

    @Test(.timeLimit(.minutes(2)))
    func twoRunsOfOnePlanHaveExactlyOneOwner() async throws {
        let rig = try Rig("lc-owner", dataMiB: 16, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)

        let detach = try await rig.livecopy.run(["submit", rig.planPath, "--detach"])
        #expect(detach.status == 0, "submit --detach: \(detach.stderr)")
        let planId = try #require(Int64(detach.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))

        let first = try rig.livecopy.start(["run", "--plan", String(planId)])

        defer { Self.killIfRunning(first) }
        let second = try rig.livecopy.start(["run", "--plan", String(planId)])
        defer { Self.killIfRunning(second) }
        let started = Date()

        // Whichever lost must leave quickly, while the winner still streams.
        var loser: LivecopyProcess.Result?
        var winner: LivecopyProcess.Running?
        let deadline = Date().addingTimeInterval(10)
        while loser == nil && Date() < deadline {
            if !first.process.isRunning { loser = try await first.wait(); winner = second }
            else if !second.process.isRunning { loser = try await second.wait(); winner = first }
            else { try await Task.sleep(for: .milliseconds(50)) }
        }
        let lost = try #require(loser, "neither run exited within 10 s")
        let loserSeconds = Date().timeIntervalSince(started)
        #expect(lost.status != 0, "the second owner must refuse:\n\(lost.stderr)")
        let survivor = try #require(winner)
        let ownerPid = "pid \(survivor.process.processIdentifier)"
        #expect(lost.stderr.contains(ownerPid), "the refusal names the owner (\(ownerPid)):\n\(lost.stderr)")
        #expect(survivor.process.isRunning, "the loser left (after \(loserSeconds) s) while the winner still ran")

        // recover on a plan with a live owner refuses too, and disturbs nothing.
        if survivor.process.isRunning {
            let recover = try await rig.livecopy.run(["recover", "--plan", String(planId)])
            #expect(recover.status != 0, "recover --plan must refuse a plan with a live owner:\n\(recover.stderr)")
            #expect(recover.stderr.contains(ownerPid), "recover names the owner (\(ownerPid)):\n\(recover.stderr)")
        }

        let won = try await survivor.wait(timeout: 60)
        #expect(won.status == 0, "the owner completes the plan:\n\(won.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .completed)
        let transitions = try rig.store().events(ofPlan: planId).filter { $0.kind == .transition && $0.diskId != nil }
            .map { "\($0.from ?? "")→\($0.to ?? "")" }
        #expect(transitions == ["pending→snapshotting", "snapshotting→streaming", "streaming→retiring", "retiring→completed"],
                "one engine drove the disk once")
        try await rig.write(slot: 1)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("single owner")
    }

    // MARK: - 6b. The owner dies while rolling back for a cancel; cancel finishes the job

    @Test(.timeLimit(.minutes(3)))
    func cancelFinishesTheRollbackWhenTheOwnerDiesDuringIt() async throws {
        for point in ["transition:rolling_back", "sent:block-job-cancel", "sent:block-commit", "intent:block-job-complete",
                      "sent:block-job-complete", "intent:delete-destination"] {
            let rig = try Rig("lc-cancel-dies", dataMiB: 16, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
            defer { rig.scratch.remove() }
            try await rig.write(slot: 0)
            let submit = try rig.livecopy.start(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": point])
            defer { Self.killIfRunning(submit) }
            try await rig.waitForStreamJob(status: ["running"])
            try await rig.write(slot: 1)
            let planId = try rig.planId()

            let cancel = try await rig.livecopy.run(["cancel", String(planId)])
            let owner = try await submit.wait(timeout: 30)
            #expect(owner.status == Self.crashStatus, "[\(point)] the owner died in its rollback: \(owner.status)\n\(owner.stderr)")
            #expect(cancel.status == 0, "[\(point)] cancel took over and finished: \(cancel.status)\n\(cancel.stderr)")
            #expect(try rig.store().plan(id: planId)?.state == .rolledBack, "[\(point)]")
            let active = try await rig.activeImage()
            #expect(active.file == rig.source && active.backing == nil, "[\(point)] VM on \(active.file ?? "nil")")
            #expect(try await rig.vm.testMonitor().queryJobs().isEmpty, "[\(point)] no job is left behind")
            #expect(!FileManager.default.fileExists(atPath: rig.destination), "[\(point)] the destination is deleted")
            try await rig.write(slot: 2)
            await rig.vm.stop()
            try rig.expectSourceHoldsEverything(point)
        }
    }

    // MARK: - 8c. Cancel of a plan never started

    @Test(.timeLimit(.minutes(1)))
    func cancelOfADetachedPlanTouchesNothing() async throws {
        let rig = try Rig("lc-cancel-pending", dataMiB: 4, policy: "retire_source: rename\n")
        defer { rig.scratch.remove() }
        let detach = try await rig.livecopy.run(["submit", rig.planPath, "--detach"])
        let planId = try #require(Int64(detach.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), "\(detach.stderr)")
        let cancel = try await rig.livecopy.run(["cancel", String(planId)])
        #expect(cancel.status == 0, "cancel: \(cancel.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .rolledBack)
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .rolledBack)
        let active = try await rig.activeImage()
        #expect(active.file == rig.source && active.backing == nil)
        #expect(!FileManager.default.fileExists(atPath: rig.destination))
        let run = try await rig.livecopy.run(["run", "--plan", String(planId)])
        #expect(run.status != 0, "a rolled-back plan does not run again")
        #expect(try await rig.activeImage().file == rig.source)
        await rig.vm.stop()
    }

    // MARK: - 8b. A stalled owner is still the owner

    /// An owner that is alive on this host but silent past the lease timeout (stopped,
    /// swapped out, in a debugger) still owns its plan: recover must not take over, or two
    /// processes drive one disk.
    @Test(.timeLimit(.minutes(2)))
    func aStalledButLiveOwnerKeepsItsPlan() async throws {
        let rig = try Rig("lc-stalled", dataMiB: 16, policy: "speed: 8M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        defer { Self.killIfRunning(submit) }
        defer { kill(submit.process.processIdentifier, SIGCONT) }
        try await rig.waitForStreamJob(status: ["running"])
        let planId = try rig.planId()
        let ownerPid = "pid \(submit.process.processIdentifier)"

        kill(submit.process.processIdentifier, SIGSTOP)
        var attempts: [String] = []
        let until = Date().addingTimeInterval(Engine.leaseTimeout + 3)
        while Date() < until {
            let recover = try await rig.livecopy.run(["recover", "--plan", String(planId)])
            attempts.append("status \(recover.status): \(recover.stderr.split(separator: "\n").first ?? "")")
            if recover.status == 0 || !recover.stderr.contains(ownerPid) { break }
            try await Task.sleep(for: .seconds(1))
        }
        kill(submit.process.processIdentifier, SIGCONT)
        #expect(attempts.allSatisfy { !$0.hasPrefix("status 0") && $0.contains(ownerPid) },
                "recover must refuse while the owner lives, even stalled:\n\(attempts.joined(separator: "\n"))")

        let owner = try await submit.wait(timeout: 60)
        #expect(owner.status == 0, "the owner finishes its plan:\n\(owner.stderr)")
        let plan = try rig.store().plan(id: planId)
        #expect(plan?.state == .completed, "plan is \(plan?.state.rawValue ?? "?"): \(plan?.error ?? "")")
        try await rig.write(slot: 1)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("stalled owner")
    }

    // MARK: - 6c. Cancel rolls back only the disks not completed

    @Test(.timeLimit(.minutes(2)))
    func cancelRollsBackOnlyTheDisksNotYetCompleted() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-partial")
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.appending("new"), withIntermediateDirectories: true)
        let small = (source: scratch.appending("a.qcow2"), destination: scratch.appending("new/a.qcow2"))
        let large = (source: scratch.appending("b.qcow2"), destination: scratch.appending("new/b.qcow2"))
        try QEMUImage.create(small.source, size: "64M")
        try QEMUImage.write(small.source, pattern: 0x11, offset: "0", length: "1M")
        try QEMUImage.create(large.source, size: "64M")
        try QEMUImage.write(large.source, pattern: 0x12, offset: "0", length: "24M")
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [
            (id: "drive0", image: small.source, format: "qcow2"), (id: "drive1", image: large.source, format: "qcow2"),
        ])
        try "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n"
            .write(toFile: scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)
        try """
            name: partial
            policy: ./policy.yaml
            vms:
              - name: vm
                qmp: \(vm.livecopySocket)
                disks:
                  - device: drive0
                    destination: \(small.destination)
                  - device: drive1
                    destination: \(large.destination)
            """.write(toFile: scratch.appending("plan.yaml"), atomically: true, encoding: .utf8)
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let submit = try livecopy.start(["submit", scratch.appending("plan.yaml")])
        defer { Self.killIfRunning(submit) }
        let store = try await waitForStore(at: scratch.appending("livecopy.db"))
        try await waitUntil("drive0 completed while drive1 streams", timeout: 30) {
            guard let plan = try store.plans(states: nil, vm: nil, limit: 1).first else { return false }
            let states = try store.disks(ofPlan: plan.id).map(\.state)
            return states == [.completed, .streaming]
        }
        let planId = try #require(try store.plans(states: nil, vm: nil, limit: 1).first?.id)
        try await vm.guestWrite(drive: "drive0", pattern: 0x31, offset: "32M", length: "64k")
        try await vm.guestWrite(drive: "drive1", pattern: 0x32, offset: "32M", length: "64k")

        let cancel = try await livecopy.run(["cancel", String(planId)])
        #expect(cancel.status == 0, "cancel: \(cancel.stderr)")
        let owner = try await submit.wait(timeout: 30)
        #expect(owner.status != 0, "the owner's submit reports the cancel")
        #expect(try store.plan(id: planId)?.state == .rolledBack)
        #expect(try store.disks(ofPlan: planId).map(\.state) == [.completed, .rolledBack])
        let devices = try await vm.testMonitor().queryBlock()
        #expect(devices.first { $0.device == "drive0" }?.inserted?.file == small.destination, "the completed disk stays on its destination")
        #expect(devices.first { $0.device == "drive1" }?.inserted?.file == large.source, "the other goes back to its source")
        await vm.stop()

        #expect(try Self.verify(small.destination, [(0x11, "0", "1M"), (0x31, "32M", "64k")]).ok)
        #expect(try QEMUImage.info(small.destination).backingFilename == nil)
        #expect(FileManager.default.fileExists(atPath: small.source + ".retired"))
        #expect(try Self.verify(large.source, [(0x12, "0", "24M"), (0x32, "32M", "64k")]).ok)
        #expect(!FileManager.default.fileExists(atPath: large.destination))
        #expect(FileManager.default.fileExists(atPath: large.source))
    }

    // MARK: - 9. Rolling back an interrupted plan: --rollback, after_restart, cancel with no owner

    @Test(.timeLimit(.minutes(3)))
    func anInterruptedPlanRollsBackByFlagByPolicyAndByCancelWithNoOwner() async throws {
        for variant in ["recover --rollback", "after_restart: rollback", "cancel with no owner", "host reboot, after_restart: rollback"] {
            let rollbackPolicy = variant.contains("after_restart")
            let rig = try Rig("lc-rb", dataMiB: 16, policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n"
                              + (rollbackPolicy ? "after_restart: rollback\n" : ""))
            defer { rig.scratch.remove() }
            let planId = try await rig.submitDyingMidStream("[\(variant)]")

            let result: LivecopyProcess.Result
            switch variant {
            case "recover --rollback":
                result = try await rig.livecopy.run(["recover", "--rollback"])
            case "cancel with no owner":
                result = try await rig.livecopy.run(["cancel", String(planId)])
            case "host reboot, after_restart: rollback":
                rig.vm.kill()
                rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.destination, format: "qcow2")])
                try await rig.write(slot: 2)
                result = try await rig.livecopy.run(["recover"])
            default:
                result = try await rig.livecopy.run(["recover"])
            }
            #expect(result.status == 0, "[\(variant)] status \(result.status)\n\(result.stderr)")
            #expect(try rig.store().plan(id: planId)?.state == .rolledBack, "[\(variant)]")
            #expect(try rig.store().disks(ofPlan: planId).first?.state == .rolledBack, "[\(variant)]")
            let active = try await rig.activeImage()
            #expect(active.file == rig.source && active.backing == nil, "[\(variant)] VM on \(active.file ?? "nil")")
            #expect(try await rig.vm.testMonitor().queryJobs().isEmpty, "[\(variant)] no job is left behind")
            #expect(!FileManager.default.fileExists(atPath: rig.destination), "[\(variant)] the destination is deleted")
            try await rig.write(slot: 3)
            await rig.vm.stop()
            try rig.expectSourceHoldsEverything(variant)
        }
    }

    // MARK: - 9b. recover --rollback from every crash point of the copy

    /// Before the disk is `retiring`, a rollback brings the VM back to its source with
    /// every write; from `retiring` on, the copy is past the point of no return and completes.
    @Test(.timeLimit(.minutes(4)))
    func recoverRollbackFromEveryCrashPoint() async throws {
        let pointOfNoReturn = try #require(CrashPoint.forwardNames.firstIndex(of: "transition:retiring"))
        for (index, point) in CrashPoint.forwardNames.enumerated() {
            let rig = try Rig("lc-rbpoint", dataMiB: 8, policy: "retire_source: rename\nprogress_interval: 200ms\n")
            defer { rig.scratch.remove() }
            try await rig.write(slot: 0)
            let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": point])
            #expect(submit.status == Self.crashStatus, "[\(point)] submit: \(submit.stderr)")
            try await rig.write(slot: 1)

            let recover = try await rig.livecopy.run(["recover", "--rollback"])
            let planId = try rig.planId()
            let state = try rig.store().plan(id: planId)?.state
            var active = try await rig.activeImage()
            if index < pointOfNoReturn {
                let error = try rig.store().disks(ofPlan: planId).first?.error ?? ""
                #expect(recover.status == 0, "[\(point)] recover --rollback: \(recover.status)\n\(recover.stderr)")
                #expect(state == .rolledBack, "[\(point)] plan is \(state?.rawValue ?? "?"): \(error)")
                #expect(active.file == rig.source && active.backing == nil, "[\(point)] VM on \(active.file ?? "nil")")
                #expect(!FileManager.default.fileExists(atPath: rig.destination), "[\(point)] the destination is deleted")
            } else if state == .completed {
                // Past the point of no return the copy may simply complete…
                #expect(recover.status == 0, "[\(point)] recover --rollback: \(recover.status)\n\(recover.stderr)")
            } else {
                // …or be left as it is, never carried forward by a rollback: then it says so,
                // names the destination, and a plain recover completes it.
                let disk = try rig.store().disks(ofPlan: planId).first
                #expect(recover.status != 0, "[\(point)] a plan left unfinished is no success: \(recover.stderr)")
                #expect(disk?.state == .retiring, "[\(point)] disk is \(disk?.state.rawValue ?? "?")")
                #expect(Self.bootAdvice(in: recover.stderr) == rig.destination, "[\(point)] advice:\n\(recover.stderr)")
                #expect(active.file == rig.destination && active.backing == nil, "[\(point)] VM on \(active.file ?? "nil")")
                let resume = try await rig.livecopy.run(["recover"])
                #expect(resume.status == 0, "[\(point)] recover: \(resume.stderr)")
                #expect(try rig.store().plan(id: planId)?.state == .completed, "[\(point)]")
                active = try await rig.activeImage()
            }
            try await rig.write(slot: 2)
            await rig.vm.stop()
            if let image = active.file {
                let result = try Self.verify(image, rig.expectedChecks)
                #expect(result.ok, "[\(point)] the VM's image \(image) lacks data:\n\(result.output)")
            }
            try rig.expectUnbrokenTimeline(point)
        }
    }

    // MARK: - 10. Rolling back once the stream has concluded, before the disk moved on

    /// The stream has concluded and been dismissed but the disk is still recorded
    /// `streaming` (crash at `sent:job-dismiss`). An operator then asks for a rollback,
    /// by `cancel` or by `recover --rollback`, twice.
    @Test(.timeLimit(.minutes(2)))
    func aRollbackAfterTheStreamConcludedNeitherLosesDataNorRetiresTheSource() async throws {
        for command in [["cancel", "1"], ["recover", "--rollback"]] {
            let label = command.joined(separator: " ")
            let rig = try Rig("lc-late-rb", dataMiB: 8, policy: "retire_source: rename\nprogress_interval: 200ms\n")
            defer { rig.scratch.remove() }
            try await rig.write(slot: 0)
            let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": "sent:job-dismiss"])
            #expect(submit.status == Self.crashStatus, "[\(label)] submit: \(submit.stderr)")
            let planId = try rig.planId()
            #expect(planId == 1)

            let first = try await rig.livecopy.run(command)
            let disk = try rig.store().disks(ofPlan: planId).first
            // The contract: the disk is not completed, so it is rolled back, and the command returns 0.
            #expect(first.status == 0, "[\(label)] status \(first.status)\n\(first.stderr)")
            #expect(disk?.state == .rolledBack, "[\(label)] disk is \(disk?.state.rawValue ?? "?"): \(disk?.error ?? "")")
            // Whatever happened, advice about the boot image must name the image the VM runs on.
            let active = try await rig.activeImage()
            for line in first.stderr.split(separator: "\n") where line.contains("must boot from") {
                #expect(line.hasSuffix("must boot from \(active.file ?? "?")"),
                        "[\(label)] the VM runs on \(active.file ?? "?") but livecopy advises: \(line)")
            }

            // Asking again must not carry the plan forward and retire its source.
            try await rig.write(slot: 1)
            let second = try await rig.livecopy.run(command)
            let plan = try rig.store().plan(id: planId)
            #expect(plan?.state != .completed, "[\(label)] asked twice to roll back, livecopy completed the plan:\n\(second.stderr)")
            #expect(FileManager.default.fileExists(atPath: rig.source), "[\(label)] the source of a plan being rolled back is not retired")

            // And no write is lost, wherever the VM ended.
            let end = try await rig.activeImage()
            try await rig.write(slot: 2)
            await rig.vm.stop()
            let image = try #require(end.file)
            let result = try Self.verify(image, rig.expectedChecks)
            #expect(result.ok, "[\(label)] the VM's image \(image) lacks data:\n\(result.output)")
        }
    }

    // MARK: - Helpers

    /// The image named by the last "must boot from /path" in livecopy's output, if any.
    static func bootAdvice(in output: String) -> String? {
        guard let text = output.components(separatedBy: "must boot from ").dropFirst().last, text.hasPrefix("/") else { return nil }
        return String(text.prefix { !$0.isWhitespace && $0 != ";" && $0 != ")" && $0 != "," })
    }

    /// Leaves no livecopy behind when a test ends early.
    static func killIfRunning(_ running: LivecopyProcess.Running) {
        if running.process.isRunning { kill(running.process.processIdentifier, SIGKILL) }
    }

    /// SIGKILLs a livecopy process and waits until it is reaped (a zombie would look alive).
    static func sigkill(_ running: LivecopyProcess.Running) async throws -> LivecopyProcess.Result {
        kill(running.process.processIdentifier, SIGKILL)
        return try await running.wait(timeout: 10)
    }

    /// Runs every read check in one qemu-io; `ok` is false on any mismatch or error.
    static func verify(_ path: String, _ checks: [(UInt8, String, String)], format: String = "qcow2") throws -> (ok: Bool, output: String) {
        var args = ["-r", "-f", format]
        for (pattern, offset, length) in checks {
            args += ["-c", "read -P \(hex(pattern)) \(offset) \(length)"]
        }
        args.append(path)
        let result = try QEMUTools.run("qemu-io", args)
        let output = result.stdout + result.stderr
        let reads = output.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("read ") }.count
        let ok = result.status == 0 && reads == checks.count && !output.contains("Pattern verification failed")
            && !output.lowercased().contains("error")
        return (ok, output)
    }

    /// The transitions among `events`, of the plan and of each disk, form one unbroken chain
    /// each (each starts where the previous ended).
    static func expectUnbrokenChains(_ events: [EventRecord], _ context: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let transitions = events.filter { $0.kind == .transition }
        for subject in Set(transitions.map(\.diskId)) {
            let chain = transitions.filter { $0.diskId == subject }
            let text = chain.map { "\($0.from ?? "∅")→\($0.to ?? "∅")" }.joined(separator: ", ")
            for (previous, next) in zip(chain, chain.dropFirst()) {
                #expect(next.from == previous.to, "[\(context)] \(subject.map { "disk \($0)" } ?? "plan"): \(text)",
                        sourceLocation: sourceLocation)
            }
        }
    }

    static func hex(_ pattern: UInt8) -> String {
        let digits = String(pattern, radix: 16)
        return "0x" + (digits.count == 1 ? "0" + digits : digits)
    }

    /// One VM with one qcow2 disk holding `dataMiB` MiB of 0x11 written offline, a plan
    /// moving it to `new/dst.qcow2`, and the policy given.
    ///
    /// Guest writes go to numbered slots: slot i is 64 KiB at 4M + i×64k (over the
    /// offline data) plus 64 KiB at 40M + i×128k (an area the source never had).
    final class Rig {
        static let slots = 8
        let scratch: TemporaryDirectory
        var vm: QEMUVirtualMachine
        let source: String
        let destination: String
        let planPath: String
        let database: String
        let livecopy: LivecopyProcess
        let dataMiB: Int
        /// The destination's format (`format:` in the plan when not qcow2).
        let destinationFormat: String
        /// The pattern last written to each slot, nil if never.
        var written: [UInt8?] = Array(repeating: nil, count: Rig.slots)
        private var openedStore: SQLiteStore?

        /// `destination` replaces `new/dst.qcow2` (a block device, say); `format` is the
        /// plan disk's `format:` (nil: none written, so qcow2).
        init(_ prefix: String, dataMiB: Int, policy: String, destination: String? = nil, format: String? = nil) throws {
            scratch = try TemporaryDirectory(prefix: prefix)
            try FileManager.default.createDirectory(atPath: scratch.appending("new"), withIntermediateDirectories: true)
            self.dataMiB = dataMiB
            source = scratch.appending("src.qcow2")
            self.destination = destination ?? scratch.appending("new/dst.\(format ?? "qcow2")")
            destinationFormat = format ?? (destination.map(isBlockDevice) == true ? "raw" : "qcow2")
            planPath = scratch.appending("plan.yaml")
            database = scratch.appending("livecopy.db")
            livecopy = LivecopyProcess(database: database)
            try QEMUImage.create(source, size: "64M")
            try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "\(dataMiB)M")
            vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: source, format: "qcow2")])
            try policy.write(toFile: scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)
            let plan = """
                name: recovery
                policy: ./policy.yaml
                vms:
                  - name: vm
                    qmp: \(vm.livecopySocket)
                    disks:
                      - device: drive0
                        destination: \(self.destination)
                """ + (format.map { "\n        format: \($0)" } ?? "")
            try plan.write(toFile: planPath, atomically: true, encoding: .utf8)
        }

        /// Writes slot 0, runs `submit` until it dies just after starting the stream (the job
        /// runs on in QEMU), then writes slot 1 into the destination. Returns the plan's id.
        func submitDyingMidStream(_ context: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> Int64 {
            try await write(slot: 0)
            let submit = try await livecopy.run(["submit", planPath], environment: ["LIVECOPY_CRASH_AT": "outcome:block-stream"])
            #expect(submit.status == RecoveryIntegrationTests.crashStatus, "\(context) submit: \(submit.status)\n\(submit.stderr)",
                    sourceLocation: sourceLocation)
            try await write(slot: 1)
            return try planId()
        }

        /// A flushed guest write of pattern 0x21+slot to the slot's two areas.
        func write(slot: Int) async throws {
            let pattern = UInt8(0x21 + slot)
            try await vm.guestWrite(drive: "drive0", pattern: pattern, offset: "\(4096 + slot * 64)k", length: "64k")
            try await vm.guestWrite(drive: "drive0", pattern: pattern, offset: "\(40960 + slot * 128)k", length: "64k")
            written[slot] = pattern
        }

        /// `write(slot:)` without waiting for the writes (HMP `aio_write`), for a moment when
        /// a blocking write would hold QEMU's main loop (a mirror's pivot waiting in
        /// `pending`); `vm.guestFlushAll` later waits for them.
        func writeWithoutWaiting(slot: Int) async throws {
            let pattern = UInt8(0x21 + slot)
            try await vm.guestWriteWithoutWaiting(drive: "drive0", pattern: pattern, offset: "\(4096 + slot * 64)k", length: "64k")
            try await vm.guestWriteWithoutWaiting(drive: "drive0", pattern: pattern, offset: "\(40960 + slot * 128)k", length: "64k")
            written[slot] = pattern
        }

        /// Everything the image must read back: offline data, slots, zeroes elsewhere.
        var expectedChecks: [(UInt8, String, String)] {
            var checks: [(UInt8, String, String)] = [(0x11, "0", "4M")]
            for slot in 0..<Rig.slots {
                checks.append((written[slot] ?? 0x11, "\(4096 + slot * 64)k", "64k"))
                if let pattern = written[slot] {
                    checks.append((pattern, "\(40960 + slot * 128)k", "64k"))
                }
            }
            let tail = 4096 + Rig.slots * 64
            checks.append((0x11, "\(tail)k", "\(dataMiB * 1024 - tail)k"))
            checks.append((0, "\(dataMiB)M", "1M"))  // never written
            return checks
        }

        func expectDestinationHoldsEverything(_ context: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let result = try RecoveryIntegrationTests.verify(destination, expectedChecks, format: destinationFormat)
            #expect(result.ok, "[\(context)] the destination lacks data:\n\(result.output)", sourceLocation: sourceLocation)
            let info = try QEMUImage.info(destination, format: destinationFormat)
            #expect(info.backingFilename == nil, "[\(context)] the destination stands alone, backing \(info.backingFilename ?? "")",
                    sourceLocation: sourceLocation)
        }

        func expectSourceHoldsEverything(_ context: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let result = try RecoveryIntegrationTests.verify(source, expectedChecks)
            #expect(result.ok, "[\(context)] the source lacks data:\n\(result.output)", sourceLocation: sourceLocation)
            let info = try QEMUImage.info(source)
            #expect(info.backingFilename == nil, "[\(context)] the source stands alone", sourceLocation: sourceLocation)
        }

        /// The store, opened once the database exists.
        func store() throws -> SQLiteStore {
            if let openedStore { return openedStore }
            guard FileManager.default.fileExists(atPath: database) else { throw WaitTimeout(what: "the database to exist") }
            let store = try SQLiteStore(path: database)
            openedStore = store
            return store
        }

        /// The timeline of the plan and of each disk is one unbroken chain of transitions
        /// (each starts where the previous ended): no step was recorded twice or skipped.
        func expectUnbrokenTimeline(_ context: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            RecoveryIntegrationTests.expectUnbrokenChains(try store().events(ofPlan: try planId()), context,
                                                          sourceLocation: sourceLocation)
        }

        /// The id of the (only) plan.
        func planId() throws -> Int64 {
            guard let plan = try store().plans(states: nil, vm: nil, limit: 1).first else { throw WaitTimeout(what: "a plan") }
            return plan.id
        }

        /// The VM's active image of drive0 and its backing file, per the test monitor.
        func activeImage() async throws -> (file: String?, backing: String?) {
            let inserted = try await vm.testMonitor().queryBlock().first { $0.device == "drive0" }?.inserted
            // A block device larger than the disk is opened limited to the disk's size,
            // which QEMU names `json:{"driver": "raw", "size": …, "file": {… "filename": DEV}}`.
            if let file = inserted?.file, file.hasPrefix("json:"), file.contains("\"filename\": \"\(destination)\"") {
                return (destination, inserted?.backingFile)
            }
            return (inserted?.file, inserted?.backingFile)
        }

        /// livecopy's copy job in QEMU (its stream or its mirror), if any.
        func streamJob() async throws -> JobInfo? {
            try await vm.testMonitor().queryJobs().first { $0.id.hasPrefix("livecopy-stream-") || $0.id.hasPrefix("livecopy-mirror-") }
        }

        /// Polls `query-jobs` until livecopy's stream job has one of `status`.
        @discardableResult
        func waitForStreamJob(status: Set<String>, timeout: Double = 30) async throws -> JobInfo {
            let deadline = Date().addingTimeInterval(timeout)
            var last = "none"
            while Date() < deadline {
                if let job = try await streamJob() {
                    if status.contains(job.status.description) { return job }
                    last = job.status.description
                }
                try await Task.sleep(for: .milliseconds(30))
            }
            throw WaitTimeout(what: "the stream job is \(status.sorted()) (last seen: \(last))")
        }
    }
}
