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

/// `retire_source: quarantine`, `livecopy purge` and `livecopy restore` against real QEMU
/// through the built binary: the source kept whole in quarantine and shown by `status`;
/// purge waiting for expiry and refusing a file held open or replaced; restore refusing
/// while the VM runs or the path is taken, and working once the VM is off; a crash at the
/// intent and right after the side effect of each, finished by the next run with nothing
/// lost or done twice; bad input refused in one line.
@Suite(.serialized, .requires(.qemu))
struct QuarantineIntegrationTests {
    typealias Rig = RecoveryIntegrationTests.Rig
    static let crashStatus = RecoveryIntegrationTests.crashStatus

    static func policy(quarantineFor: String) -> String {
        "retire_source: quarantine\nquarantine_for: \(quarantineFor)\nprogress_interval: 200ms\n"
    }

    /// Where the rig's source goes: plan 1, disk 1.
    static func quarantinePath(_ rig: Rig) -> String { rig.scratch.appending(".livecopy-quarantine/1-1-src.qcow2") }

    /// Writes slot 0 into the source, saves a copy of the source as it is then
    /// (`saved.qcow2`, the data the quarantined image must hold), runs `submit` (dying at
    /// `point` if given), then writes slot 1 into the destination. Returns the plan's id.
    static func copy(_ rig: Rig, dyingAt point: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws -> Int64 {
        try await rig.write(slot: 0)  // flushed: the source file holds it
        try FileManager.default.copyItem(atPath: rig.source, toPath: saved(rig))
        let submit = try await rig.livecopy.run(["submit", rig.planPath],
                                                environment: point.map { ["LIVECOPY_CRASH_AT": $0] } ?? [:])
        #expect(submit.status == (point == nil ? 0 : crashStatus), "submit \(point ?? ""): \(submit.status)\n\(submit.stderr)",
                sourceLocation: sourceLocation)
        try await rig.write(slot: 1)
        return try rig.planId()
    }

    static func saved(_ rig: Rig) -> String { rig.scratch.appending("saved.qcow2") }

