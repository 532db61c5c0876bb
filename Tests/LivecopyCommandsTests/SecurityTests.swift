import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import QMPBackend
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Security against real QEMU (issue 4): livecopy creates each destination itself,
/// exclusively and never through a link, and QEMU only opens it (`mode: existing`); no
/// image format is ever probed; a QMP socket others may write to is refused; and a file
/// livecopy did not create is never touched.
@Suite(.requires(.qemu))
struct SecurityTests {
    // MARK: - Helpers

    /// Writes `plan.yaml` (one VM, one disk) and `policy.yaml` into `scratch`; returns the plan's path.
    static func writePlan(_ scratch: TemporaryDirectory, socket: String, device: String = "drive0",
                          destination: String, policy: String) throws -> String {
        let planPath = scratch.appending("plan.yaml")
        try "name: security\npolicy: ./policy.yaml\n\(BadInputTests.plan(socket: socket, device: device, destination: destination))"
            .write(toFile: planPath, atomically: true, encoding: .utf8)
        try policy.write(toFile: scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)
        return planPath
    }

    /// A VM whose drive0 is a 16 MiB qcow2 source holding 4 MiB of `pattern`, a database,
    /// and a plan (with `policy`) copying drive0 to `copy.qcow2`.
    struct OneDisk {
        let source: String
        let vm: QEMUVirtualMachine
        let destination: String
        let livecopy: LivecopyProcess
        let planPath: String
    }

