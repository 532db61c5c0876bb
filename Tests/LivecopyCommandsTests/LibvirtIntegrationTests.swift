// livecopy on libvirt domains end to end: submit, the next boot, crashes of livecopy,
// of libvirtd and of the host, a split brain, bad plans.

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

/// Each test defines its own persistent libvirt domain (TCG, no OS) on `qemu:///system`,
/// runs the `livecopy` binary on a plan naming it with `libvirt:`, writes as the guest
/// through the rig's test monitor, and checks the images offline at the end.
@Suite(.serialized, .requires(.libvirt, .qemu))
struct LibvirtIntegrationTests {
    /// libvirt calls: virDomainSnapshotCreateXML (both disks at once),
    /// virDomainQemuMonitorCommand (the held copy, its flush), virDomainBlockPull,
    /// BLOCK_JOB_2, virDomainGetXMLDesc; then `virsh destroy` and `virsh start`.
    @Test(.timeLimit(.minutes(4)))
    func submitMovesEveryDiskAndTheNextBootRunsOnTheDestinations() async throws {
        let rig = try Rig("lv-submit", targets: ["vda", "vdb"], policy: "retire_source: rename\n")
        defer { rig.remove() }
        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        #expect(submit.status == 0, "submit: \(submit.stderr)\n\(submit.stdout)")
        for (target, destination) in rig.destinations {
            #expect(try rig.domain.diskSource(target: target) == LibvirtDiskSource(file: destination, backingFile: nil))
            #expect(try rig.domain.diskSource(target: target, inactive: true) == LibvirtDiskSource(file: destination, backingFile: nil),
                    "the persistent definition names \(destination)")
        }
        for disk in try rig.store().disks(ofPlan: try rig.planId()) {
            #expect(disk.bytesTotal == 32 << 20 && disk.bytesDone == disk.bytesTotal,
                    "\(disk.device): the recorded progress is the disk's, not libvirt's empty final pull's: \(disk.bytesDone)/\(disk.bytesTotal)")
        }
        #expect(rig.owner(of: rig.destinations["vda"]!) == rig.qemuUID, "libvirt's DAC driver labelled the destination for QEMU")
        #expect(rig.owner(of: rig.sources["vda"]! + ".retired") == 0, "and gave the retired source back to root")
        try await rig.write(slot: 1)
        try rig.domain.destroy()
        try rig.domain.start()
        #expect(try rig.domain.diskSource(target: "vda").file == rig.destinations["vda"], "the next boot runs on the destination")
        try await rig.write(slot: 2)
        try rig.domain.destroy()
        try rig.expectDestinationsHold(slots: 0...2)
    }

    /// libvirt cannot add a dirty bitmap in its snapshot's transaction: `verify: sample`
    /// (the default) is refused before anything is touched, with the way out in the message.
    @Test(.timeLimit(.minutes(2)))
    func verifyingALibvirtDiskIsRefusedBeforeAnythingIsTouched() async throws {
        let rig = try Rig("lv-verify", targets: ["vda"], policy: "verify: sample\nretire_source: rename\n")
        defer { rig.remove() }
        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        #expect(submit.status != 0)
        #expect(submit.stderr.contains("verify: sample") && submit.stderr.contains("set verify: none"), "\(submit.stderr)")
        #expect(try rig.domain.diskSource(target: "vda") == LibvirtDiskSource(file: rig.sources["vda"]!, backingFile: nil),
                "the domain still runs on its source")
        #expect(!FileManager.default.fileExists(atPath: rig.destinations["vda"]!), "no destination was made")
    }

    /// libvirt calls: as above, then after livecopy's SIGKILL a new connection reads the
    /// held copy through virDomainQemuMonitorCommand and the domain's metadata.
    @Test(.timeLimit(.minutes(4)))
    func recoverFinishesAfterLivecopyIsKilledMidCopy() async throws {
        let rig = try Rig("lv-kill", targets: ["vda"], policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.remove() }
        try await rig.crashMidCopy(alsoQEMU: false)
        try await rig.expectRecoverCompletes()
        try await rig.write(slot: 2)
        try rig.domain.destroy()
        try rig.expectDestinationsHold(slots: 0...2)
    }

    /// libvirtd goes away and comes back mid-copy: livecopy's connection closes, the
    /// domain and its QEMU job keep running, and `recover` reconnects and completes.
    @Test(.timeLimit(.minutes(4)))
    func recoverFinishesAfterLibvirtdRestartsMidCopy() async throws {
        let rig = try Rig("lv-daemon", targets: ["vda"], policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\nqmp_retries: 0\n")
        defer { rig.remove() }
        try await rig.write(slot: 0)
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        try await rig.waitForCopyJob(status: ["running"])
        try await LibvirtDomain.restartLibvirtd()
        let first = try await submit.wait(timeout: 120)
        try await rig.write(slot: 1)
        if try rig.planState() != .completed {
            #expect(first.status != 0, "a plan that did not complete exits non-zero")
            try await rig.expectRecoverCompletes()
        }
        #expect(try rig.planState() == .completed)
        try rig.domain.destroy()
        try rig.expectDestinationsHold(slots: 0...1)
    }

    /// The host goes down mid-copy (livecopy and QEMU die at once); the domain is started
    /// again as autostart would, boots the destination backed by the source, and
    /// `recover` copies what is missing.
    @Test(.timeLimit(.minutes(4)))
    func afterAHostRebootTheDomainBootsTheDestinationAndRecoverFinishes() async throws {
        let rig = try Rig("lv-reboot", targets: ["vda"], policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.remove() }
        try await rig.crashMidCopy(alsoQEMU: true)
        try rig.domain.start()
        let destination = try #require(rig.destinations["vda"])
        #expect(try rig.domain.diskSource(target: "vda") == LibvirtDiskSource(file: destination, backingFile: rig.sources["vda"]))
        try await rig.write(slot: 2)
        try await rig.expectRecoverCompletes()
        try rig.domain.destroy()
        try rig.expectDestinationsHold(slots: 0...2)
    }

    /// A domain started on its source while the destination holds newer writes: recover
    /// touches neither image and the disk needs attention.
    @Test(.timeLimit(.minutes(4)))
    func aDomainStartedOnTheSourceIsASplitBrain() async throws {
        let rig = try Rig("lv-split", targets: ["vda"], policy: "speed: 4M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.remove() }
        try await rig.crashMidCopy(alsoQEMU: true)
        // Someone boots the domain from its original definition, on the source.
        _ = try Virsh.checked(["undefine", rig.domain.name])
        _ = try Virsh.checked(["define", rig.domain.xmlPath])
        try rig.domain.start()
        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status != 0)
        let disk = try #require(try rig.store().disks(ofPlan: try rig.planId()).first)
        #expect(disk.state == .needsAttention, "\(disk.state): \(disk.error ?? "")")
        #expect(FileManager.default.fileExists(atPath: rig.sources["vda"]!))
        #expect(FileManager.default.fileExists(atPath: rig.destinations["vda"]!))
    }

    /// `livecopy cancel` mid-copy from a second process: the owner rolls back through
    /// libvirt (virDomainBlockJobAbort of nothing, the held copy cancelled through the
    /// pass-through, virDomainBlockCommit with ACTIVE, virDomainBlockJobAbort with PIVOT),
    /// the source gets the guest's writes, and the next boot runs on the source.
    @Test(.timeLimit(.minutes(4)))
    func cancelRollsBackThroughLibvirtAndTheNextBootRunsOnTheSource() async throws {
        let rig = try Rig("lv-cancel", targets: ["vda"], policy: "speed: 2M\nprogress_interval: 200ms\non_failure: rollback\n")
        defer { rig.remove() }
        try await rig.write(slot: 0)
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        try await rig.waitForCopyJob(status: ["running"])
        try await rig.write(slot: 1)  // into the destination
        let cancel = try await rig.livecopy.run(["cancel", String(try rig.planId())])
        #expect(cancel.status == 0, "cancel: \(cancel.stderr)")
        _ = try await submit.wait(timeout: 120)
        #expect(try rig.planState() == .rolledBack)
        let source = try #require(rig.sources["vda"])
        #expect(try rig.domain.diskSource(target: "vda") == LibvirtDiskSource(file: source, backingFile: nil))
        #expect(try rig.domain.diskSource(target: "vda", inactive: true) == LibvirtDiskSource(file: source, backingFile: nil),
                "the persistent definition names the source again")
        #expect(!FileManager.default.fileExists(atPath: rig.destinations["vda"]!), "livecopy's destination is deleted")
        try rig.domain.destroy()
        try rig.domain.start()
        #expect(try rig.domain.diskSource(target: "vda").file == source, "the next boot runs on the source")
        try rig.domain.destroy()
        #expect(try QEMUImage.verify(source, pattern: 0x11, offset: "0", length: "16M"))
        #expect(try QEMUImage.verify(source, pattern: 0x30, offset: "20M", length: "1M"))
        #expect(try QEMUImage.verify(source, pattern: 0x31, offset: "21M", length: "1M"), "the write made into the destination came back")
    }

    /// A disk on a network volume (NBD here) cannot take the recipe: refused in one line.
    @Test(.timeLimit(.minutes(2)))
    func aNetworkDiskIsRefusedWithOneLine() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-nbd")
        defer { scratch.remove() }
        chmod(scratch.path, 0o755)
        let image = scratch.appending("volume.raw"), source = scratch.appending("vda.qcow2")
        try QEMUImage.create(image, size: "16M", format: "raw")
        try QEMUImage.create(source, size: "16M")
        let socket = scratch.appending("nbd.sock")
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/bin/sh")
        // umask 0: QEMU, running as libvirt-qemu, must be able to connect.
        server.arguments = ["-c", "umask 000; exec qemu-nbd --persistent --shared=4 -f raw -k '\(socket)' '\(image)'"]
        try server.run()
        // SIGKILL: a process started from a Swift concurrency thread inherits its blocked
        // signals, SIGTERM among them.
        defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: socket) { try await Task.sleep(for: .milliseconds(50)) }
        let network = """
                <disk type='network' device='disk'>
                  <driver name='qemu' type='raw'/>
                  <source protocol='nbd'><host transport='unix' socket='\(socket)'/></source>
                  <target dev='vdb' bus='virtio'/>
                </disk>

            """
        let domain = try LibvirtDomain(name: "nbd", directory: scratch.url, disks: [(target: "vda", image: source)],
                                       persistent: false, extraDevices: network)
        defer { domain.undefineAndDestroy() }
        let plan = scratch.appending("plan.yaml")
        try "vms:\n  - name: nbd\n    libvirt: {domain: \(domain.name)}\n    disks:\n      - {device: vdb, destination: \(scratch.appending("new.qcow2"))}\n"
            .write(toFile: plan, atomically: true, encoding: .utf8)
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let result = try await livecopy.run(["submit", plan])
        #expect(result.status == 2)
        #expect(result.stderr.split(separator: "\n").count == 1, "one line: \(result.stderr)")
        #expect(result.stderr.contains("VM 'nbd' disk 'vdb': libvirt disk vdb is a 'network' disk; livecopy copies file-backed disks only"),
                "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.appending("new.qcow2")))
    }

    /// Plans naming what libvirt does not have are refused with one line, nothing touched.
    @Test(.timeLimit(.minutes(2)))
    func plansNamingWhatLibvirtLacksAreRefusedWithOneLine() async throws {
        let rig = try Rig("lv-bad", targets: ["vda"], policy: "")
        defer { rig.remove() }
        let cases: [(String, String, String)] = [
            ("no domain", "vms:\n  - name: x\n    libvirt: {domain: lctest-no-such-domain}\n    disks:\n      - {device: vda, destination: \(rig.scratch.appending("x.qcow2"))}\n",
             "VM 'x': libvirt at qemu:///system has no domain 'lctest-no-such-domain'"),
            ("no disk", "vms:\n  - name: x\n    libvirt: {domain: \(rig.domain.name)}\n    disks:\n      - {device: vdz, destination: \(rig.scratch.appending("y.qcow2"))}\n",
             "VM 'x' disk 'vdz': no such device in the VM (devices: vda)"),
        ]
        for (what, text, message) in cases {
            let path = rig.scratch.appending("bad.yaml")
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let result = try await rig.livecopy.run(["submit", path])
            #expect(result.status == 2, "\(what)")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(what): one line: \(result.stderr)")
            #expect(result.stderr.contains(message), "\(what): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: rig.scratch.appending("x.qcow2")))
            #expect(!FileManager.default.fileExists(atPath: rig.scratch.appending("y.qcow2")))
        }
        #expect(try rig.domain.diskSource(target: "vda").file == rig.sources["vda"], "the domain is untouched")
    }

    /// Every forward crash point, as for QMP VMs (about 3 s each, so the whole loop runs
    /// in CI): livecopy stops at the point; the guest writes; `recover` completes, and the
    /// persistent definition names the destination.
    @Test(.timeLimit(.minutes(10)))
    func recoverCompletesAfterACrashAtEveryForwardCrashPoint() async throws {
        let points = CrashPoint.forwardNames(retiring: .rename, verifying: false)  // libvirt disks: verify: none
        #expect(points.count >= 15, "the contract's forward crash points")
        for point in points {
            let rig = try Rig("lv-crash", targets: ["vda"], policy: "retire_source: rename\nprogress_interval: 200ms\n")
            defer { rig.remove() }
            try await rig.write(slot: 0)
            let submit = try await rig.livecopy.run(["submit", rig.planPath], environment: ["LIVECOPY_CRASH_AT": point])
            #expect(submit.status == 86, "[\(point)] submit stops at the crash point: \(submit.status)\n\(submit.stderr)")
            try await rig.write(slot: 1)
            try await rig.expectRecoverCompletes(point)
            try await rig.write(slot: 2)
            #expect(try rig.domain.diskSource(target: "vda", inactive: true).file == rig.destinations["vda"], "[\(point)]")
            try rig.domain.destroy()
            try rig.expectDestinationsHold(slots: 0...2)
        }
    }
}

