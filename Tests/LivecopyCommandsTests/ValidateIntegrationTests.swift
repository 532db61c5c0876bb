import Foundation
@testable import LivecopyCommands
import LivecopyModel
import LivecopyStore
import TestSupport
import Testing

/// `livecopy validate` against real QEMU: every problem at once, sizes from the images,
/// space summed per filesystem with the plans in progress, the order and the estimate;
/// and it records nothing and creates no file, the database included.
@Suite(.serialized, .requires(.qemu))
struct ValidateIntegrationTests {
    static let mib: Int64 = 1 << 20

    /// VM `vm1` in `scratch` with one qcow2 drive per entry of `disks` (`drive0`, …, each
    /// `src<i>.qcow2` of `size`, holding `written` MiB of pattern `firstPattern + i` at `offset`).
    static func vm(in scratch: TemporaryDirectory, disks: [(size: String, written: Int)], offset: String = "0",
                   firstPattern: UInt8) throws -> QEMUVirtualMachine {
        var drives: [(id: String, image: String, format: String)] = []
        for (index, disk) in disks.enumerated() {
            let source = scratch.appending("src\(index).qcow2")
            try QEMUImage.create(source, size: disk.size)
            try QEMUImage.write(source, pattern: firstPattern + UInt8(index), offset: offset, length: "\(disk.written)M")
            drives.append((id: "drive\(index)", image: source, format: "qcow2"))
        }
        return try QEMUVirtualMachine(name: "vm1", directory: scratch.url, drives: drives)
    }

    /// A plan file of `vms` (name, QMP socket, [(device, destination)]) with `policy`
    /// written next to it as `policy.yaml`; returns the plan's path.
    static func writePlan(in scratch: TemporaryDirectory, name: String = "plan", policy: String,
                          _ vms: [(String, String, [(String, String)])]) throws -> String {
        var text = "name: \(name)\npolicy: ./\(name)-policy.yaml\nvms:\n"
        for (vm, socket, disks) in vms {
            text += "  - name: \(vm)\n    qmp: \(socket)\n    disks:\n"
            for (device, destination) in disks { text += "      - device: \(device)\n        destination: \(destination)\n" }
        }
        try policy.write(toFile: scratch.appending("\(name)-policy.yaml"), atomically: true, encoding: .utf8)
        let path = scratch.appending("\(name).yaml")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// `validate PLAN --json`, decoded.
    static func validate(_ livecopy: LivecopyProcess, _ plan: String,
                         sourceLocation: SourceLocation = #_sourceLocation) async throws -> (LivecopyProcess.Result, ValidationDocument) {
        let result = try await livecopy.run(["validate", plan, "--json"])
        let document = try JSONDecoder().decode(ValidationDocument.self, from: Data(result.stdout.utf8))
        #expect(document.accepted == (result.status == 0), "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(document.problems.count == result.stderr.split(separator: "\n").count, "\(result.stderr)",
                sourceLocation: sourceLocation)
        return (result, document)
    }

    /// The database and SQLite's side files do not exist.
    static func expectNoDatabase(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for file in [path, path + "-wal", path + "-shm", path + "-journal"] {
            #expect(!FileManager.default.fileExists(atPath: file), "\(file) was created", sourceLocation: sourceLocation)
        }
    }

    @Test(.timeLimit(.minutes(3)), .requires(.tmpfs))
    func aPlanTooBigForItsFilesystemIsRefusedWithEveryOtherProblemAndNothingIsCreated() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-val-space")
        defer { scratch.remove() }
        // 12 MiB × 1.1 fits in 20 MiB alone; two of them do not.
        let small = try #require(SmallFilesystem(path: scratch.appending("small"), size: "20m"))
        try FileManager.default.createDirectory(atPath: scratch.appending("new"), withIntermediateDirectories: true)
        let vm = try Self.vm(in: scratch, disks: Array(repeating: ("64M", 12), count: 3), firstPattern: 0x10)
        defer { vm.kill() }
        let existing = scratch.appending("new/existing.qcow2")
        try "precious".write(toFile: existing, atomically: true, encoding: .utf8)
        let plan = try Self.writePlan(in: scratch, policy: "max_parallel_disks: 2\n", [
            ("vm1", vm.livecopySocket, [
                ("drive0", small.path + "/d0.qcow2"), ("drive1", small.path + "/d1.qcow2"),
                ("drive2", existing), ("drive9", scratch.appending("new/d9.qcow2")),
            ]),
            ("vm2", scratch.appending("gone.qmp"), [("drive0", scratch.appending("new/vm2.qcow2"))]),
        ])
        let database = scratch.appending("livecopy.db")
        let livecopy = LivecopyProcess(database: database)

