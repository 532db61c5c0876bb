import Foundation
import LivecopyModel
import LivecopyStore
import QMP
import TestSupport
import Testing

/// End to end against real QEMU: `livecopy submit` copies three disks of two VMs while
/// the guests write, and `history`/`show` report it.
@Suite(.requires(.qemu))
struct SubmitIntegrationTests {
    /// A disk of the test: its VM, drive, images and the data written to it so far.
    struct TestDisk {
        let vm: String
        let drive: String
        let source: String
        let destination: String
        /// (pattern, offset, length) that must read back from the destination at the end.
        var expected: [(UInt8, String, String)]
    }

    @Test(.timeLimit(.minutes(4)))
    func copiesTwoVMsAndThreeDisksWhileTheGuestsWrite() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-submit")
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.appending("new"), withIntermediateDirectories: true)

        var disks = [
            TestDisk(vm: "vm1", drive: "drive0", source: scratch.appending("vm1-a.qcow2"),
                     destination: scratch.appending("new/vm1-a.qcow2"), expected: [(0x11, "0", "16M")]),
            // Each source holds data from the start; the guest later overwrites 5M+64k of it.
            TestDisk(vm: "vm1", drive: "drive1", source: scratch.appending("vm1-b.qcow2"),
                     destination: scratch.appending("new/vm1-b.qcow2"), expected: [(0x12, "4M", "12M")]),
            TestDisk(vm: "vm2", drive: "drive0", source: scratch.appending("vm2-a.qcow2"),
                     destination: scratch.appending("new/vm2-a.qcow2"), expected: [(0x13, "0", "16M")]),
        ]
        for (index, disk) in disks.enumerated() {
            try QEMUImage.create(disk.source, size: "64M")
            let (pattern, offset, length) = disk.expected[0]
            try QEMUImage.write(disk.source, pattern: pattern, offset: offset, length: length)
            // What must survive of it once the guest has written 0x31 at 5M+64k (below).
            let start = offset == "0" ? [(pattern, "0", "5M")] : [(pattern, "4M", "1M")]
            disks[index].expected = start + [(pattern, "5184k", "11200k")]
        }
        let vm1 = try QEMUVirtualMachine(name: "vm1", directory: scratch.url, drives: [
            (id: "drive0", image: disks[0].source, format: "qcow2"), (id: "drive1", image: disks[1].source, format: "qcow2"),
        ])
        let vm2 = try QEMUVirtualMachine(name: "vm2", directory: scratch.url, drives: [
            (id: "drive0", image: disks[2].source, format: "qcow2"),
        ])
        let vms = ["vm1": vm1, "vm2": vm2]

        // Before the copy.
        for (index, disk) in disks.enumerated() {
            try await vms[disk.vm]!.guestWrite(drive: disk.drive, pattern: 0x21, offset: "32M", length: "64k")
            disks[index].expected.append((0x21, "32M", "64k"))
        }

        let plan = """
            name: two-vms
            policy: ./slow.yaml
            vms:
              - name: vm1
                qmp: \(vm1.livecopySocket)
                disks:
                  - device: drive0
                    destination: \(disks[0].destination)
                  - device: drive1
                    destination: \(disks[1].destination)
              - name: vm2
                qmp: \(vm2.livecopySocket)
                disks:
                  - device: drive0
                    destination: \(disks[2].destination)
            """
        try plan.write(toFile: scratch.appending("plan.yaml"), atomically: true, encoding: .utf8)
        // 16 MiB at 4 MiB/s: about four seconds of streaming, long enough to write during it.
        try "speed: 4M\nmax_parallel_disks: 3\nretire_source: rename\nprogress_interval: 200ms\n"
            .write(toFile: scratch.appending("slow.yaml"), atomically: true, encoding: .utf8)

        let database = scratch.appending("livecopy.db")
        let livecopy = LivecopyProcess(database: database)
        let submit = try livecopy.start(["submit", scratch.appending("plan.yaml"), "--json"])

        // During the copy: wait until every disk streams, then write over copied and uncopied areas.
        let store = try await waitForStore(at: database)
        try await waitUntil("every disk streams") {
            let plans = try store.plans(states: nil, vm: nil, limit: 1)
            guard let plan = plans.first else { return false }
            return try store.disks(ofPlan: plan.id).allSatisfy { $0.state == .streaming }
        }
        for (index, disk) in disks.enumerated() {
            try await vms[disk.vm]!.guestWrite(drive: disk.drive, pattern: 0x31, offset: "5M", length: "64k")
            try await vms[disk.vm]!.guestWrite(drive: disk.drive, pattern: 0x32, offset: "48M", length: "1M")
            disks[index].expected += [(0x31, "5M", "64k"), (0x32, "48M", "1M")]
        }

        let result = try await submit.wait()
        #expect(result.status == 0, "submit failed: \(result.stderr)")
        let document = try JSONDecoder().decode(PlanDocument.self, from: Data(result.stdout.utf8))
        #expect(document.state == "completed")
        #expect(document.disks.map(\.state) == ["completed", "completed", "completed"])
        #expect(document.disks.map(\.source) == disks.map(\.source))
        #expect(result.stderr.contains("snapshotting → streaming"))

        // After the copy: the guests now write into the destinations.
        for (index, disk) in disks.enumerated() {
            try await vms[disk.vm]!.guestWrite(drive: disk.drive, pattern: 0x41, offset: "60M", length: "64k")
            disks[index].expected.append((0x41, "60M", "64k"))
        }
        await vm1.stop()
        await vm2.stop()

        // Offline: every write is in the destination, which stands alone; sources are retired.
        for disk in disks {
            for (pattern, offset, length) in disk.expected {
                #expect(try QEMUImage.verify(disk.destination, pattern: pattern, offset: offset, length: length),
                        "\(disk.vm)/\(disk.drive): pattern \(pattern) at \(offset)+\(length)")
            }
            #expect(try QEMUImage.verify(disk.destination, pattern: 0, offset: "20M", length: "1M"),
                    "an area never written reads as zeroes")
            #expect(try QEMUImage.info(disk.destination).backingFilename == nil)
            #expect(!FileManager.default.fileExists(atPath: disk.source))
            #expect(FileManager.default.fileExists(atPath: disk.source + ".retired"))
        }

        // history --json and show --json tell the whole story.
        let history = try await livecopy.run(["history", "--json"])
        #expect(history.status == 0)
        let plans = try JSONDecoder().decode([PlanDocument].self, from: Data(history.stdout.utf8))
        #expect(plans.count == 1)
        #expect(plans.first?.state == "completed")
        #expect(plans.first?.finishedAt != nil)
        #expect(plans.first?.disks.map(\.destination) == disks.map(\.destination))
        #expect(plans.first?.disks.allSatisfy { $0.bytesTotal > 0 && $0.bytesDone == $0.bytesTotal } == true)

        let show = try await livecopy.run(["show", String(document.id), "--json"])
        #expect(show.status == 0)
        let shown = try JSONDecoder().decode(PlanDocument.self, from: Data(show.stdout.utf8))
        let events = try #require(shown.events)
        for disk in disks {
            let label = "\(disk.vm)/\(disk.drive)"
            let path = events.filter { $0.disk == label && $0.kind == "transition" }.map { "\($0.from ?? "")→\($0.to ?? "")" }
            #expect(path == ["pending→snapshotting", "snapshotting→streaming", "streaming→retiring", "retiring→completed"], "\(label)")
            #expect(events.contains { $0.disk == label && $0.kind == "intent" && $0.detail.hasPrefix("block-stream") })
        }
        #expect(events.last?.to == "completed")
        #expect(events.allSatisfy { $0.at.hasSuffix("Z") && $0.at.contains("T") })

        let filtered = try await livecopy.run(["history", "--vm", "vm2", "--state", "completed"])
        #expect(filtered.stdout.contains("two-vms"))
        let none = try await livecopy.run(["history", "--vm", "nosuchvm", "--json"])
        #expect(none.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "[\n\n]" || none.stdout.contains("[]"))
    }
}

/// Opens the store once the process under test has created it.
func waitForStore(at path: String) async throws -> SQLiteStore {
    try await waitUntil("the database exists") { FileManager.default.fileExists(atPath: path) }
    return try SQLiteStore(path: path)
}

/// Polls `condition` every 50 ms until it holds, failing after `timeout` seconds.
func waitUntil(_ what: String, timeout: Double = 60, _ condition: () throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw WaitTimeout(what: what)
}

struct WaitTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting until \(what)" }
}