    /// `qemu-img compare` of `path` with the saved source: the guest sees the same bytes.
    static func expectSavedData(in path: String, _ rig: Rig, _ context: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let compare = try QEMUTools.run("qemu-img", ["compare", "-f", "qcow2", "-F", "qcow2", saved(rig), path])
        #expect(compare.status == 0, "[\(context)] \(path) differs from the source as it was: \(compare.stdout)\(compare.stderr)",
                sourceLocation: sourceLocation)
        let reads = try RecoveryIntegrationTests.verify(path, [(0x11, "0", "4M"), (0x21, "4096k", "64k"), (0x11, "4160k", "64k"),
                                                              (0x21, "40960k", "64k"), (0, "41088k", "64k")])
        #expect(reads.ok, "[\(context)] \(path): the slot written before the copy, not the one after:\n\(reads.output)",
                sourceLocation: sourceLocation)
    }

    static func identity(_ path: String) -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// Waits until `image`'s time is up (a lower bound only: never fails for being slow).
    static func waitForExpiry(_ image: QuarantinedImage) async throws {
        while Date() <= image.expiresAt.addingTimeInterval(0.05) {
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The disk's events of `kind` whose detail starts with `action:`.
    static func events(_ rig: Rig, _ kind: EventKind, _ action: String) throws -> [EventRecord] {
        try rig.store().events(ofPlan: try rig.planId()).filter { $0.kind == kind && $0.detail.hasPrefix("\(action):") }
    }

    // MARK: - The copy

    @Test(.timeLimit(.minutes(2)))
    func aQuarantinedSourceKeepsItsDataStatusShowsItAndPurgeWaitsForItsTime() async throws {
        let rig = try Rig("lc-quarantine", dataMiB: 8, policy: Self.policy(quarantineFor: "1h"))
        defer { rig.scratch.remove() }
        let planId = try await Self.copy(rig)
        let quarantined = Self.quarantinePath(rig)

        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed)
        #expect(!FileManager.default.fileExists(atPath: rig.source), "the source left its path")
        #expect(!FileManager.default.fileExists(atPath: rig.source + ".retired"))
        #expect(FileManager.default.fileExists(atPath: quarantined), "the source is in quarantine")
        var info = stat()
        #expect(lstat(rig.scratch.appending(".livecopy-quarantine"), &info) == 0 && info.st_mode & 0o7777 == 0o700,
                "the quarantine directory is owner-only: \(String(info.st_mode & 0o7777, radix: 8))")
        try Self.expectSavedData(in: quarantined, rig, "quarantined")

        let image = try #require(try rig.store().quarantinedImage(ofDisk: 1))
        #expect(image.state == .held && image.originalPath == rig.source && image.quarantinePath == quarantined)
        let numbers = try #require(Self.identity(quarantined))
        #expect(image.device == numbers.device && image.inode == numbers.inode, "the row names the file by its numbers")
        #expect(abs(image.expiresAt.timeIntervalSince(image.quarantinedAt) - 3600) < 0.01, "quarantine_for: 1h")
        #expect(image.sizeBytes > 8 << 20, "the space it holds: \(image.sizeBytes)")
        let completed = try rig.store().events(ofPlan: planId).first { $0.kind == .transition && $0.to == "completed" && $0.diskId != nil }
        #expect(completed?.detail.contains("source quarantined: moved to \(quarantined)") == true, "\(completed?.detail ?? "")")

        let status = try await rig.livecopy.run(["status"])
        #expect(status.status == 0)
        #expect(status.stdout.contains("quarantine: 1 source held, \(ByteSize.format(image.sizeBytes)), next expiry \(ISO8601.string(image.expiresAt))"),
                "status shows what quarantine holds:\n\(status.stdout)")
        let show = try await rig.livecopy.run(["show", String(planId)])
        #expect(show.stdout.contains("held       \(quarantined) ← \(rig.source)") && show.stdout.contains("expires \(ISO8601.string(image.expiresAt))"),
                "show lists the plan's quarantined source:\n\(show.stdout)")
        let json = try await rig.livecopy.run(["show", String(planId), "--json"])
        let document = try JSONDecoder().decode(PlanDocument.self, from: Data(json.stdout.utf8))
        #expect(document.quarantined?.map(\.quarantinePath) == [quarantined] && document.quarantined?.first?.state == "held"
                && document.quarantined?.first?.diskId == 1, "\(json.stdout)")

        // Not expired: purge deletes nothing, records nothing.
        let purge = try await rig.livecopy.run(["purge"])
        #expect(purge.status == 0 && purge.stdout.hasPrefix("nothing to purge"), "\(purge.status): \(purge.stdout)\(purge.stderr)")
        let dryRun = try await rig.livecopy.run(["purge", "--dry-run", "--all"])
        #expect(dryRun.status == 0 && dryRun.stdout.contains("would purge \(quarantined)"), "\(dryRun.stdout)\(dryRun.stderr)")
        #expect(FileManager.default.fileExists(atPath: quarantined), "nothing was purged")
        #expect(try rig.store().quarantinedImage(ofDisk: 1)?.state == .held)
        #expect(try Self.events(rig, .intent, "purge").isEmpty, "no purge was even announced")

        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("quarantine")
        try rig.expectUnbrokenTimeline("quarantine")
    }

    // MARK: - purge

    @Test(.timeLimit(.minutes(2)))
    func purgeRefusesAFileHeldOpenOrReplacedThenDeletesTheOneItQuarantined() async throws {
        let rig = try Rig("lc-purge", dataMiB: 8, policy: Self.policy(quarantineFor: "1s"))
        defer { rig.scratch.remove() }
        _ = try await Self.copy(rig)
        let quarantined = Self.quarantinePath(rig)
        let image = try #require(try rig.store().quarantinedImage(ofDisk: 1))
        try await Self.waitForExpiry(image)

        // Held open by another process (this test): refused, in one line, nothing touched.
        let holder = try FileHandle(forReadingFrom: URL(fileURLWithPath: quarantined))
        let held = try await rig.livecopy.run(["purge"])
        try holder.close()
        #expect(held.status == 1, "purge must refuse: \(held.status)\n\(held.stderr)")
        #expect(held.stderr.split(separator: "\n").count == 1 && held.stderr.contains("not purging \(quarantined)")
                && held.stderr.contains("holds it open"), "\(held.stderr)")
        #expect(FileManager.default.fileExists(atPath: quarantined))
        #expect(try rig.store().quarantinedImage(ofDisk: 1)?.state == .held)

        // Another file at its path (a copy: another inode): refused.
        let aside = rig.scratch.appending(".livecopy-quarantine/aside")
        #expect(rename(quarantined, aside) == 0)
        try FileManager.default.copyItem(atPath: aside, toPath: quarantined)
        let replaced = try await rig.livecopy.run(["purge"])
        #expect(replaced.status == 1, "purge must refuse another file: \(replaced.stderr)")
        #expect(replaced.stderr.split(separator: "\n").count == 1 && replaced.stderr.contains("not the file livecopy quarantined"),
                "\(replaced.stderr)")
        #expect(FileManager.default.fileExists(atPath: quarantined) && FileManager.default.fileExists(atPath: aside), "nothing deleted")
        #expect(try Self.events(rig, .intent, "purge").isEmpty, "a refusal at the first look records nothing")

        // The very file back: purged.
        try FileManager.default.removeItem(atPath: quarantined)
        #expect(rename(aside, quarantined) == 0)
        let purge = try await rig.livecopy.run(["purge"])
        #expect(purge.status == 0, "purge: \(purge.stderr)")
        #expect(purge.stdout.contains("purged \(quarantined)"), "\(purge.stdout)")
        #expect(!FileManager.default.fileExists(atPath: quarantined), "the quarantined source is deleted")
        let purged = try #require(try rig.store().quarantinedImage(ofDisk: 1))
        #expect(purged.state == .purged && purged.endedAt != nil)
        #expect(try Self.events(rig, .intent, "purge").count == 1 && Self.events(rig, .outcome, "purge").count == 1)
        let status = try await rig.livecopy.run(["status"])
        #expect(!status.stdout.contains("quarantine:"), "nothing held any more:\n\(status.stdout)")
        let again = try await rig.livecopy.run(["purge", "--all"])
        #expect(again.status == 0 && again.stdout.hasPrefix("nothing to purge"), "\(again.stdout)")

        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("purged")
    }

    @Test(.timeLimit(.minutes(3)), arguments: CrashPoint.purgeNames)
    func aPurgeInterruptedIsFinishedByTheNextOne(point: String) async throws {
        let rig = try Rig("lc-purge-crash", dataMiB: 8, policy: Self.policy(quarantineFor: "1s"))
        defer { rig.scratch.remove() }
        _ = try await Self.copy(rig)
        let quarantined = Self.quarantinePath(rig)
        try await Self.waitForExpiry(try #require(try rig.store().quarantinedImage(ofDisk: 1)))

        let crashed = try await rig.livecopy.run(["purge"], environment: ["LIVECOPY_CRASH_AT": point])
        #expect(crashed.status == Self.crashStatus, "[\(point)] \(crashed.status): \(crashed.stderr)")
        #expect(try rig.store().quarantinedImage(ofDisk: 1)?.state == .purging, "[\(point)] the intent is recorded")
        #expect(FileManager.default.fileExists(atPath: quarantined) == (point == "intent:purge"), "[\(point)]")

        let purge = try await rig.livecopy.run(["purge"])
        #expect(purge.status == 0, "[\(point)] \(purge.stderr)")
        #expect(!FileManager.default.fileExists(atPath: quarantined), "[\(point)]")
        #expect(try rig.store().quarantinedImage(ofDisk: 1)?.state == .purged, "[\(point)]")
        let outcomes = try Self.events(rig, .outcome, "purge").map(\.detail)
        #expect(try Self.events(rig, .intent, "purge").count == 1 && outcomes.count == 1, "[\(point)] once each: \(outcomes)")
        if point == "sent:purge" {
            #expect(outcomes.first?.contains("already purged by the interrupted attempt") == true, "[\(point)] \(outcomes)")
        }
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("purge \(point)")
    }

    // MARK: - restore

    @Test(.timeLimit(.minutes(2)))
    func restoreRefusesWhileTheVMRunsOrThePathIsTakenAndWorksOnceTheVMIsOff() async throws {
        let rig = try Rig("lc-restore", dataMiB: 8, policy: Self.policy(quarantineFor: "1h"))
        defer { rig.scratch.remove() }
        let planId = try await Self.copy(rig)
        let quarantined = Self.quarantinePath(rig)
        let numbers = try #require(Self.identity(quarantined))

        let running = try await rig.livecopy.run(["restore", "1"])
        #expect(running.status == 1, "restore must refuse while the VM runs: \(running.stderr)")
        #expect(running.stderr.split(separator: "\n").count == 1 && running.stderr.contains("VM 'vm' is running"), "\(running.stderr)")
        #expect(FileManager.default.fileExists(atPath: quarantined) && !FileManager.default.fileExists(atPath: rig.source))

        await rig.vm.stop()
        // Off, but another process holds the destination (a VM started some other way).
        let holder = try FileHandle(forReadingFrom: URL(fileURLWithPath: rig.destination))
        let held = try await rig.livecopy.run(["restore", "1"])
        try holder.close()
        #expect(held.status == 1 && held.stderr.contains("holds the disk's destination"), "\(held.stderr)")

        // Off, but the original path is taken: never overwritten.
        try "precious".write(toFile: rig.source, atomically: false, encoding: .utf8)
        let taken = try await rig.livecopy.run(["restore", "1"])
        #expect(taken.status == 1 && taken.stderr.split(separator: "\n").count == 1 && taken.stderr.contains("something is at \(rig.source)"),
                "\(taken.stderr)")
        #expect(try String(contentsOfFile: rig.source, encoding: .utf8) == "precious")
        #expect(try Self.events(rig, .intent, "restore").isEmpty, "a refusal at the first look records nothing")
        try FileManager.default.removeItem(atPath: rig.source)

        let restore = try await rig.livecopy.run(["restore", "1"])
        #expect(restore.status == 0, "restore: \(restore.stderr)")
        #expect(restore.stdout.contains("must now boot vm/drive0 from \(rig.source)"), "\(restore.stdout)")
        #expect(!FileManager.default.fileExists(atPath: quarantined))
        let back = try #require(Self.identity(rig.source))
        #expect(back.device == numbers.device && back.inode == numbers.inode, "the very file is back")
        try Self.expectSavedData(in: rig.source, rig, "restored")
        let image = try #require(try rig.store().quarantinedImage(ofDisk: 1))
        #expect(image.state == .restored && image.endedAt != nil)
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed, "the disk stays completed")
        let outcome = try Self.events(rig, .outcome, "restore").map(\.detail)
        #expect(outcome.count == 1 && outcome.first?.contains("must now boot vm/drive0 from \(rig.source)") == true, "\(outcome)")
        let show = try await rig.livecopy.run(["show", String(planId)])
        #expect(show.stdout.contains("intent: restore: \(quarantined) → \(rig.source)"), "the disk's timeline:\n\(show.stdout)")

        let again = try await rig.livecopy.run(["restore", "1"])
        #expect(again.status == 0 && again.stdout.contains("already"), "\(again.stdout)\(again.stderr)")
        let purge = try await rig.livecopy.run(["purge", "--all"])
        #expect(purge.status == 0 && purge.stdout.hasPrefix("nothing to purge"), "a restored source is not purged: \(purge.stdout)")
        #expect(FileManager.default.fileExists(atPath: rig.source))
        try rig.expectDestinationHoldsEverything("restored: the destination is left as it is")
    }

    @Test(.timeLimit(.minutes(3)), arguments: CrashPoint.restoreNames)
    func aRestoreInterruptedIsFinishedByTheNextOne(point: String) async throws {
        let rig = try Rig("lc-restore-crash", dataMiB: 8, policy: Self.policy(quarantineFor: "1h"))
        defer { rig.scratch.remove() }
        _ = try await Self.copy(rig)
        let quarantined = Self.quarantinePath(rig)
        await rig.vm.stop()

        let crashed = try await rig.livecopy.run(["restore", "1"], environment: ["LIVECOPY_CRASH_AT": point])
        #expect(crashed.status == Self.crashStatus, "[\(point)] \(crashed.status): \(crashed.stderr)")
        #expect(try rig.store().quarantinedImage(ofDisk: 1)?.state == .restoring, "[\(point)]")
        #expect(FileManager.default.fileExists(atPath: rig.source) == (point == "sent:restore"), "[\(point)]")

        let restore = try await rig.livecopy.run(["restore", "1"])
        #expect(restore.status == 0, "[\(point)] \(restore.stderr)")
        #expect(try rig.store().quarantinedImage(ofDisk: 1)?.state == .restored, "[\(point)]")
        #expect(!FileManager.default.fileExists(atPath: quarantined), "[\(point)]")
        try Self.expectSavedData(in: rig.source, rig, "restore \(point)")
        let outcomes = try Self.events(rig, .outcome, "restore").map(\.detail)
        #expect(try Self.events(rig, .intent, "restore").count == 1 && outcomes.count == 1, "[\(point)] once each: \(outcomes)")
        if point == "sent:restore" {
            #expect(outcomes.first?.contains("already restored by the interrupted attempt") == true, "[\(point)] \(outcomes)")
        }
        try rig.expectDestinationHoldsEverything("restore \(point)")
    }

    // MARK: - The quarantine step itself

    @Test(.timeLimit(.minutes(3)), arguments: ["intent:quarantine-source", "sent:quarantine-source"])
    func aQuarantineInterruptedIsFinishedByRecover(point: String) async throws {
        #expect(CrashPoint.forwardNames(retiring: .quarantine).contains(point))
        let rig = try Rig("lc-quarantine-crash", dataMiB: 8, policy: Self.policy(quarantineFor: "1h"))
        defer { rig.scratch.remove() }
        let planId = try await Self.copy(rig, dyingAt: point)
        let quarantined = Self.quarantinePath(rig)
        #expect(FileManager.default.fileExists(atPath: quarantined) == (point == "sent:quarantine-source"), "[\(point)]")
        #expect(try rig.store().quarantinedImages(ofPlan: planId).isEmpty, "[\(point)] not recorded before the move to completed")

        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "[\(point)] recover: \(recover.stderr)")
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed, "[\(point)]")
        #expect(!FileManager.default.fileExists(atPath: rig.source), "[\(point)]")
        try Self.expectSavedData(in: quarantined, rig, "quarantine \(point)")
        let images = try rig.store().quarantinedImages(ofPlan: planId)
        #expect(images.count == 1, "[\(point)] one row: \(images)")
        let numbers = try #require(Self.identity(quarantined))
        #expect(images.first?.inode == numbers.inode && images.first?.device == numbers.device, "[\(point)]")
        let details = try rig.store().events(ofPlan: planId).map(\.detail)
        #expect(!details.contains { $0.contains("was gone before livecopy quarantined it") }, "[\(point)] livecopy itself moved it")
        if point == "sent:quarantine-source" {
            #expect(details.contains { $0.contains("already quarantined by the interrupted attempt") }, "[\(point)]")
        }
        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("quarantine \(point)")
        try rig.expectUnbrokenTimeline("quarantine \(point)")
    }

    /// The quarantine directory turned into a symlink after the copy started: the step
    /// refuses (needs_attention) and moves nothing; once it is a real directory again,
    /// `recover` finishes.
    @Test(.timeLimit(.minutes(2)))
    func aQuarantineDirectoryThatIsASymlinkIsRefused() async throws {
        let rig = try Rig("lc-quarantine-link", dataMiB: 8, policy: Self.policy(quarantineFor: "1h"))
        defer { rig.scratch.remove() }
        let planId = try await Self.copy(rig, dyingAt: "transition:retiring")
        let elsewhere = rig.scratch.appending("elsewhere")
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: rig.scratch.appending(".livecopy-quarantine"), withDestinationPath: elsewhere)

        let refused = try await rig.livecopy.run(["recover"])
        #expect(refused.status != 0, "recover must refuse: \(refused.stderr)")
        let disk = try #require(try rig.store().disks(ofPlan: planId).first)
        #expect(disk.state == .needsAttention && (disk.error ?? "").contains("is a symlink"), "\(disk.state): \(disk.error ?? "")")
        #expect(FileManager.default.fileExists(atPath: rig.source), "the source was not moved")
        #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere).isEmpty)

        try FileManager.default.removeItem(atPath: rig.scratch.appending(".livecopy-quarantine"))
        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "recover: \(recover.stderr)")
        #expect(try rig.store().disks(ofPlan: planId).first?.state == .completed)
        try Self.expectSavedData(in: Self.quarantinePath(rig), rig, "after the symlink")
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("after the symlink")
    }

    // MARK: - Bad input

    @Test func badQuarantineInputIsOneLineAndTouchesNothing() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-q-bad")
        defer { scratch.remove() }
        let (livecopy, source, vm, planPath) = try await BadInputTests.refusalRig(scratch)
        defer { vm.stop() }
        _ = FileManager.default.createFile(atPath: source, contents: Data("source".utf8))
        let destination = scratch.appending("d.qcow2")
        for value in ["0s", "abc"] {
            try "retire_source: quarantine\nquarantine_for: \(value)\n".write(toFile: scratch.appending("p.yaml"), atomically: true, encoding: .utf8)
            try BadInputTests.plan(socket: vm.socketPath, destination: destination, extra: "policy: ./p.yaml\n")
                .write(toFile: planPath, atomically: true, encoding: .utf8)
            try await BadInputTests.expectRefusal(livecopy, ["submit", planPath], "'quarantine_for' has invalid value '\(value)'")
        }
        #expect(!FileManager.default.fileExists(atPath: livecopy.database), "no database was made")

        // A quarantine directory that is a symlink: refused at preflight.
        try FileManager.default.createSymbolicLink(atPath: scratch.appending(".livecopy-quarantine"), withDestinationPath: "/tmp")
        try "retire_source: quarantine\n".write(toFile: scratch.appending("p.yaml"), atomically: true, encoding: .utf8)
        try await BadInputTests.expectRefusal(livecopy, ["submit", planPath], "cannot quarantine the source")
        #expect(Set(vm.receivedCommandNames).isSubset(of: BadInputTests.readOnlyCommands))
        #expect(!FileManager.default.fileExists(atPath: destination))
        #expect(try String(contentsOfFile: source, encoding: .utf8) == "source")

        try await BadInputTests.expectRefusal(livecopy, ["restore", "7"], "no disk with id 7")
        try await BadInputTests.expectRefusal(livecopy, ["restore", "1"], "has no quarantined source (its plan's retire_source is quarantine)")
        let purge = try await livecopy.run(["purge"])
        #expect(purge.status == 0 && purge.stdout == "nothing to purge (0 held in quarantine)\n", "\(purge.stdout)\(purge.stderr)")
        let mistyped = scratch.appending("typo/livecopy.db")
        for arguments in [["purge"], ["restore", "1"]] {
            try await BadInputTests.expectRefusal(LivecopyProcess(database: mistyped), arguments, "no database at \(mistyped)")
        }
        try await BadInputTests.expectNothingInProgress(livecopy)
    }
}