        let (result, document) = try await Self.validate(livecopy, plan)
        #expect(result.status == 2)
        let lines = result.stderr.split(separator: "\n").map(String.init)
        #expect(lines.allSatisfy { $0.hasPrefix("livecopy: refused: ") }, "\(lines)")
        #expect(lines.count == 4, "\(lines)")
        #expect(lines.contains { $0.contains("VM 'vm1' disk 'drive2': destination \(existing) already exists") }, "\(lines)")
        #expect(lines.contains { $0.contains("VM 'vm1' disk 'drive9': no such device in the VM") }, "\(lines)")
        #expect(lines.contains { $0.contains("VM 'vm2': ") }, "the unreachable VM: \(lines)")
        let space = try #require(lines.first { $0.contains("the filesystem of \(small.path)") }, "\(lines)")
        #expect(space.contains("VM 'vm1' disk 'drive0' (with VM 'vm1' disk 'drive1' of the plan copied there)"), "\(space)")
        #expect(space.contains("24.0 MiB allocated in the source chains × space_margin 1.1"), "\(space)")

        // The JSON says the same, and what was found meanwhile.
        #expect(!document.accepted)
        let fs = try #require(document.filesystems.first { $0.directory == small.path })
        #expect(fs.disks == ["vm1/drive0", "vm1/drive1"])
        #expect(fs.planBytes == 24 * Self.mib)
        #expect(fs.checked && !fs.fits)
        #expect(document.disks.map(\.allocatedBytes) == [12 * Self.mib, 12 * Self.mib, 12 * Self.mib, nil, nil])
        #expect(document.disks[3].source == nil && document.disks[4].source == nil)

