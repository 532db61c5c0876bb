import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import TestSupport
import Testing

// MirrorIntegrationTests, continued: two disks pivoting together, refused destinations,
// failures (ENOSPC, a VM on the wrong image, an unconfirmed flush at the pivot),
// operator controls and the VM's cache mode.
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

extension MirrorIntegrationTests {
    // MARK: - 10. A flush QEMU does not confirm at the pivot

    /// The destination's flush before `block-job-complete` (1), or the second one while
    /// the job waits in `pending` (2), is answered "Error flushing drive" (a proxy in front
    /// of the real QEMU's monitor replaces that one reply). Nothing pivots: the VM stays
    /// on its source, (2) cancels the completed job so the guest's I/O goes on, and
    /// `recover` finishes once flushes are confirmed again.
    @Test(.timeLimit(.minutes(2)), arguments: [1, 2])
    func aFlushNotConfirmedAtThePivotLeavesTheVMOnItsSource(failing occurrence: Int) async throws {
        let rig = try Rig("lc-mirror-flush", dataMiB: 8, policy: Self.policy(), format: "raw")
        defer { rig.scratch.remove() }
        let flushes = Counter()
        let proxy = try QMPProxy(socketPath: rig.scratch.appending("proxy.qmp"), upstream: rig.vm.livecopySocket) { name, arguments in
            guard name == "human-monitor-command", let line = arguments["command-line"] as? String,
                  line.contains("livecopy-dst-"), line.contains("reopen"), flushes.next() == occurrence else { return nil }
            return ["return": "Error flushing drive: Input/output error (injected by the test)\r\n"]
        }
        defer { proxy.stop() }
        let plan = try String(contentsOfFile: rig.planPath, encoding: .utf8)
        try plan.replacingOccurrences(of: rig.vm.livecopySocket, with: proxy.socketPath)
            .write(toFile: rig.planPath, atomically: true, encoding: .utf8)

        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        #expect(submit.status != 0, "submit: \(submit.stderr)")
        let planId = try rig.planId()
        let disk = try #require(try rig.store().disks(ofPlan: planId).first)
        #expect(disk.state == .failed && disk.pivoted == false, "\(disk.state.rawValue)")
        #expect((disk.error ?? "").contains("before the pivot failed") && (disk.error ?? "").contains("injected by the test"),
                "\(disk.error ?? "")")
        #expect(try await rig.activeImage().file == rig.source, "the VM stays on its source")
        let job = try await rig.streamJob()
        if occurrence == 1 {
            #expect(job?.status == "ready", "the job waits, READY, for the next attempt: \(job?.status ?? "none")")
        } else {
            #expect(job == nil, "the completed job was cancelled, not left holding the guest's I/O")
            let nodes = try await rig.vm.testMonitor().execute("query-named-block-nodes")
            #expect(!(nodes.arrayValue ?? []).contains { $0["node-name"]?.stringValue?.hasPrefix("livecopy-dst-") == true },
                    "QEMU let go of the destination")
        }
        try await rig.write(slot: 1)  // the guest's I/O goes on, into the source

        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "recover: \(recover.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .completed)
        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("flush \(occurrence) not confirmed")
    }
}

extension MirrorIntegrationTests {
    // MARK: - 11. The VM keeps its cache mode

    /// A `cache=none` VM (O_DIRECT, as production VMs often run) with `detect-zeroes=on`
    /// is still `cache=none` with `detect-zeroes=on` after the pivot onto the mirror's
    /// destination.
    @Test(.timeLimit(.minutes(2)))
    func theVMKeepsItsCacheModeAndZeroDetectionAfterThePivot() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-mirror-cache")
        defer { scratch.remove() }
        let source = scratch.appending("src.qcow2")
        try QEMUImage.create(source, size: "64M")
        try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "8M")
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [], extraArguments: [
            "-drive", "if=none,id=drive0,format=qcow2,file=\(source),cache=none,detect-zeroes=on",
        ])
        func settings() async throws -> (file: String?, direct: Bool?, detectZeroes: String?) {
            let inserted = try await vm.testMonitor().execute("query-block").arrayValue?.first?["inserted"]
            return (inserted?["file"]?.stringValue, inserted?["cache"]?["direct"]?.boolValue, inserted?["detect_zeroes"]?.stringValue)
        }
        let before = try await settings()
        #expect(before.direct == true && before.detectZeroes == "on", "the VM starts with cache=none: \(before)")
        let destination = scratch.appending("dst.raw")
        try Self.policy().write(toFile: scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)
        try "policy: ./policy.yaml\nvms:\n  - name: vm\n    qmp: \(vm.livecopySocket)\n    disks:\n      - {device: drive0, destination: \(destination), format: raw}\n"
            .write(toFile: scratch.appending("plan.yaml"), atomically: true, encoding: .utf8)
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let submit = try await livecopy.run(["submit", scratch.appending("plan.yaml")])
        #expect(submit.status == 0, "submit: \(submit.stderr)")
        let after = try await settings()
        #expect(after.file == destination, "\(after)")
        #expect(after.direct == true && after.detectZeroes == "on", "the VM keeps cache=none and detect-zeroes=on: \(after)")
        try await vm.guestWrite(drive: "drive0", pattern: 0x22, offset: "32M", length: "64k")
        await vm.stop()
        let verified = try RecoveryIntegrationTests.verify(destination, [(0x11, "0", "8M"), (0x22, "32M", "64k")], format: "raw")
        #expect(verified.ok, "\(verified.output)")
    }
}

/// A thread-safe count.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    /// Adds one and returns the new count.
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}