/// `restore` for a libvirt domain: livecopy asks libvirt whether the domain runs
/// (`virDomainIsActive`), and restores only once it does not.
@Suite(.serialized, .requires(.libvirt, .qemu))
struct QuarantineLibvirtTests {
    @Test(.timeLimit(.minutes(4)))
    func restoreWaitsUntilLibvirtSaysTheDomainIsNotRunning() async throws {
        let rig = try LibvirtIntegrationTests.Rig(
            "quarantine", targets: ["vda"], policy: "retire_source: quarantine\nquarantine_for: 1h\nprogress_interval: 200ms\n")
        defer { rig.remove() }
        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        #expect(submit.status == 0, "submit: \(submit.stderr)")
        let source = try #require(rig.sources["vda"])
        let quarantined = rig.scratch.appending(".livecopy-quarantine/1-1-vda.qcow2")
        #expect(!FileManager.default.fileExists(atPath: source) && FileManager.default.fileExists(atPath: quarantined))
        #expect(rig.owner(of: quarantined) == geteuid(), "the quarantined source is handed back to livecopy's user")

        let running = try await rig.livecopy.run(["restore", "1"])
        #expect(running.status == 1 && running.stderr.contains("says domain '\(rig.domain.name)' is active"), "\(running.stderr)")
        #expect(FileManager.default.fileExists(atPath: quarantined))

        try rig.domain.destroy()
        let restore = try await rig.livecopy.run(["restore", "1"])
        #expect(restore.status == 0, "restore: \(restore.stderr)")
        #expect(restore.stdout.contains("must now boot quarantine/vda from \(source)"), "\(restore.stdout)")
        #expect(FileManager.default.fileExists(atPath: source) && !FileManager.default.fileExists(atPath: quarantined))
        #expect(try QEMUImage.verify(source, pattern: 0x11, offset: "0", length: "16M"))
        #expect(try QEMUImage.verify(source, pattern: 0x30, offset: "20M", length: "1M"), "the write before the copy")
        try rig.expectDestinationsHold(slots: 0...0)
    }
}