        // Nothing recorded, nothing created.
        Self.expectNoDatabase(database)
        #expect(try FileManager.default.contentsOfDirectory(atPath: small.path).isEmpty)
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "precious")
        #expect(!FileManager.default.fileExists(atPath: scratch.appending("new/d9.qcow2")))

        // The human form prints the tables and the same lines on stderr.
        let text = try await livecopy.run(["validate", plan])
        #expect(text.status == 2)
        #expect(text.stderr == result.stderr)
        #expect(text.stdout.contains("DOES NOT FIT"), "\(text.stdout)")
        #expect(text.stdout.contains("refused: 4 problem(s)"), "\(text.stdout)")
        Self.expectNoDatabase(database)

        // submit refuses with the first of those lines, and says there are more.
        let submitDatabase = scratch.appending("submit.db")
        let submit = try await LivecopyProcess(database: submitDatabase).run(["submit", plan])
        #expect(submit.status == 2)
        let first = String(lines[0].dropFirst("livecopy: refused: ".count))
        #expect(submit.stderr.contains(": \(first) (and 3 more problems: livecopy validate lists them)"), "\(submit.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: small.path).isEmpty)
    }

    @Test(.timeLimit(.minutes(3)))
    func anAcceptedPlanShowsTheImagesSizesTheOrderAndAnEstimateFromThePolicySpeed() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-val-ok")
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.appending("new"), withIntermediateDirectories: true)
        // Allocated 8, 4 and 12 MiB of 256, 128 and 64 MiB.
        let layout: [(size: String, virtual: Int64, written: Int64)] = [("256M", 256, 8), ("128M", 128, 4), ("64M", 64, 12)]
        let vm = try Self.vm(in: scratch, disks: layout.map { (size: $0.size, written: Int($0.written)) }, offset: "16M", firstPattern: 0x20)
        defer { vm.kill() }
        let plan = try Self.writePlan(in: scratch, policy: "speed: 32M\nmax_parallel_disks: 2\n", [
            ("vm1", vm.livecopySocket, (0..<3).map { ("drive\($0)", scratch.appending("new/d\($0).qcow2")) }),
        ])
        let database = scratch.appending("state/livecopy.db")
        let livecopy = LivecopyProcess(database: database)

        let (result, document) = try await Self.validate(livecopy, plan)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty)
        #expect(document.accepted && document.problems.isEmpty)
        #expect(document.disks.map(\.virtualSize) == layout.map { $0.virtual * Self.mib })
        #expect(document.disks.map(\.allocatedBytes) == layout.map { $0.written * Self.mib })
        #expect(document.disks.allSatisfy { $0.allocatedFrom == "map" && $0.sourceFormat == "qcow2" })
        #expect(document.disks.map(\.source) == layout.indices.map { scratch.appending("src\($0).qcow2") })
        #expect(document.plan.speed == 32 * Self.mib && document.plan.maxParallelDisks == 2)

        // Two slots: drive0 (8 MiB, 0.25 s) and drive1 (4 MiB, 0.125 s) at once; drive2 when drive1 ends.
        let o = document.estimate.perDiskOverheadSeconds
        func close(_ values: [Double?], _ expected: [Double]) -> Bool {
            values.count == expected.count && zip(values, expected).allSatisfy { abs(($0 ?? .nan) - $1) < 1e-9 }
        }
        #expect(document.order.map(\.disk) == ["vm1/drive0", "vm1/drive1", "vm1/drive2"])
        #expect(document.order.map(\.firstWave) == [true, true, false])
        #expect(close(document.order.map(\.startSeconds), [0, 0, 0.125 + o]), "\(document.order)")
        #expect(close(document.order.map(\.endSeconds), [0.25 + o, 0.125 + o, 0.5 + 2 * o]), "\(document.order)")
        #expect(document.estimate.basis == "policy_speed")
        #expect(close([document.estimate.seconds], [max(0.25 + o, 0.5 + 2 * o)]))
        #expect(document.estimate.description.hasPrefix("policy speed 32.0 MiB/s per disk"))
        #expect(document.estimate.history == nil)
        let fs = try #require(document.filesystems.first)
        #expect(fs.planBytes == 24 * Self.mib && fs.inProgress.isEmpty && fs.fits)

        // Nothing recorded or created, not even the database's directory.
        #expect(!FileManager.default.fileExists(atPath: scratch.appending("state")))
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.appending("new")).isEmpty)

        let text = try await livecopy.run(["validate", plan])
        #expect(text.status == 0, "\(text.stderr)")
        for fragment in ["VIRTUAL", "ALLOCATED", "256.0 MiB", "8.0 MiB", "starts at once", "(policy speed 32.0 MiB/s per disk)",
                         "accepted"] {
            #expect(text.stdout.contains(fragment), "\(fragment): \(text.stdout)")
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func afterACopyTheEstimateLearnsFromThisHostsHistory() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-val-hist")
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.appending("new"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: scratch.appending("again"), withIntermediateDirectories: true)
        let vm = try Self.vm(in: scratch, disks: Array(repeating: ("64M", 16), count: 2), firstPattern: 0x30)
        defer { vm.kill() }
        let database = scratch.appending("livecopy.db")
        let livecopy = LivecopyProcess(database: database)

        // No history and no speed: no estimate.
        let unthrottled = try Self.writePlan(in: scratch, name: "first", policy: "speed: 0\n", [
            ("vm1", vm.livecopySocket, (0..<2).map { ("drive\($0)", scratch.appending("new/d\($0).qcow2")) }),
        ])
        let (_, before) = try await Self.validate(livecopy, unthrottled)
        #expect(before.accepted)
        #expect(before.estimate.basis == "none" && before.estimate.seconds == nil)
        #expect(before.order.allSatisfy { $0.startSeconds == nil })

        let submit = try await livecopy.run(["submit", unthrottled])
        #expect(submit.status == 0, "\(submit.stderr)")
        let store = try SQLiteStore(path: database)
        let recorded = try store.disks(ofPlan: 1)
        #expect(recorded.map(\.allocatedBytes) == [16 * Self.mib, 16 * Self.mib], "submit records the bytes preflight found")

        // Moving the disks again: the estimate rests on the two copies just made.
        let again = try Self.writePlan(in: scratch, name: "again", policy: "speed: 0\n", [
            ("vm1", vm.livecopySocket, (0..<2).map { ("drive\($0)", scratch.appending("again/d\($0).qcow2")) }),
        ])
        let (result, after) = try await Self.validate(livecopy, again)
        #expect(result.status == 0, "\(result.stderr)")
        let history = try #require(after.estimate.history)
        // The two disks copied at once: they tell what the host moves in all, not one disk alone.
        let aggregate = try #require(history.aggregateBytesPerSecond)
        #expect(history.copies == 2 && history.sharedCopies == 2 && history.strategy == "stream" && history.bytesPerSecond == aggregate)
        #expect(after.estimate.basis == "history")
        #expect(after.estimate.description.hasPrefix("history: no stream copy alone"), "\(after.estimate.description)")
        #expect(after.estimate.description.contains("in all with several at once (median over 2 copies)"))
        let seconds = try #require(after.estimate.seconds)
        #expect(abs(seconds - Double(32 * Self.mib) / aggregate - after.estimate.perDiskOverheadSeconds) < 1e-6,
                "both disks at once, 16 MiB each, sharing the host's whole rate")
        #expect(try store.plans(states: nil, vm: nil, limit: nil).count == 1, "validate recorded nothing")

        // With a speed too, the lower of the two is used, and both are named.
        try "speed: 1M\n".write(toFile: scratch.appending("again-policy.yaml"), atomically: true, encoding: .utf8)
        let (_, throttled) = try await Self.validate(livecopy, again)
        #expect(throttled.estimate.history != nil)
        let expectedBasis = history.bytesPerSecond < Double(Self.mib) ? "history" : "policy_speed"
        #expect(throttled.estimate.basis == expectedBasis)
        #expect(throttled.estimate.description.contains("history: "))
        #expect(throttled.estimate.description.contains("1.0 MiB/s"))
    }

    @Test(.timeLimit(.minutes(3)), .requires(.tmpfs))
    func aPlanInProgressOnTheSameFilesystemCountsAgainstItsFreeSpace() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-val-busy")
        defer { scratch.remove() }
        let small = try #require(SmallFilesystem(path: scratch.appending("small"), size: "40m"))
        let busySource = scratch.appending("busy.qcow2")
        try QEMUImage.create(busySource, size: "64M")
        try QEMUImage.write(busySource, pattern: 0x41, offset: "0", length: "24M")
        let newSource = scratch.appending("new.qcow2")
        try QEMUImage.create(newSource, size: "64M")
        try QEMUImage.write(newSource, pattern: 0x42, offset: "0", length: "16M")
        let busyVM = try QEMUVirtualMachine(name: "busy", directory: scratch.url, drives: [(id: "drive0", image: busySource, format: "qcow2")])
        defer { busyVM.kill() }
        let vm = try QEMUVirtualMachine(name: "vm2", directory: scratch.url, drives: [(id: "drive0", image: newSource, format: "qcow2")])
        defer { vm.kill() }
        let database = scratch.appending("livecopy.db")
        let livecopy = LivecopyProcess(database: database)

        // Plan 1 copies 24 MiB onto the small filesystem at 1 MiB/s.
        let busyPlan = try Self.writePlan(in: scratch, name: "busy", policy: "speed: 1M\nprogress_interval: 200ms\n", [
            ("busy", busyVM.livecopySocket, [("drive0", small.path + "/busy.qcow2")]),
        ])
        let running = try livecopy.start(["submit", busyPlan])
        defer { running.process.terminate() }
        let store = try await waitForStore(at: database)
        try await waitUntil("plan 1 streams") { try store.disks(ofPlan: 1).first?.state == .streaming }

        // 16 MiB more would fit alone (17.6 MiB with the margin), not with what plan 1 still copies there.
        let plan = try Self.writePlan(in: scratch, name: "second", policy: "speed: 8M\n", [
            ("vm2", vm.livecopySocket, [("drive0", small.path + "/second.qcow2")]),
        ])
        let (result, document) = try await Self.validate(livecopy, plan)
        #expect(result.status == 2)
        let fs = try #require(document.filesystems.first)
        #expect(fs.planBytes == 16 * Self.mib)
        let other = try #require(fs.inProgress.first)
        #expect(other.plan == 1 && other.vm == "busy" && other.device == "drive0" && other.state == "streaming")
        let remaining = try #require(other.remainingBytes)
        #expect(remaining > 0 && remaining <= 24 * Self.mib, "\(remaining)")
        #expect(fs.inProgressBytes == remaining)
        #expect(fs.requiredBytes == Int64((Double(16 * Self.mib + remaining) * 1.1).rounded(.up)))
        #expect(!fs.fits)
        let line = try #require(document.problems.first)
        #expect(line.hasPrefix("VM 'vm2' disk 'drive0' (with 1 disk(s) of plan(s) 1 still in progress there): the filesystem of \(small.path)"),
                "\(line)")
        #expect(line.contains("still to copy for plans in progress) × space_margin 1.1"), "\(line)")

        // submit makes the same check.
        let submit = try await livecopy.run(["submit", plan])
        #expect(submit.status == 2)
        #expect(submit.stderr.contains("(with 1 disk(s) of plan(s) 1 still in progress there): the filesystem of \(small.path)"),
                "\(submit.stderr)")
        #expect(!FileManager.default.fileExists(atPath: small.path + "/second.qcow2"))
        running.process.terminate()
    }

    @Test(.timeLimit(.minutes(3)))
    func aMirrorPlansDisksOfOneVMEndTogetherAsTheyPivotTogether() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-val-mirror")
        defer { scratch.remove() }
        var images: [String] = []
        for (index, mib) in [8, 4, 2].enumerated() {
            let source = scratch.appending("src\(index).qcow2")
            try QEMUImage.create(source, size: "64M")
            try QEMUImage.write(source, pattern: 0x50 + UInt8(index), offset: "0", length: "\(mib)M")
            images.append(source)
        }
        let vm1 = try QEMUVirtualMachine(name: "vm1", directory: scratch.url, drives: [
            (id: "drive0", image: images[0], format: "qcow2"), (id: "drive1", image: images[1], format: "qcow2"),
        ])
        defer { vm1.kill() }
        let vm2 = try QEMUVirtualMachine(name: "vm2", directory: scratch.url, drives: [(id: "drive0", image: images[2], format: "qcow2")])
        defer { vm2.kill() }
        let plan = try Self.writePlan(in: scratch, policy: "strategy: mirror\nspeed: 8M\nmax_parallel_disks: 2\n", [
            ("vm1", vm1.livecopySocket, [("drive0", scratch.appending("d0.qcow2")), ("drive1", scratch.appending("d1.qcow2"))]),
            ("vm2", vm2.livecopySocket, [("drive0", scratch.appending("d2.qcow2"))]),
        ])
        let database = scratch.appending("livecopy.db")
        let (result, document) = try await Self.validate(LivecopyProcess(database: database), plan)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(document.plan.strategy == "mirror")
        #expect(document.disks.map(\.allocatedBytes) == [8 * Self.mib, 4 * Self.mib, 2 * Self.mib])
        // vm1's disks copy 1 s and 0.5 s but pivot together at 1 s; vm2's starts then.
        let o = document.estimate.perDiskOverheadSeconds
        #expect(document.order.map(\.startSeconds) == [0, 0, 1 + o])
        #expect(document.order.map(\.endSeconds) == [1 + o, 1 + o, 1.25 + 2 * o])
        Self.expectNoDatabase(database)
    }

    @Test func aFakeVMSeesQueriesOnlyAndAnUnreadableMapFallsBackToTheFilesSizes() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-val-fake")
        defer { scratch.remove() }
        // The fake's source is no image: qemu-img map cannot read it.
        let source = scratch.appending("src.qcow2")
        try Data(repeating: 7, count: 65536).write(to: URL(fileURLWithPath: source))
        let fake = try await BadInputTests.fakeVM(source: source)
        defer { fake.stop() }
        let plan = try Self.writePlan(in: scratch, policy: "speed: 64K\n", [(
            "vm1", fake.socketPath, [("drive0", scratch.appending("dst.qcow2"))],
        )])
        let database = scratch.appending("livecopy.db")
        let (result, document) = try await Self.validate(LivecopyProcess(database: database), plan)
        #expect(result.status == 0, "\(result.stderr)")
        let disk = try #require(document.disks.first)
        #expect(disk.allocatedFrom == "file_blocks")
        #expect(disk.allocatedNote?.contains("qemu-img map") == true, "\(disk.allocatedNote ?? "")")
        #expect(disk.allocatedBytes == 65536)
        #expect(document.estimate.seconds == 1 + document.estimate.perDiskOverheadSeconds)
        #expect(Set(fake.receivedCommandNames).isSubset(of: BadInputTests.readOnlyCommands), "\(fake.receivedCommandNames)")
        Self.expectNoDatabase(database)
        #expect(!FileManager.default.fileExists(atPath: scratch.appending("dst.qcow2")))

        // Bad input: one line, exit 2, still no database.
        try "vms: [\n".write(toFile: plan, atomically: true, encoding: .utf8)
        try await BadInputTests.expectRefusal(LivecopyProcess(database: database), ["validate", plan], "not valid YAML")
        Self.expectNoDatabase(database)
    }
}