extension LibvirtIntegrationTests {
    /// A persistent domain with one 32 MiB qcow2 disk per target (16 MiB of data), a
    /// plan moving each to `<target>-new.qcow2`, and a livecopy with its own database.
    final class Rig: Sendable {
        let scratch: TemporaryDirectory
        let domain: LibvirtDomain
        let sources: [String: String]
        let destinations: [String: String]
        let planPath: String
        let livecopy: LivecopyProcess

        /// A policy that names no `verify` gets `verify: none`: libvirt disks cannot be
        /// verified (docs/retirement.md#libvirt), and the default `sample` is refused.
        init(_ name: String, targets: [String], policy: String) throws {
            let policy = policy.contains("verify:") ? policy : policy + "verify: none\n"
            scratch = try TemporaryDirectory(prefix: "lc-\(name)")
            var sources: [String: String] = [:], destinations: [String: String] = [:]
            for target in targets {
                let source = scratch.appending("\(target).qcow2")
                try QEMUImage.create(source, size: "32M")
                try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "16M")
                sources[target] = source
                destinations[target] = scratch.appending("\(target)-new.qcow2")
            }
            self.sources = sources
            self.destinations = destinations
            domain = try LibvirtDomain(name: name, directory: scratch.url, disks: targets.map { ($0, sources[$0]!) }, persistent: true)
            let policyPath = scratch.appending("policy.yaml")
            try policy.write(toFile: policyPath, atomically: true, encoding: .utf8)
            var plan = "policy: \(policyPath)\nvms:\n  - name: \(name)\n    libvirt: {uri: \"qemu:///system\", domain: \(domain.name)}\n    disks:\n"
            for target in targets { plan += "      - {device: \(target), destination: \(destinations[target]!)}\n" }
            planPath = scratch.appending("plan.yaml")
            try plan.write(toFile: planPath, atomically: true, encoding: .utf8)
            livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        }

