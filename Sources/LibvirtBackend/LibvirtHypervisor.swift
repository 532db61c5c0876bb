// The libvirt backend: domains managed by libvirtd, through libvirt's C API.

import LivecopyBackend

/// VMs managed by libvirt, one connection to libvirtd per session. An address is
/// `libvirt:<uri>#<domain>` (`VMAddress.libvirt`).
public struct LibvirtHypervisor: Hypervisor {
    public init() {}

    public var name: String { "libvirt" }

    /// libvirt's URI names a daemon whose own access control applies (`qemu:///system`
    /// is root's); there is no socket of livecopy's to check.
    public func checkAddress(_ address: String, allowShared: Bool) throws {
        _ = try Self.parse(address)
    }

    public func connect(to address: String, commandTimeout: Double) async throws -> any VMSession {
        let (uri, name) = try Self.parse(address)
        let domain = try await LibvirtDomainConnection.open(uri: uri, domain: name, commandTimeout: commandTimeout)
        do {
            return LibvirtVMSession(domain: domain, registry: try await LibvirtJobRegistry.load(domain))
        } catch {
            await domain.close()
            throw error
        }
    }

    static func parse(_ address: String) throws -> (uri: String, domain: String) {
        switch try? VMAddress(stored: address) {
        case .libvirt(let uri, let domain)?:
            return (uri, domain)
        case .qmp?, nil:
            throw BackendError(.unreachable, reason: "'\(address)' is not a libvirt address (libvirt:<uri>#<domain>)")
        }
    }
}