    static func oneDisk(_ scratch: TemporaryDirectory, pattern: UInt8 = 0x11, policy: String = "retire_source: keep\n") throws -> OneDisk {
        let source = scratch.appending("src.qcow2")
        try QEMUImage.create(source, size: "16M")
        try QEMUImage.write(source, pattern: pattern, offset: "0", length: "4M")
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: source, format: "qcow2")])
        let destination = scratch.appending("copy.qcow2")
        return OneDisk(source: source, vm: vm, destination: destination, livecopy: LivecopyProcess(database: scratch.appending("livecopy.db")),
                       planPath: try writePlan(scratch, socket: vm.livecopySocket, destination: destination, policy: policy))
    }

    /// A raw disk image whose bytes are a qcow2 header naming `secret` as its backing file
    /// (format raw), padded to 16 MiB. Probed, it would open `secret`; as raw it must not.
    static func makeLookalike(_ scratch: TemporaryDirectory) throws -> (source: String, secret: String) {
        let secret = scratch.appending("secret.img")
        try QEMUImage.create(secret, size: "1M", format: "raw")
        try QEMUImage.write(secret, pattern: 0x5e, offset: "0", length: "1M", format: "raw")
        let source = scratch.appending("disk.img")
        try QEMUImage.create(source, size: "16M", format: "qcow2", backing: secret, backingFormat: "raw")
        let handle = try #require(FileHandle(forUpdatingAtPath: source))
        try handle.truncate(atOffset: 16 << 20)
        try handle.close()
        // It does look like a qcow2 image backed by the secret, to anything that probes.
        let probed = try QEMUTools.run("qemu-img", ["info", "-f", "qcow2", "--output=json", source])
        #expect(probed.status == 0 && probed.stdout.contains(secret), "\(probed.stdout)\(probed.stderr)")
        return (source, secret)
    }

    /// Every image file QEMU has open right now: the regular files in `/proc/PID/fd`
    /// other than its log. (Not `query-named-block-nodes`: QEMU 7.2 can crash answering it
    /// while a stream job ends.)
    static func openFiles(_ vm: QEMUVirtualMachine) async throws -> [String] {
        let directory = "/proc/\(vm.pid)/fd"
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return descriptors.compactMap { descriptor -> String? in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(descriptor)"),
                  target.hasPrefix("/"), !target.hasPrefix("/dev/"), target != vm.logPath else { return nil }
            var info = stat()
            return stat("\(directory)/\(descriptor)", &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? target : nil
        }
    }

    static func activeImage(_ vm: QEMUVirtualMachine) async throws -> (file: String?, backing: String?) {
        let inserted = try await vm.testMonitor().queryBlock().first { $0.device == "drive0" }?.inserted
        return (inserted?.file, inserted?.backingFile)
    }

    /// `qemu-img compare`, formats given: true when the guest sees the same bytes.
    static func sameContents(_ first: String, format: String, _ second: String, format secondFormat: String) throws -> Bool {
        let result = try QEMUTools.run("qemu-img", ["compare", "-f", format, "-F", secondFormat, first, second])
        #expect(result.status == 0 || result.status == 1, "qemu-img compare: \(result.stderr)")
        return result.status == 0
    }

    static func mode(of path: String) -> mode_t? {
        var info = stat()
        return lstat(path, &info) == 0 ? info.st_mode & 0o7777 : nil
    }

    // MARK: - 1. No format probing: a raw disk that looks like qcow2

    /// A guest can write a qcow2 header naming any host file into its raw disk. Copying
    /// that disk must never open the named file: not the copy, not QEMU restarted on the
    /// destination mid-copy (whose overlay records the backing format `raw`).
    @Test(.timeLimit(.minutes(3)))
    func aRawDiskThatLooksLikeQcow2NeverOpensTheFileItNames() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-sec-raw")
        defer { scratch.remove() }
        let (source, secret) = try Self.makeLookalike(scratch)
        let destination = scratch.appending("copy.qcow2")
        var vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: source, format: "raw")])
        try await vm.guestWrite(drive: "drive0", pattern: 0x22, offset: "4M", length: "64k")
        var seen = Set(try await Self.openFiles(vm))

        let planPath = try Self.writePlan(scratch, socket: vm.livecopySocket, destination: destination,
                                          policy: "retire_source: keep\nprogress_interval: 200ms\n")
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))

        // Stop right after the snapshot; QEMU then dies and restarts on the destination.
        let crashed = try await livecopy.run(["submit", planPath], environment: ["LIVECOPY_CRASH_AT": "outcome:blockdev-snapshot-sync"])
        #expect(crashed.status == RecoveryIntegrationTests.crashStatus, "\(crashed.stderr)")
        seen.formUnion(try await Self.openFiles(vm))
        #expect(try await Self.activeImage(vm) == (destination, source))
        vm.kill()
        let overlay = try QEMUImage.info(destination)
        #expect(overlay.format == "qcow2")
        #expect(overlay.backingFilename == source)
        #expect(overlay.backingFormat == "raw", "the overlay records its backing format; QEMU never guesses it")
        #expect(Self.mode(of: destination) == 0o600)

        vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: destination, format: "qcow2")])
        let restarted = try await vm.testMonitor().queryBlock().first { $0.device == "drive0" }?.inserted
        #expect(restarted?.image.backingImage?.filename == source)
        #expect(restarted?.image.backingImage?.format == "raw")
        #expect(restarted?.image.backingImage?.backingImage == nil)
        seen.formUnion(try await Self.openFiles(vm))
        try await vm.guestWrite(drive: "drive0", pattern: 0x33, offset: "8M", length: "64k")

        // recover streams the rest; watch what QEMU opens meanwhile.
        let recover = try livecopy.start(["recover"])
        while recover.process.isRunning {
            seen.formUnion(try await Self.openFiles(vm))
            try await Task.sleep(for: .milliseconds(50))
        }
        let result = try await recover.wait()
        #expect(result.status == 0, "recover: \(result.stderr)")
        seen.formUnion(try await Self.openFiles(vm))
        #expect(try await Self.activeImage(vm) == (destination, nil))
        await vm.stop()

        #expect(!seen.contains(secret), "QEMU opened \(secret): \(seen.sorted())")
        #expect(seen.allSatisfy { !$0.contains("secret") }, "\(seen.sorted())")
        #expect(try QEMUImage.info(destination).backingFilename == nil)
        #expect(try QEMUImage.verify(destination, pattern: 0x22, offset: "4M", length: "64k"))
        #expect(try QEMUImage.verify(destination, pattern: 0x33, offset: "8M", length: "64k"))
        // Apart from the write made on the destination, the copy holds the raw bytes: the
        // qcow2 header itself, never the secret's 0x5e.
        #expect(try QEMUImage.verify(destination, pattern: 0x5e, offset: "512k", length: "64k") == false)
        try QEMUImage.write(source, pattern: 0x33, offset: "8M", length: "64k", format: "raw")
        #expect(try Self.sameContents(source, format: "raw", destination, format: "qcow2"), "the copy equals the raw bytes")
    }

    /// The same disk copied in one go, while QEMU keeps running.
    @Test(.timeLimit(.minutes(2)))
    func aFullCopyOfTheLookalikeEqualsItsRawBytes() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-sec-full")
        defer { scratch.remove() }
        let (source, secret) = try Self.makeLookalike(scratch)
        let destination = scratch.appending("copy.qcow2")
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: source, format: "raw")])
        defer { vm.kill() }
        try await vm.guestWrite(drive: "drive0", pattern: 0x22, offset: "4M", length: "64k")
        let planPath = try Self.writePlan(scratch, socket: vm.livecopySocket, destination: destination,
                                          policy: "retire_source: keep\nspeed: 8M\nprogress_interval: 200ms\n")
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let submit = try livecopy.start(["submit", planPath, "--json"])
        var seen = Set<String>()
        while submit.process.isRunning {
            seen.formUnion(try await Self.openFiles(vm))
            try await Task.sleep(for: .milliseconds(50))
        }
        let result = try await submit.wait()
        #expect(result.status == 0, "submit: \(result.stderr)")
        let document = try JSONDecoder().decode(PlanDocument.self, from: Data(result.stdout.utf8))
        #expect(document.disks.first?.state == "completed")
        #expect(seen.contains(destination), "the poll saw the copy under way: \(seen.sorted())")
        #expect(!seen.contains(secret), "QEMU opened \(secret): \(seen.sorted())")
        await vm.stop()
        #expect(try Self.sameContents(source, format: "raw", destination, format: "qcow2"))
        #expect(try QEMUImage.info(destination).backingFilename == nil)
    }

    // MARK: - 2. Source chains that would make QEMU guess

    /// A backing link without a recorded format, and a chain through a non-file protocol,
    /// are refused at preflight in one line naming the link; nothing is created.
    @Test(.timeLimit(.minutes(2)))
    func chainsWithAnUnformattedLinkOrAProtocolAreRefused() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-sec-chain")
        defer { scratch.remove() }
        let base = scratch.appending("base.qcow2")
        let top = scratch.appending("top.qcow2")
        try QEMUImage.create(base, size: "16M")
        // qemu-img 7.2 refuses -b without -F (and rebase -u without -F), so write the link
        // with its format, then blank the format's header extension (0xE2792ACA) into an
        // unknown one, which qcow2 ignores: the link keeps its name and loses its format.
        try QEMUImage.create(top, size: "16M", backing: "base.qcow2", backingFormat: "qcow2")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: top))
        let magic = Data([0xE2, 0x79, 0x2A, 0xCA])
        let found = try #require(bytes.range(of: magic, in: 0..<65536))
        bytes.replaceSubrange(found, with: [0x4C, 0x43, 0xFF, 0xFF])
        try bytes.write(to: URL(fileURLWithPath: top))
        #expect(try QEMUImage.info(top).backingFilename == "base.qcow2")
        #expect(try QEMUImage.info(top).backingFormat == nil)

        // A link through blkdebug: the backing image is "blkdebug::…", not a plain file.
        let rawBase = scratch.appending("base.raw")
        let protocolTop = scratch.appending("ptop.qcow2")
        try QEMUImage.create(rawBase, size: "16M", format: "raw")
        let json = #"json:{"driver":"raw","file":{"driver":"blkdebug","image":{"driver":"file","filename":"\#(rawBase)"}}}"#
        let created = try QEMUTools.run("qemu-img", ["create", "-q", "-f", "qcow2", "-u", "-b", json, "-F", "raw", protocolTop, "16M"])
        #expect(created.status == 0, "\(created.stderr)")

        let plain = scratch.appending("plain.qcow2")
        try QEMUImage.create(plain, size: "16M")
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [
            (id: "drive0", image: top, format: "qcow2"), (id: "drive1", image: protocolTop, format: "qcow2"),
            (id: "drive2", image: plain, format: "qcow2"),
        ])
        defer { vm.kill() }
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let destination = scratch.appending("copy.qcow2")

        var planPath = try Self.writePlan(scratch, socket: vm.livecopySocket, destination: destination, policy: "speed: 0\n")
        try await BadInputTests.expectRefusal(
            livecopy, ["submit", planPath], "\(top) names its backing file base.qcow2 without a backing format")
        planPath = try Self.writePlan(scratch, socket: vm.livecopySocket, device: "drive1", destination: destination, policy: "speed: 0\n")
        try await BadInputTests.expectRefusal(
            livecopy, ["submit", planPath], "image blkdebug::\(rawBase) of the source chain is not a plain file")

        // A destination directory that is a symlink is refused too.
        try FileManager.default.createDirectory(atPath: scratch.appending("real"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: scratch.appending("linked"), withDestinationPath: scratch.appending("real"))
        planPath = try Self.writePlan(scratch, socket: vm.livecopySocket, device: "drive2",
                                      destination: scratch.appending("linked/copy.qcow2"), policy: "speed: 0\n")
        try await BadInputTests.expectRefusal(livecopy, ["submit", planPath], "destination directory \(scratch.appending("linked")) is a symlink")

        #expect(!FileManager.default.fileExists(atPath: destination))
        #expect(!FileManager.default.fileExists(atPath: scratch.appending("real/copy.qcow2")))
        #expect(try await Self.activeImage(vm).file == top)
        try await BadInputTests.expectNothingInProgress(livecopy)
    }

    // MARK: - 3. The QMP socket is root-equivalent

    @Test(.timeLimit(.minutes(2)))
    func aSocketOthersMayWriteToIsRefusedUnlessThePolicyAllowsIt() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-sec-sock")
        defer { scratch.remove() }
        let rig = try Self.oneDisk(scratch)
        let (vm, destination, livecopy) = (rig.vm, rig.destination, rig.livecopy)
        var planPath = rig.planPath
        defer { vm.kill() }
        let socket = vm.livecopySocket
        // The fixture's sockets are owner-only (QEMU makes them with the umask: 0755 here).
        #expect(Self.mode(of: socket) == 0o700)

        #expect(chmod(socket, 0o777) == 0)
        try await BadInputTests.expectRefusal(
            livecopy, ["submit", planPath], "QMP socket \(socket) is group- and world-writable (mode 0777)")
        try await BadInputTests.expectRefusal(livecopy, ["submit", "--detach", planPath], "QMP socket \(socket) is group- and world-writable")
        #expect(chmod(socket, 0o720) == 0)
        try await BadInputTests.expectRefusal(livecopy, ["submit", planPath], "QMP socket \(socket) is group-writable (mode 0720)")
        #expect(chmod(socket, 0o700) == 0)
        if geteuid() == 0 {
            #expect(chown(socket, 65534, 65534) == 0)
            try await BadInputTests.expectRefusal(livecopy, ["submit", planPath], "QMP socket \(socket) is owned by uid 65534")
        } else if Requirement.isCI {
            Issue.record("CI=true but not root: a socket of another owner could not be made, so its refusal was not tested")
        }
        #expect(!FileManager.default.fileExists(atPath: destination))
        try await BadInputTests.expectNothingInProgress(livecopy)

        // Allowed explicitly, the same socket (0777, and another owner when root) works.
        #expect(chmod(socket, 0o777) == 0)
        planPath = try Self.writePlan(scratch, socket: socket, destination: destination,
                                      policy: "retire_source: keep\nallow_shared_socket: true\n")
        let allowed = try await livecopy.run(["submit", planPath])
        #expect(allowed.status == 0, "\(allowed.stderr)")
        #expect(try await Self.activeImage(vm) == (destination, nil))
        await vm.stop()
        #expect(try QEMUImage.verify(destination, pattern: 0x11, offset: "0", length: "4M"))
    }

    /// A plan recorded while the socket was private is not driven once the socket is
    /// shared: `run` checks again, leaves the disk pending and touches nothing.
    @Test(.timeLimit(.minutes(2)))
    func runChecksTheSocketAgain() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-sec-run")
        defer { scratch.remove() }
        let rig = try Self.oneDisk(scratch)
        let (source, vm, destination, livecopy, planPath) = (rig.source, rig.vm, rig.destination, rig.livecopy, rig.planPath)
        defer { vm.kill() }
        let detached = try await livecopy.run(["submit", "--detach", planPath])
        #expect(detached.status == 0, "\(detached.stderr)")
        let id = detached.stdout.trimmingCharacters(in: .whitespacesAndNewlines)

        #expect(chmod(vm.livecopySocket, 0o777) == 0)
        let run = try await livecopy.run(["run"])
        #expect(run.status != 0)
        #expect(run.stderr.contains("QMP socket \(vm.livecopySocket) is group- and world-writable"), "\(run.stderr)")
        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        let planId = try #require(Int64(id))
        let disk = try #require(try store.disks(ofPlan: planId).first)
        #expect(disk.state == .pending)
        #expect(!FileManager.default.fileExists(atPath: destination))
        #expect(try await Self.activeImage(vm) == (source, nil))

        #expect(chmod(vm.livecopySocket, 0o700) == 0)
        let again = try await livecopy.run(["run", "--plan", id])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try await Self.activeImage(vm) == (destination, nil))
    }

    // MARK: - 4. Livecopy creates the destination; a file it did not create is never touched

    /// Wraps the real creator; `intruder` runs first, as another process racing livecopy
    /// between its checks and the creation.
    struct RacingCreator: DestinationCreator {
        let intruder: @Sendable (String) throws -> Void
        func createOverlay(at path: String, backing: String, backingFormat: String, virtualSize: Int64) throws {
            try intruder(path)
            try ExclusiveOverlayCreator().createOverlay(at: path, backing: backing, backingFormat: backingFormat, virtualSize: virtualSize)
        }
        func createImage(at path: String, format: DestinationFormat, virtualSize: Int64) throws {
            try intruder(path)
            try ExclusiveOverlayCreator().createImage(at: path, format: format, virtualSize: virtualSize)
        }
    }

    struct Connector: QMPConnector {
        func connect(socketPath: String, commandTimeout: Double) async throws -> any QMPSession {
            try await QMPConnection.connect(socketPath: socketPath, connectTimeout: 5, commandTimeout: commandTimeout)
        }
    }

    /// A file, or a symlink, that appears at the destination after every check and just
    /// before livecopy creates it: the disk fails in one line before any QMP side effect,
    /// the intruder's file is left as it was, and a later run still does not delete it.
    @Test(.timeLimit(.minutes(2)), arguments: ["file", "symlink"])
    func aDestinationThatAppearsBeforeCreationIsLeftUntouched(kind: String) async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-sec-race")
        defer { scratch.remove() }
        let source = scratch.appending("src.qcow2")
        try QEMUImage.create(source, size: "16M")
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: source, format: "qcow2")])
        defer { vm.kill() }
        let destination = scratch.appending("copy.qcow2")
        let victim = scratch.appending("victim")
        let intruder: @Sendable (String) throws -> Void = { path in
            if kind == "file" {
                try "precious".write(toFile: path, atomically: false, encoding: .utf8)
            } else {
                try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: victim)
            }
        }
        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        let engine = Engine(store: store, hypervisor: QMPHypervisor(connector: Connector()), creator: RacingCreator(intruder: intruder))
        let plan = Plan(name: "race", policyReference: nil, vms: [
            .init(name: "vm", address: .qmp(socket: vm.livecopySocket), disks: [.init(device: "drive0", destination: destination)]),
        ])
        var policy = try Policy.resolve(nil)
        policy.retireSource = .keep
        let record = try engine.record(plan, policy: policy, disks: try await engine.preflight(plan, policy: policy))
        let final = try await engine.run(planId: record.id)
        await engine.shutdown()

        let disk = try #require(try store.disks(ofPlan: record.id).first)
        #expect(final.state == .failed)
        #expect(disk.state == .failed)
        #expect(disk.destinationCreated == false)
        #expect(disk.error?.contains("destination \(destination) appeared meanwhile") == true, "\(disk.error ?? "")")
        #expect(disk.error?.contains("left untouched") == true)
        #expect(disk.error?.contains("\n") == false)
        func expectUntouched() throws {
            if kind == "file" {
                #expect(try String(contentsOfFile: destination, encoding: .utf8) == "precious")
            } else {
                #expect(try FileManager.default.destinationOfSymbolicLink(atPath: destination) == victim)
                #expect(!FileManager.default.fileExists(atPath: victim), "nothing was created through the link")
            }
        }
        try expectUntouched()
        #expect(try await Self.activeImage(vm) == (source, nil), "no snapshot was taken")
        #expect(try await Self.openFiles(vm).allSatisfy { $0 == source })
        let events = try store.events(ofPlan: record.id).map(\.detail)
        #expect(!events.contains { $0.hasPrefix("blockdev-snapshot-sync") }, "\(events)")

        // A second run (recover) reconciles: the VM is on the source, the file is not
        // livecopy's, so it is refused again and still left as it is.
        let second = Engine(store: store, hypervisor: QMPHypervisor(connector: Connector()))
        _ = try await second.run(planId: record.id)
        await second.shutdown()
        let after = try #require(try store.disks(ofPlan: record.id).first)
        #expect(after.state == .failed, "\(after.state): \(after.error ?? "")")
        #expect(after.error?.contains(destination) == true, "\(after.error ?? "")")
        try expectUntouched()
        #expect(try await Self.activeImage(vm) == (source, nil))
    }

    /// A crash after the exclusive create but before its outcome is written leaves a file
    /// the record does not claim: recover refuses to guess and leaves it; once the operator
    /// removes it, recover completes.
    @Test(.timeLimit(.minutes(2)))
    func aCrashWhileCreatingTheDestinationNeverDeletesAFileItCannotProveIsItsOwn() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-sec-crash")
        defer { scratch.remove() }
        let rig = try Self.oneDisk(scratch)
        let (vm, destination, livecopy, planPath) = (rig.vm, rig.destination, rig.livecopy, rig.planPath)
        defer { vm.kill() }

        // Before the create: nothing exists, recover simply does it.
        let early = try await livecopy.run(["submit", planPath], environment: ["LIVECOPY_CRASH_AT": "intent:create-destination"])
        #expect(early.status == RecoveryIntegrationTests.crashStatus, "\(early.stderr)")
        #expect(!FileManager.default.fileExists(atPath: destination))
        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        let firstPlan = try #require(try store.plans(states: nil, vm: nil, limit: 1).first)
        let recovered = try await livecopy.run(["recover"])
        #expect(recovered.status == 0, "\(recovered.stderr)")
        #expect(try store.disks(ofPlan: firstPlan.id).first?.state == .completed)
        await vm.stop()
        #expect(try QEMUImage.verify(destination, pattern: 0x11, offset: "0", length: "4M"))

        // Just after the create: the file exists, the record does not claim it.
        let scratch2 = try TemporaryDirectory(prefix: "lc-sec-crash2")
        defer { scratch2.remove() }
        let rig2 = try Self.oneDisk(scratch2, pattern: 0x12)
        let (source2, vm2, destination2, livecopy2, planPath2) = (rig2.source, rig2.vm, rig2.destination, rig2.livecopy, rig2.planPath)
        defer { vm2.kill() }
        let late = try await livecopy2.run(["submit", planPath2], environment: ["LIVECOPY_CRASH_AT": "sent:create-destination"])
        #expect(late.status == RecoveryIntegrationTests.crashStatus, "\(late.stderr)")
        #expect(Self.mode(of: destination2) == 0o600)
        let store2 = try SQLiteStore(path: scratch2.appending("livecopy.db"))
        let plan2 = try #require(try store2.plans(states: nil, vm: nil, limit: 1).first)
        #expect(try store2.disks(ofPlan: plan2.id).first?.destinationCreated == false)

        let refused = try await livecopy2.run(["recover"])
        #expect(refused.status != 0)
        let disk = try #require(try store2.disks(ofPlan: plan2.id).first)
        #expect(disk.state == .needsAttention)
        #expect(disk.error?.contains("cannot prove the file there is its own") == true, "\(disk.error ?? "")")
        #expect(FileManager.default.fileExists(atPath: destination2), "left for the operator")
        #expect(try await Self.activeImage(vm2) == (source2, nil))

        try FileManager.default.removeItem(atPath: destination2)
        let done = try await livecopy2.run(["recover"])
        #expect(done.status == 0, "\(done.stderr)")
        #expect(try store2.disks(ofPlan: plan2.id).first?.state == .completed)
        #expect(try await Self.activeImage(vm2) == (destination2, nil))
        await vm2.stop()
        #expect(try QEMUImage.verify(destination2, pattern: 0x12, offset: "0", length: "4M"))
    }

    /// The creator itself: 0600, exclusive, never through a link, explicit backing format.
    @Test func theCreatorMakesOwnerOnlyOverlaysAndNeverFollowsLinks() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-sec-create")
        defer { scratch.remove() }
        let base = scratch.appending("base.img")
        try QEMUImage.create(base, size: "1M", format: "raw")
        let creator = ExclusiveOverlayCreator()

        let overlay = scratch.appending("overlay.qcow2")
        try creator.createOverlay(at: overlay, backing: base, backingFormat: "raw", virtualSize: 1 << 20)
        #expect(Self.mode(of: overlay) == 0o600)
        let info = try QEMUImage.info(overlay)
        #expect(info.format == "qcow2" && info.virtualSize == 1 << 20)
        #expect(info.backingFilename == base && info.backingFormat == "raw")

        // An existing file: refused, untouched.
        let existing = scratch.appending("existing.qcow2")
        try "precious".write(toFile: existing, atomically: false, encoding: .utf8)
        #expect(throws: DestinationRefused.self) {
            try creator.createOverlay(at: existing, backing: base, backingFormat: "raw", virtualSize: 1 << 20)
        }
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "precious")

        // A dangling symlink: refused, its target not created.
        let link = scratch.appending("link.qcow2")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: scratch.appending("target"))
        #expect(throws: DestinationRefused.self) {
            try creator.createOverlay(at: link, backing: base, backingFormat: "raw", virtualSize: 1 << 20)
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.appending("target")))

        // A directory that is a symlink: refused, nothing created in the real one.
        try FileManager.default.createDirectory(atPath: scratch.appending("real"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: scratch.appending("alias"), withDestinationPath: scratch.appending("real"))
        #expect(throws: DestinationRefused.self) {
            try creator.createOverlay(at: scratch.appending("alias/x.qcow2"), backing: base, backingFormat: "raw", virtualSize: 1 << 20)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.appending("real")).isEmpty)

        // qemu-img failing (a size qcow2 refuses) leaves nothing behind.
        let odd = scratch.appending("odd.qcow2")
        #expect(throws: (any Error).self) {
            try creator.createOverlay(at: odd, backing: base, backingFormat: "raw", virtualSize: 1000)
        }
        #expect(!FileManager.default.fileExists(atPath: odd))
    }

    // MARK: - 5. The policy key

    @Test func allowSharedSocketDefaultsToFalse() throws {
        let base = try Policy.resolve(nil)
        #expect(base.allowSharedSocket == false)
        for name in Policy.shippedNames { #expect(try Policy.resolve(name).allowSharedSocket == false, "\(name)") }
        #expect(try Policy.parse("allow_shared_socket: true", source: "p.yaml", base: base).allowSharedSocket)
        do {
            _ = try Policy.parse("allow_shared_socket: yes-please", source: "p.yaml", base: base)
            Issue.record("accepted a non-boolean")
        } catch let error as InputError {
            #expect(error.message.contains("'allow_shared_socket'") && error.message.contains("'yes-please'"), "\(error.message)")
        }
        // A policy stored before the key existed reads as false.
        var stored = try JSONSerialization.jsonObject(with: JSONEncoder().encode(base)) as! [String: Any]
        stored["allow_shared_socket"] = nil
        let old = try JSONDecoder().decode(Policy.self, from: JSONSerialization.data(withJSONObject: stored))
        #expect(old == base)
    }
}
