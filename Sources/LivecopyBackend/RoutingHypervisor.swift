/// The hypervisor the commands drive VMs through: it reads each stored address
/// (`VMAddress(stored:)`) and hands it, unchanged, to the QMP backend for a QMP socket or
/// to the libvirt backend for a libvirt domain. A build without a libvirt backend
/// (`libvirt: nil`) answers a libvirt address with `.unsupported`.
public struct RoutingHypervisor: Hypervisor {
    let qmp: any Hypervisor
    let libvirt: (any Hypervisor)?

    public init(qmp: any Hypervisor, libvirt: (any Hypervisor)?) {
        self.qmp = qmp
        self.libvirt = libvirt
    }

    /// "QMP and libvirt", or the QMP backend's name alone without libvirt.
    public var name: String { [qmp.name, libvirt?.name].compactMap { $0 }.joined(separator: " and ") }

    public func checkAddress(_ address: String, allowShared: Bool) throws {
        try backend(for: address).checkAddress(address, allowShared: allowShared)
    }

    public func connect(to address: String, commandTimeout: Double) async throws -> any VMSession {
        try await backend(for: address).connect(to: address, commandTimeout: commandTimeout)
    }

    /// The backend that serves `address`; throws `BackendError` when none does (an
    /// address that does not read: `.unreachable`; a libvirt one without libvirt:
    /// `.unsupported`).
    func backend(for address: String) throws -> any Hypervisor {
        let parsed: VMAddress
        do {
            parsed = try VMAddress(stored: address)
        } catch {
            throw BackendError(.unreachable, reason: error.description)
        }
        switch parsed {
        case .qmp:
            return qmp
        case .libvirt:
            guard let libvirt else {
                throw BackendError(.unsupported, reason: "this livecopy was built without libvirt support, so it cannot reach \(parsed); name a QMP socket of the VM (qmp:) instead")
            }
            return libvirt
        }
    }
}
