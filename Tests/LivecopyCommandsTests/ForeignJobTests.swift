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
}
