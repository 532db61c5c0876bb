// Whether a libvirt domain runs, for `livecopy restore` (which acts only while a VM is off).

import CLibvirt
import LivecopyBackend

extension LibvirtHypervisor {
    /// Whether the domain at `address` (`libvirt:<uri>#<domain>`) is running
    /// (`virDomainIsActive`): true or false; throws a `BackendError` (`.unreachable`) when
    /// libvirtd does not answer within `timeout` seconds, has no such domain, or cannot say.
    public static func domainIsActive(_ address: String, timeout: Double = 30) async throws -> Bool {
        let (uri, name) = try parse(address)
        let answer = try await LibvirtRuntime.blocking(timeout: timeout) { () throws -> Bool in
            guard let connection = virConnectOpenReadOnly(uri) else {
                let failure = LibvirtFailure.last("virConnectOpenReadOnly")
                throw BackendError(.unreachable, reason: "cannot connect to libvirt at \(uri): \(failure.message)")
            }
            defer { virConnectClose(connection) }
            guard let domain = virDomainLookupByName(connection, name) else {
                let failure = LibvirtFailure.last("virDomainLookupByName")
                throw BackendError(.unreachable, reason: "libvirt at \(uri) has no domain '\(name)' (\(failure.message))")
            }
            defer { virDomainFree(domain) }
            switch virDomainIsActive(domain) {
            case 1: return true
            case 0: return false
            default:
                let failure = LibvirtFailure.last("virDomainIsActive")
                throw BackendError(.unreachable, reason: "libvirt at \(uri) cannot say whether '\(name)' runs (\(failure.message))")
            }
        }
        guard let answer else {
            throw BackendError(.unreachable, reason: "libvirt at \(uri) did not answer within \(Int(timeout)) s")
        }
        return answer
    }
}
