import Foundation
import InMemoryBackend
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import QMPBackend
import TestSupport
import Testing

/// `status` and `recover` name the same image to boot from, for every state: both ask
/// `Engine.bootImage(of:)`. Here the VM is gone, so the answer comes from the record and
/// the files.
struct BootImageAgreementTests {
    /// The disks' states (device name, then how the record is changed from `pending`).
    static let states: [(String, @Sendable (inout DiskRecord) -> Void)] = [
        ("streaming", { $0.state = .streaming; $0.destinationCreated = true }),
        // The record alone cannot tell (a snapshot under way); the files can: no destination.
        ("snapshotting", { $0.state = .snapshotting; $0.intent = .snapshot; $0.destinationCreated = true }),
        ("attention", { $0.state = .needsAttention; $0.error = "stopped" }),
        // A pivot back requested just before QEMU stopped, images that cannot be compared: nobody can tell.
        ("pivot", { $0.state = .rollingBack; $0.intent = .pivotBack; $0.destinationCreated = true }),
        ("failed", { $0.state = .failed; $0.destinationCreated = false; $0.error = "copy failed" }),
    ]

    @Test(.timeLimit(.minutes(2)))
    func statusAndRecoverNameTheSameBootImage() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-boot")
        defer { scratch.remove() }
        let database = scratch.appending("livecopy.db")
        let store = try SQLiteStore(path: database)
        let socket = scratch.appending("gone.qmp")
        let new = NewPlan(name: "boot", policyReference: nil, policy: try Policy.resolve(nil), state: .pending,
                          disks: Self.states.map { name, _ in
                              NewPlan.Disk(vmName: "vm", vmAddress: socket, device: name, destination: scratch.appending("\(name)-dst.qcow2"),
                                           source: scratch.appending("\(name)-src.qcow2"), sourceFormat: "qcow2", qmpDevice: name)
                          })
        let (plan, disks) = try store.insertPlan(new, at: Date())
        for (disk, (_, change)) in zip(disks, Self.states) {
            var changed = disk
            change(&changed)
            try await store.save(disk: changed, expecting: .pending, event: nil, at: Date())
        }
        var running = plan
        running.state = .running
        try await store.save(plan: running, expecting: .pending, event: nil, at: Date())
        running.state = .failed
        try await store.save(plan: running, expecting: .running, event: nil, at: Date())

        // The engine's answers, disk by disk.
        let engine = Engine(store: store, hypervisor: InMemoryHypervisor())
        var expected: [String: String?] = [:]
        for disk in try store.disks(ofPlan: plan.id) { expected[disk.device] = await engine.bootImage(of: disk) }
        #expect(expected["streaming"] == .some(scratch.appending("streaming-dst.qcow2")))
        #expect(expected["snapshotting"] == .some(scratch.appending("snapshotting-src.qcow2")))
        #expect(expected["attention"] == .some(scratch.appending("attention-src.qcow2")))
        #expect(expected["pivot"] == .some(nil))
        #expect(expected["failed"] == .some(scratch.appending("failed-src.qcow2")))

        let livecopy = LivecopyProcess(database: database)
        let status = try await livecopy.run(["status", String(plan.id)])
        #expect(status.status == 0, "\(status.stderr)")
        let json = try await livecopy.run(["status", String(plan.id), "--json"])
        let document = try JSONDecoder().decode(PlanDocument.self, from: Data(json.stdout.utf8))
        // recover finds the VM gone, changes no disk, and says where each must boot from.
        let recover = try await livecopy.run(["recover", "--plan", String(plan.id)])
        for (device, image) in expected {
            let line = try #require(status.stdout.split(separator: "\n").first { $0.contains("vm/\(device) ") }, "\(status.stdout)")
            #expect(line.hasSuffix("boot from: \(image ?? "unknown (run livecopy recover)")"), "status: \(line)")
            #expect(document.disks.first { $0.device == device }?.bootImage == image, "status --json for \(device)")
            let advice = try #require(recover.stderr.split(separator: "\n").last { $0.contains("vm/\(device):") }, "\(recover.stderr)")
            if let image {
                #expect(advice.hasSuffix("the VM must boot from \(image)"), "recover: \(advice)")
            } else {
                #expect(advice.contains("nobody can tell which image the VM must boot from"), "recover: \(advice)")
            }
        }
    }
}
