import InMemoryBackend
import LivecopyBackend
import Synchronization
import Testing

/// `RoutingHypervisor` hands each stored address, unchanged, to the backend its kind
/// names, and answers the addresses no backend of the build serves.
struct RoutingHypervisorTests {
    static let socket = "/run/livecopy/web01.qmp"
    static let domain = VMAddress.libvirt(uri: "qemu:///system", domain: "web01").stored

    /// Two in-memory backends, each holding a VM at both addresses: the device names
    /// tell which backend a session belongs to.
    struct Rig {
        let qmp = InMemoryHypervisor()
        let libvirt = InMemoryHypervisor()

        init() {
            for address in [RoutingHypervisorTests.socket, RoutingHypervisorTests.domain] {
                qmp.addVM(at: address, devices: [.init(name: "qmp-drive", chain: [.init(file: "/src.qcow2")])])
                libvirt.addVM(at: address, devices: [.init(name: "libvirt-vda", chain: [.init(file: "/src.qcow2")])])
            }
        }

        /// The devices of the VM the router connects to at `address`.
        func devices(through router: RoutingHypervisor, at address: String) async throws -> [String] {
            let session = try await router.connect(to: address, commandTimeout: 1)
            defer { Task { await session.close() } }
            return try await session.disks().map(\.device)
        }
    }

    @Test func eachAddressGoesToItsBackend() async throws {
        let rig = Rig()
        let router = RoutingHypervisor(qmp: rig.qmp, libvirt: rig.libvirt)
        #expect(try await rig.devices(through: router, at: Self.socket) == ["qmp-drive"])
        #expect(try await rig.devices(through: router, at: Self.domain) == ["libvirt-vda"])
        #expect(router.name == "in-memory and in-memory")
        #expect(RoutingHypervisor(qmp: rig.qmp, libvirt: nil).name == "in-memory")
    }

    @Test func aLibvirtAddressWithoutLibvirtIsUnsupported() async throws {
        let rig = Rig()
        let router = RoutingHypervisor(qmp: rig.qmp, libvirt: nil)
        #expect(try await rig.devices(through: router, at: Self.socket) == ["qmp-drive"])
        let expected = "this livecopy was built without libvirt support, so it cannot reach libvirt domain web01 (qemu:///system); name a QMP socket of the VM (qmp:) instead"
        await #expect(throws: BackendError(.unsupported, reason: expected)) {
            _ = try await router.connect(to: Self.domain, commandTimeout: 1)
        }
        #expect(throws: BackendError(.unsupported, reason: expected)) {
            try router.checkAddress(Self.domain, allowShared: false)
        }
    }

    /// An address that does not read is nobody's: no backend is asked.
    @Test func anAddressThatDoesNotReadIsUnreachable() async throws {
        let rig = Rig()
        rig.qmp.addVM(at: "mem:vm", devices: [])
        rig.libvirt.addVM(at: "mem:vm", devices: [])
        let router = RoutingHypervisor(qmp: rig.qmp, libvirt: rig.libvirt)
        let error = await #expect(throws: BackendError.self) { _ = try await router.connect(to: "mem:vm", commandTimeout: 1) }
        #expect(error?.kind == .unreachable)
        #expect(error?.description.hasPrefix("'mem:vm' is not a VM address") == true, "\(String(describing: error))")
        #expect(throws: BackendError.self) { try router.checkAddress("mem:vm", allowShared: true) }
    }

    /// `checkAddress` reaches the backend of the address, with the address and `allowShared` as given.
    @Test func checkAddressGoesToItsBackend() throws {
        let qmp = CheckRecorder(name: "QMP"), libvirt = CheckRecorder(name: "libvirt")
        let router = RoutingHypervisor(qmp: qmp, libvirt: libvirt)
        #expect(router.name == "QMP and libvirt")
        try router.checkAddress(Self.socket, allowShared: false)
        try router.checkAddress(Self.domain, allowShared: true)
        #expect(qmp.checked == [Self.socket + " false"])
        #expect(libvirt.checked == [Self.domain + " true"])
    }
}

/// A hypervisor that records the addresses it is asked to check, and connects to none.
final class CheckRecorder: Hypervisor {
    let name: String
    private let calls = Mutex<[String]>([])

    init(name: String) { self.name = name }

    /// "address allowShared", in order.
    var checked: [String] { calls.withLock { $0 } }

    func checkAddress(_ address: String, allowShared: Bool) throws {
        calls.withLock { $0.append("\(address) \(allowShared)") }
    }

    func connect(to address: String, commandTimeout: Double) async throws -> any VMSession {
        throw BackendError(.unreachable, reason: "\(name): no VM at \(address)")
    }
}
