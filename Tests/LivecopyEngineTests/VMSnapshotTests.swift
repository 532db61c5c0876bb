import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import QMPBackend
import Synchronization
import TestSupport
import Testing

/// A real QMP session that also remembers every command sent through it.
final class RecordingSession: QMPSession, Sendable {
    let base: QMPConnection
    private let sent = Mutex<[(String, [String: JSONValue]?)]>([])

    init(_ base: QMPConnection) { self.base = base }

    var commands: [(name: String, arguments: [String: JSONValue]?)] { sent.withLock { $0.map { ($0.0, $0.1) } } }

    func execute(_ command: String, arguments: [String: JSONValue]?, timeout: Double?) async throws -> JSONValue {
        sent.withLock { $0.append((command, arguments)) }
        return try await base.execute(command, arguments: arguments, timeout: timeout)
    }

    func events() -> AsyncStream<QMPEvent> { base.events() }
    var isClosed: Bool { base.isClosed }
    func close() async { await base.close() }
}

/// Connects to real QEMU and keeps every session, so a test can see what was sent.
final class RecordingConnector: QMPConnector, Sendable {
    private let opened = Mutex<[String: [RecordingSession]]>([:])

    func connect(socketPath: String, commandTimeout: Double) async throws -> any QMPSession {
        let session = RecordingSession(
            try await QMPConnection.connect(socketPath: socketPath, connectTimeout: 5, commandTimeout: commandTimeout))
        opened.withLock { $0[socketPath, default: []].append(session) }
        return session
    }

    /// Every command sent to the VM at `socket`, in order.
    func commands(to socket: String) -> [(name: String, arguments: [String: JSONValue]?)] {
        opened.withLock { $0[socket] ?? [] }.flatMap(\.commands)
    }
}

/// The disks of one VM switch to their destinations in one QMP `transaction`, against
/// real QEMU: together when it succeeds, none when QEMU refuses it, and again together
/// when the plan is resumed.
@Suite(.serialized, .requires(.qemu))
struct VMSnapshotTests {
    struct Rig {
        let scratch: TemporaryDirectory
        let store: SQLiteStore
        let vm1: QEMUVirtualMachine
        let vm2: QEMUVirtualMachine
        /// (vm, drive, source, destination, pattern)
        let disks: [(vm: QEMUVirtualMachine, drive: String, source: String, destination: String, pattern: UInt8)]

        /// vm1 with drive0 and drive1, vm2 with drive0; each source holds 8 MiB of its own pattern.
        init(_ name: String) throws {
            scratch = try TemporaryDirectory(prefix: name)
            store = try SQLiteStore(path: scratch.appending("livecopy.db"))
            var images: [(String, String, UInt8)] = []
            for (index, file) in ["vm1-a", "vm1-b", "vm2-a"].enumerated() {
                let source = scratch.appending("\(file).qcow2")
                try QEMUImage.create(source, size: "32M")
                try QEMUImage.write(source, pattern: UInt8(0x11 + index), offset: "0", length: "8M")
                images.append((source, scratch.appending("\(file).new.qcow2"), UInt8(0x11 + index)))
            }
            vm1 = try QEMUVirtualMachine(name: "vm1", directory: scratch.url, drives: [
                (id: "drive0", image: images[0].0, format: "qcow2"), (id: "drive1", image: images[1].0, format: "qcow2"),
            ])
            vm2 = try QEMUVirtualMachine(name: "vm2", directory: scratch.url, drives: [(id: "drive0", image: images[2].0, format: "qcow2")])
            disks = [
                (vm1, "drive0", images[0].0, images[0].1, images[0].2),
                (vm1, "drive1", images[1].0, images[1].1, images[1].2),
                (vm2, "drive0", images[2].0, images[2].1, images[2].2),
            ]
        }

        var plan: Plan {
            Plan(name: "txn", policyReference: nil, vms: [
                .init(name: "vm1", address: .qmp(socket: vm1.livecopySocket), disks: [
                    .init(device: "drive0", destination: disks[0].destination), .init(device: "drive1", destination: disks[1].destination),
                ]),
                .init(name: "vm2", address: .qmp(socket: vm2.livecopySocket), disks: [.init(device: "drive0", destination: disks[2].destination)]),
            ])
        }

        static func policy() throws -> Policy {
            var policy = try Policy.resolve(nil)
            policy.retireSource = .keep
            policy.progressInterval = 0.1
            return policy
        }

        func active(_ disk: Int) async throws -> (file: String?, backing: String?) {
            let inserted = try await disks[disk].vm.testMonitor().queryBlock().first { $0.device == disks[disk].drive }?.inserted
            return (inserted?.file, inserted?.backingFile)
        }

