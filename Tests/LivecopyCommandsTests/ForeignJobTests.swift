import Foundation
import LivecopyModel
import QMP
import TestSupport
import Testing

/// A disk busy with a block job of another tool is refused at preflight, in one line
/// naming the job, exit 2; livecopy touches nothing and never cancels or dismisses it.
@Suite(.serialized, .requires(.qemu))
struct ForeignJobTests {
    /// A VM whose drive0 is `top.qcow2` (backed by `base.qcow2`, 8 MiB of data in each),
    /// a database and a plan copying drive0.
    struct Rig {
        let scratch: TemporaryDirectory
        let vm: QEMUVirtualMachine
        let livecopy: LivecopyProcess
        let planPath: String
        let destination: String

        init(_ name: String) throws {
            scratch = try TemporaryDirectory(prefix: name)
            let base = scratch.appending("base.qcow2")
            let top = scratch.appending("top.qcow2")
            try QEMUImage.create(base, size: "64M")
            try QEMUImage.write(base, pattern: 0x11, offset: "0", length: "8M")
            try QEMUImage.create(top, size: "64M", backing: base, backingFormat: "qcow2")
            try QEMUImage.write(top, pattern: 0x22, offset: "16M", length: "8M")
            vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [(id: "drive0", image: top, format: "qcow2")])
            livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
            destination = scratch.appending("dst.qcow2")
            planPath = scratch.appending("plan.yaml")
            try """
                vms:
                  - name: vm
                    qmp: \(vm.livecopySocket)
                    disks:
                      - device: drive0
                        destination: \(destination)
                """.write(toFile: planPath, atomically: true, encoding: .utf8)
        }
    }

    /// Jobs another tool may run on the disk: a stream named after the device (QEMU's
    /// default id), and a mirror with an id of its own. Both at 1 byte/s, so they stay.
    static let jobs: [(name: String, command: String, arguments: [String: JSONValue])] = [
        ("stream", "block-stream", ["device": "drive0", "speed": 1]),
        ("mirror", "drive-mirror", ["device": "drive0", "job-id": "backup-tool-mirror", "sync": "full", "format": "qcow2",
                                    "speed": 1, "target": "MIRROR"]),
    ]

    @Test(.timeLimit(.minutes(2)), arguments: [0, 1])
    func submitRefusesADiskWithAForeignJobAndLeavesTheJobAlone(index: Int) async throws {
        let (name, command, template) = Self.jobs[index]
        let rig = try Rig("lc-foreign-\(name)")
        defer { rig.scratch.remove() }
        defer { rig.vm.kill() }
        var arguments = template
        if arguments["target"] != nil { arguments["target"] = .string(rig.scratch.appending("mirror.qcow2")) }
        let monitor = try await rig.vm.testMonitor()
        try await monitor.execute(command, arguments)
        let before = try await monitor.queryJobs()
        let foreign = try #require(before.first, "the \(name) job started")

        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        let message = submit.stderr.trimmingCharacters(in: .newlines)
        #expect(submit.status == 2, "\(message)")
        #expect(!message.contains("\n"), "one line: \(message)")
        #expect(message.contains("job '\(foreign.id)' (\(foreign.type), "), "\(message)")
        #expect(message.contains("of another tool"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: rig.destination), "nothing created")

        // The foreign job is still there, as it was; the VM is still on its image.
        let after = try await monitor.queryJobs()
        #expect(after.map(\.id) == before.map(\.id))
        #expect(after.first?.status != "concluded", "\(after.map(\.status))")
        let inserted = try await monitor.queryBlock().first { $0.device == "drive0" }?.inserted
        #expect(inserted?.file == rig.scratch.appending("top.qcow2"))
        try await monitor.execute("block-job-cancel", ["device": .string(foreign.id), "force": true])
    }

    /// A job livecopy did not make is never cancelled or dismissed by it: the refusal above
    /// sent queries only.
    @Test(.timeLimit(.minutes(2)))
    func theRefusalSendsNoCommandThatChangesAnything() async throws {
        let rig = try Rig("lc-foreign-quiet")
        defer { rig.scratch.remove() }
        defer { rig.vm.kill() }
        let monitor = try await rig.vm.testMonitor()
        try await monitor.execute("block-stream", ["device": "drive0", "job-id": "someone-elses", "speed": 1])
        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        #expect(submit.status == 2, "\(submit.stderr)")
        // QEMU's own record of the job: still running, never paused, cancelled or dismissed.
        let jobs = try await monitor.queryBlockJobs()
        #expect(jobs.map(\.device) == ["someone-elses"])
        #expect(jobs.first?.paused == false)
        #expect(jobs.first?.speed == 1)
        let history = try await rig.livecopy.run(["history", "--state", "refused", "--json"])
        let plans = try JSONDecoder().decode([PlanDocument].self, from: Data(history.stdout.utf8))
        #expect(plans.count == 1)
        #expect(plans.first?.error?.contains("job 'someone-elses' (stream, running)") == true, "\(plans.first?.error ?? "")")
        try await monitor.execute("block-job-cancel", ["device": "someone-elses", "force": true])
    }

    /// livecopy's own jobs are not foreign: while plan 1's job on drive0 runs on after its
    /// livecopy died (`livecopy-mirror-1`, or a stream's `livecopy-stream-1`), a second plan
    /// copying drive1 of the same VM is accepted.
    @Test(.timeLimit(.minutes(3)), arguments: ["mirror", "stream"])
    func anotherPlansJobOnAnotherDiskOfTheVMIsNotForeign(strategy: String) async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-own-job")
        defer { scratch.remove() }
        var drives: [(id: String, image: String, format: String)] = []
        for index in 0..<2 {
            let image = scratch.appending("src\(index).qcow2")
            try QEMUImage.create(image, size: "64M")
            try QEMUImage.write(image, pattern: 0x11, offset: "0", length: "16M")
            drives.append((id: "drive\(index)", image: image, format: "qcow2"))
        }
        let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: drives)
        defer { vm.kill() }
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        try "strategy: \(strategy)\nspeed: 1M\nprogress_interval: 200ms\n".write(toFile: scratch.appending("slow.yaml"), atomically: true, encoding: .utf8)
        for index in 0..<2 {
            try """
                policy: ./slow.yaml
                vms:
                  - name: vm
                    qmp: \(vm.livecopySocket)
                    disks:
                      - device: drive\(index)
                        destination: \(scratch.appending("dst\(index).qcow2"))
                """.write(toFile: scratch.appending("plan\(index).yaml"), atomically: true, encoding: .utf8)
        }
        // Plan 1's livecopy dies right after starting its job, which runs on in QEMU (a
        // QMP monitor serves one client: two live plans never share one).
        let intent = strategy == "mirror" ? "blockdev-mirror" : "block-stream"
        let first = try await livecopy.run(["submit", scratch.appending("plan0.yaml")], environment: ["LIVECOPY_CRASH_AT": "outcome:\(intent)"])
        #expect(first.status == RecoveryIntegrationTests.crashStatus, "\(first.stderr)")
        let job = try await vm.testMonitor().queryJobs().first { $0.id.hasPrefix("livecopy-") }
        #expect(job?.id == "livecopy-\(strategy)-1" && job?.status.description == "running", "\(String(describing: job))")
        let validate = try await livecopy.run(["validate", scratch.appending("plan1.yaml")])
        #expect(validate.status == 0 && !validate.stderr.contains("another tool"), "\(validate.status)\n\(validate.stderr)")
        let cancel = try await livecopy.run(["cancel", "1"])
        #expect(cancel.status == 0, "\(cancel.stderr)")
    }
}