        func remove() {
            domain.undefineAndDestroy()
            scratch.remove()
        }

        /// Slot `n` is 1 MiB at 20 + n MiB of each disk, pattern 0x30 + n, flushed.
        func write(slot: Int) async throws {
            for target in sources.keys.sorted() {
                try await domain.write(pattern: UInt8(0x30 + slot), offset: "\(20 + slot)M", length: "1M", target: target)
            }
        }

        /// Every destination stands alone and holds the source's data and every slot.
        func expectDestinationsHold(slots: ClosedRange<Int>, sourceLocation: SourceLocation = #_sourceLocation) throws {
            for (target, destination) in destinations.sorted(by: { $0.key < $1.key }) {
                #expect(try QEMUImage.info(destination).backingFilename == nil, "\(target) stands alone", sourceLocation: sourceLocation)
                #expect(try QEMUImage.verify(destination, pattern: 0x11, offset: "0", length: "16M"), "\(target): the source's data",
                        sourceLocation: sourceLocation)
                for slot in slots {
                    #expect(try QEMUImage.verify(destination, pattern: UInt8(0x30 + slot), offset: "\(20 + slot)M", length: "1M"),
                            "\(target): slot \(slot)", sourceLocation: sourceLocation)
                }
            }
        }

        func store() throws -> SQLiteStore { try SQLiteStore(path: livecopy.database) }

        func planId() throws -> Int64 {
            guard let plan = try store().plans(states: nil, vm: nil, limit: 1).first else { throw WaitTimeout(what: "a plan") }
            return plan.id
        }

        func planState() throws -> PlanState? { try store().plan(id: try planId())?.state }

        /// The uid libvirt runs QEMU as.
        var qemuUID: uid_t { getpwnam("libvirt-qemu")?.pointee.pw_uid ?? 0 }

        func owner(of path: String) -> uid_t? {
            var info = stat()
            return stat(path, &info) == 0 ? info.st_uid : nil
        }

        /// `livecopy recover` exits 0 and the plan is completed.
        func expectRecoverCompletes(_ context: String = "", sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let recover = try await livecopy.run(["recover"])
            #expect(recover.status == 0, "[\(context)] recover: \(recover.stderr)\n\(recover.stdout)", sourceLocation: sourceLocation)
            #expect(try planState() == .completed, "[\(context)]", sourceLocation: sourceLocation)
        }

        /// Writes slot 0, starts `livecopy submit`, writes slot 1 once the copy runs, then
        /// SIGKILLs livecopy, and QEMU too when `alsoQEMU` (a host crash).
        func crashMidCopy(alsoQEMU: Bool) async throws {
            try await write(slot: 0)
            let submit = try livecopy.start(["submit", planPath])
            try await waitForCopyJob(status: ["running"])
            try await write(slot: 1)
            kill(submit.process.processIdentifier, SIGKILL)
            if alsoQEMU { try await domain.killQEMU() }
            _ = try await submit.wait(timeout: 30)
        }

        /// Waits until livecopy's copy job (`livecopy-stream-…`) shows one of `status`.
        func waitForCopyJob(status: Set<String>, timeout: Double = 60) async throws {
            let deadline = Date().addingTimeInterval(timeout)
            var last = "none"
            while Date() < deadline {
                let jobs = try await domain.withTestMonitor { try await $0.queryJobs() }
                if let job = jobs.first(where: { $0.id.hasPrefix("livecopy-stream-") }) {
                    if status.contains(job.status) { return }
                    last = job.status
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw WaitTimeout(what: "livecopy's copy job is \(status.sorted()) (last seen: \(last))")
        }
    }
}