/// `validate` on a libvirt domain: the same preflight through libvirt, sizes from the
/// images libvirt's QEMU holds, nothing recorded.
@Suite(.serialized, .requires(.libvirt, .qemu))
struct ValidateLibvirtTests {
    @Test(.timeLimit(.minutes(3)))
    func aLibvirtDomainIsValidatedLikeAQMPVM() async throws {
        let rig = try LibvirtIntegrationTests.Rig("lv-validate", targets: ["vda", "vdb"], policy: "speed: 8M\nmax_parallel_disks: 1\n")
        defer { rig.remove() }
        let (result, document) = try await ValidateIntegrationTests.validate(rig.livecopy, rig.planPath)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(document.disks.map(\.device) == ["vda", "vdb"])
        #expect(document.disks.map(\.source) == [rig.sources["vda"], rig.sources["vdb"]])
        #expect(document.disks.map(\.virtualSize) == [32 << 20, 32 << 20])
        #expect(document.disks.map(\.allocatedBytes) == [16 << 20, 16 << 20], "16 MiB written of 32")
        #expect(document.disks.allSatisfy { $0.allocatedFrom == "map" })
        // One slot: vdb starts when vda ends, 2 s each at 8 MiB/s.
        let o = document.estimate.perDiskOverheadSeconds
        #expect(document.order.map(\.startSeconds) == [0, 2 + o])
        #expect(document.estimate.seconds == 4 + 2 * o)
        #expect(document.estimate.basis == "policy_speed")
        ValidateIntegrationTests.expectNoDatabase(rig.livecopy.database)
        #expect(!FileManager.default.fileExists(atPath: rig.destinations["vda"]!))

        // A target the domain lacks, and a destination that exists: both named, the other disk still checked.
        let plan = try String(contentsOfFile: rig.planPath, encoding: .utf8)
            .replacingOccurrences(of: "device: vdb", with: "device: vdz")
            .replacingOccurrences(of: rig.destinations["vda"]!, with: rig.sources["vdb"]! + ".copy")
        try "x".write(toFile: rig.sources["vdb"]! + ".copy", atomically: true, encoding: .utf8)
        try plan.write(toFile: rig.planPath, atomically: true, encoding: .utf8)
        let (refused, problems) = try await ValidateIntegrationTests.validate(rig.livecopy, rig.planPath)
        #expect(refused.status == 2)
        #expect(problems.problems.count == 2, "\(problems.problems)")
        #expect(problems.problems.contains { $0.contains("disk 'vda': destination") && $0.contains("already exists") })
        #expect(problems.problems.contains { $0.contains("disk 'vdz'") })
        ValidateIntegrationTests.expectNoDatabase(rig.livecopy.database)
    }
}