        /// Stops the VMs and checks each destination offline: its own pattern, the guest's
        /// write at 16M, no backing file.
        func expectDestinationsHoldEverything() async throws {
            await vm1.stop()
            await vm2.stop()
            for disk in disks {
                #expect(try QEMUImage.verify(disk.destination, pattern: disk.pattern, offset: "0", length: "8M"), "\(disk.destination)")
                #expect(try QEMUImage.verify(disk.destination, pattern: 0x5c, offset: "16M", length: "64k"), "\(disk.destination)")
                #expect(try QEMUImage.info(disk.destination).backingFilename == nil)
            }
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func theDisksOfAVMSwitchInOneTransaction() async throws {
        let rig = try Rig("lc-txn")
        defer { rig.scratch.remove() }
        let connector = RecordingConnector()
        let engine = Engine(store: rig.store, hypervisor: QMPHypervisor(connector: connector))
        let policy = try Rig.policy()
        let record = try engine.record(rig.plan, policy: policy, disks: try await engine.preflight(rig.plan, policy: policy))
        for disk in rig.disks { try await disk.vm.guestWrite(drive: disk.drive, pattern: 0x5c, offset: "16M", length: "64k") }
        let plan = try await engine.run(planId: record.id)
        await engine.shutdown()
        #expect(plan.state == .completed, "\(plan.error ?? "")")

        // vm1: one transaction with both disks' snapshots, mode existing, format given, each
        // followed by its dirty bitmap on the new overlay (the default `verify: sample`).
        // (The verification's own transactions freeze bitmaps and switch nothing.)
        func switches(_ socket: String) -> [(name: String, arguments: [String: JSONValue]?)] {
            connector.commands(to: socket).filter { command in
                command.name == "transaction"
                    && command.arguments?["actions"]?.arrayValue?.contains { $0["type"]?.stringValue == "blockdev-snapshot-sync" } == true
            }
        }
        let vm1Commands = connector.commands(to: rig.vm1.livecopySocket)
        #expect(!vm1Commands.contains { $0.name == "blockdev-snapshot-sync" })
        let transactions = switches(rig.vm1.livecopySocket)
        #expect(transactions.count == 1)
        let actions = transactions.first?.arguments?["actions"]?.arrayValue ?? []
        #expect(actions.count == 4)
        let snapshots = actions.filter { $0["type"]?.stringValue == "blockdev-snapshot-sync" }
        let bitmaps = actions.filter { $0["type"]?.stringValue == "block-dirty-bitmap-add" }
        #expect(Set(snapshots.compactMap { $0["data"]?["device"]?.stringValue }) == ["drive0", "drive1"])
        #expect(snapshots.allSatisfy { $0["data"]?["mode"]?.stringValue == "existing" && $0["data"]?["format"]?.stringValue == "qcow2" })
        #expect(Set(bitmaps.compactMap { $0["data"]?["node"]?.stringValue })
                == Set(snapshots.compactMap { $0["data"]?["snapshot-node-name"]?.stringValue }), "each bitmap on an overlay")
        // vm2: its own transaction, of its one disk and its bitmap.
        #expect(switches(rig.vm2.livecopySocket).map { $0.arguments?["actions"]?.arrayValue?.count } == [2])

        for index in rig.disks.indices {
            let active = try await rig.active(index)
            #expect(active.file == rig.disks[index].destination && active.backing == nil)
        }
        // Each destination was flushed by its node name before its job was finalized (a
        // reopen, which flushes and reports a failure), and QEMU confirmed it.
        for disk in try rig.store.disks(ofPlan: record.id) where disk.vmName == "vm1" {
            let flush = "qemu-io \(disk.destinationNodeName) \"reopen\""
            #expect(vm1Commands.contains { $0.name == "human-monitor-command" && $0.arguments?["command-line"]?.stringValue == flush },
                    "\(flush) not sent")
        }
        let details = try rig.store.events(ofPlan: record.id).map(\.detail)
        #expect(details.filter { $0.contains("confirmed by QEMU") }.count == (try rig.store.disks(ofPlan: record.id).count), "\(details)")
        try await rig.expectDestinationsHoldEverything()
    }

    @Test(.timeLimit(.minutes(2)))
    func aRefusedTransactionSwitchesNoDiskOfTheVM() async throws {
        let rig = try Rig("lc-txnfail")
        defer { rig.scratch.remove() }
        let policy = try Rig.policy()
        let engine = Engine(store: rig.store, hypervisor: QMPHypervisor(connector: TestConnector()))
        let record = try engine.record(rig.plan, policy: policy, disks: try await engine.preflight(rig.plan, policy: policy))
        let disks = try rig.store.disks(ofPlan: record.id)
        // A node already named like vm1's second destination: QEMU refuses that action, so
        // the whole transaction; the first disk's snapshot alone would have succeeded.
        let blocker = try #require(disks.first { $0.vmName == "vm1" && $0.device == "drive1" }).destinationNodeName
        let monitor = try await rig.vm1.testMonitor()
        try await monitor.execute("blockdev-add", ["driver": "null-co", "node-name": .string(blocker)])
        for disk in rig.disks { try await disk.vm.guestWrite(drive: disk.drive, pattern: 0x5c, offset: "16M", length: "64k") }

        let stopped = try await engine.run(planId: record.id)
        #expect(stopped.state == .failed)
        let after = try rig.store.disks(ofPlan: record.id)
        for disk in after where disk.vmName == "vm1" {
            #expect(disk.state == .failed, "\(disk.device): \(disk.state)")
            #expect(disk.error?.contains("snapshot transaction of 2 disks of VM 'vm1' failed, none switched") == true, "\(disk.error ?? "")")
            #expect(disk.error?.contains("node-name already in use") == true, "QEMU's reason is kept: \(disk.error ?? "")")
            #expect(!FileManager.default.fileExists(atPath: disk.destination), "the file livecopy made is removed")
        }
        #expect(after.first { $0.vmName == "vm2" }?.state == .completed, "another VM's disk is not held back")
        for index in 0..<2 {
            let active = try await rig.active(index)
            #expect(active.file == rig.disks[index].source && active.backing == nil, "vm1 \(rig.disks[index].drive) stays on its source")
        }

        // The operator removes the blocker; the next run (recover) snapshots both together.
        try await monitor.execute("blockdev-del", ["node-name": .string(blocker)])
        let resumed = try await engine.run(planId: record.id)
        await engine.shutdown()
        #expect(resumed.state == .completed, "\(resumed.error ?? "")")
        try await rig.expectDestinationsHoldEverything()
    }
}
