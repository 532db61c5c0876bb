import Foundation
import LivecopyModel
import LivecopyStore
import QMP
import TestSupport
import Testing

/// livecopy crashed in the middle of a two-disk VM's snapshot transaction, at each crash
/// point of the snapshot step: the VM's disks are always on the same side (both on their
/// sources, or both on their destinations), and `recover` carries both to completion.
@Suite(.serialized, .requires(.qemu))
struct VMSnapshotCrashTests {
    static let snapshotCrashPoints = [
        "transition:snapshotting", "intent:create-destination", "intent:blockdev-snapshot-sync", "sent:blockdev-snapshot-sync",
        "outcome:blockdev-snapshot-sync", "transition:streaming",
    ]

    @Test(.timeLimit(.minutes(4)))
    func aCrashMidTransactionLeavesTheDisksTogetherAndRecoverFinishesBoth() async throws {
        for point in Self.snapshotCrashPoints {
            let scratch = try TemporaryDirectory(prefix: "lc-txncrash")
            defer { scratch.remove() }
            let drives = ["drive0", "drive1"]
            let sources = drives.map { scratch.appending("\($0).qcow2") }
            let destinations = drives.map { scratch.appending("\($0).new.qcow2") }
            for (index, source) in sources.enumerated() {
                try QEMUImage.create(source, size: "32M")
                try QEMUImage.write(source, pattern: UInt8(0x11 + index), offset: "0", length: "4M")
            }
            let vm = try QEMUVirtualMachine(name: "vm", directory: scratch.url, drives: [
                (id: "drive0", image: sources[0], format: "qcow2"), (id: "drive1", image: sources[1], format: "qcow2"),
            ])
            let planPath = scratch.appending("plan.yaml")
            try """
                name: txn-crash
                policy: ./policy.yaml
                vms:
                  - name: vm
                    qmp: \(vm.livecopySocket)
                    disks:
                      - device: drive0
                        destination: \(destinations[0])
                      - device: drive1
                        destination: \(destinations[1])
                """.write(toFile: planPath, atomically: true, encoding: .utf8)
            try "retire_source: keep\nprogress_interval: 200ms\n".write(
                toFile: scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)
            let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))

            let submit = try await livecopy.run(["submit", planPath], environment: ["LIVECOPY_CRASH_AT": point])
            #expect(submit.status == RecoveryIntegrationTests.crashStatus, "[\(point)] status \(submit.status)\n\(submit.stderr)")

            // Crash-consistent: both disks on their sources, or both on their destinations.
            let devices = try await vm.testMonitor().queryBlock()
            let active = drives.map { drive in devices.first { $0.device == drive }?.inserted?.file }
            let onSources = active == sources.map(Optional.some)
            let onDestinations = active == destinations.map(Optional.some)
            #expect(onSources || onDestinations, "[\(point)] the VM's disks were split: \(active)")
            for drive in drives {
                try await vm.guestWrite(drive: drive, pattern: 0x5d, offset: "8M", length: "64k")
            }

            let recover = try await livecopy.run(["recover"])
            #expect(recover.status == 0, "[\(point)] recover: \(recover.status)\n\(recover.stderr)\n\(recover.stdout)")
            let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
            let plan = try #require(try store.plans(states: nil, vm: nil, limit: 1).first)
            #expect(plan.state == .completed, "[\(point)] plan \(plan.state): \(plan.error ?? "")")
            await vm.stop()
            for (index, destination) in destinations.enumerated() {
                #expect(try QEMUImage.verify(destination, pattern: UInt8(0x11 + index), offset: "0", length: "4M"), "[\(point)] \(destination)")
                #expect(try QEMUImage.verify(destination, pattern: 0x5d, offset: "8M", length: "64k"), "[\(point)] \(destination)")
                #expect(try QEMUImage.info(destination).backingFilename == nil, "[\(point)] \(destination)")
            }
        }
    }
}
