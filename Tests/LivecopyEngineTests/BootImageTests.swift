import Foundation
import InMemoryBackend
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import QMPBackend
import TestSupport
import Testing

/// `Engine.bootImage(of:)` with the VM gone (an in-memory hypervisor with no VM): the
/// record's answer, else the images'.
struct BootImageTests {
    /// One disk recorded as `change` says, and an engine asking `inspector` about its images.
    static func disk(_ scratch: TemporaryDirectory, _ change: (inout DiskRecord) -> Void) throws -> (SQLiteStore, DiskRecord) {
        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        let new = NewPlan(name: "boot", policyReference: nil, policy: try Policy.resolve(nil), state: .pending, disks: [
            NewPlan.Disk(vmName: "vm", vmAddress: scratch.appending("gone.qmp"), device: "drive0", destination: scratch.appending("dst.qcow2"),
                         source: scratch.appending("src.qcow2"), sourceFormat: "qcow2", qmpDevice: "drive0"),
        ])
        var disk = try store.insertPlan(new, at: Date()).1[0]
        change(&disk)
        try store.save(disk: disk, expecting: .pending, event: nil, at: Date())
        return (store, disk)
    }

    /// A pivot back to the source was requested just before QEMU stopped: the source is
    /// the answer only if the images hold the same bytes; otherwise nobody can tell.
    @Test(arguments: [true, false])
    func anInterruptedPivotAsksWhetherTheImagesAreTheSame(same: Bool) async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-boot-pivot")
        defer { scratch.remove() }
        let (store, disk) = try Self.disk(scratch) {
            $0.state = .rollingBack
            $0.intent = .pivotBack
            $0.destinationCreated = true
        }
        let engine = Engine(store: store, hypervisor: InMemoryHypervisor(), inspector: StubInspector(same: same))
        #expect(await engine.bootImage(of: disk) == (same ? disk.source : nil))
        #expect(await engine.bootAdvice(for: disk).contains(same ? "the VM must boot from \(disk.source ?? "")" : "nobody can tell"))
    }

    /// A destination livecopy made, the VM not running: boot from it if it holds guest
    /// writes of its own, else from the source.
    @Test(arguments: [true, false])
    func aDestinationWithWritesOfItsOwnIsTheOneToBootFrom(ownData: Bool) async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-boot-own")
        defer { scratch.remove() }
        let (store, disk) = try Self.disk(scratch) {
            $0.state = .snapshotting
            $0.intent = .snapshot
            $0.destinationCreated = true
        }
        _ = FileManager.default.createFile(atPath: disk.destination, contents: Data())
        let engine = Engine(store: store, hypervisor: InMemoryHypervisor(), inspector: StubInspector(ownData: ownData))
        #expect(await engine.bootImage(of: disk) == (ownData ? disk.destination : disk.source))
    }
}
