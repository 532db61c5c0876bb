import Foundation
import InMemoryBackend
import LivecopyBackend
@testable import LivecopyEngine
import LivecopyModel
import Testing

/// The engine through `RoutingHypervisor`, as the commands wire it: a plan naming a QMP
/// VM and a libvirt VM records each disk's VM address in its stored form and drives each
/// VM through its own backend; a build without libvirt refuses the libvirt VM before
/// anything is touched.
extension InMemoryEngineTests {
    /// The rig's VM (at a QMP address, on the rig's hypervisor) and a libvirt domain
    /// `db01` with disk `vda` on a backend of its own.
    struct MixedRig {
        let rig: Rig
        let libvirt = InMemoryHypervisor()
        let db01: InMemoryVM
        let address = VMAddress.libvirt(uri: "qemu:///system", domain: "db01")
        let source: String
        let destination: String

        init(_ name: String) throws {
            rig = try Rig(name)
            source = rig.scratch.appending("db01.qcow2")
            destination = rig.scratch.appending("db01-new.qcow2")
            _ = FileManager.default.createFile(atPath: source, contents: Data("db01".utf8))
            db01 = libvirt.addVM(at: address.stored, devices: [.init(name: "vda", chain: [.init(file: source)])])
        }

        var plan: Plan {
            var plan = rig.plan
            plan.vms.append(Plan.VM(name: "db01", address: address, disks: [Plan.Disk(device: "vda", destination: destination)]))
            return plan
        }

        /// An engine over both backends, or with `libvirt: nil` as a build without libvirt.
        func engine(withLibvirt: Bool) -> Engine {
            Engine(store: rig.store, hypervisor: RoutingHypervisor(qmp: rig.hypervisor, libvirt: withLibvirt ? libvirt : nil),
                   inspector: StubInspector())
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aPlanOfAQMPVMAndALibvirtVMRunsEachThroughItsBackend() async throws {
        let mixed = try MixedRig("lc-mem-routed")
        defer { mixed.rig.scratch.remove() }
        let policy = try mixed.rig.policy()
        let engine = mixed.engine(withLibvirt: true)
        let disks = try await engine.preflight(mixed.plan, policy: policy)
        #expect(disks.map(\.vmAddress) == ["/mem/vm", "libvirt:qemu:///system#db01"])
        #expect(disks.map(\.source) == [mixed.rig.source, mixed.source])
        let planId = try engine.record(mixed.plan, policy: policy, disks: disks).id
        let plan = try await engine.run(planId: planId)
        await engine.shutdown()

        #expect(plan.state == .completed, "\(plan.error ?? "")")
        #expect(mixed.rig.vm.chain(of: "drive0") == [mixed.rig.destination])
        #expect(mixed.db01.chain(of: "vda") == [mixed.destination])
        let recorded = try mixed.rig.store.disks(ofPlan: planId)
        #expect(recorded.map(\.vmAddress) == ["/mem/vm", "libvirt:qemu:///system#db01"])
        #expect(recorded.map(\.state) == [.completed, .completed])
    }

    @Test(.timeLimit(.minutes(1)))
    func aBuildWithoutLibvirtRefusesALibvirtVMBeforeAnythingIsTouched() async throws {
        let mixed = try MixedRig("lc-mem-nolibvirt")
        defer { mixed.rig.scratch.remove() }
        let policy = try mixed.rig.policy()
        let engine = mixed.engine(withLibvirt: false)
        let reason = "this livecopy was built without libvirt support, so it cannot reach libvirt domain db01 (qemu:///system); name a QMP socket of the VM (qmp:) instead"
        let preflight = try await #require(throws: PreflightError.self) { _ = try await engine.preflight(mixed.plan, policy: policy) }
        #expect(preflight.description == "VM 'db01': \(reason)")
        // submit --detach checks the address too.
        let offline = try #require(throws: PreflightError.self) { try engine.checkOffline(mixed.plan, policy: policy) }
        #expect(offline.description == "VM 'db01' disk 'vda': \(reason)")
        await engine.shutdown()
        #expect(mixed.rig.vm.calls.allSatisfy { ["disks", "jobs", "migrationStatus"].contains($0) }, "\(mixed.rig.vm.calls)")
        #expect(mixed.db01.calls.isEmpty, "\(mixed.db01.calls)")
        #expect(!FileManager.default.fileExists(atPath: mixed.rig.destination))
    }
}
