// The VM's manager: libvirt's persistent definition, which the next boot follows.

import CLibvirt
import LivecopyBackend

extension LibvirtVMSession {
    // MARK: The VM's manager

    /// For a persistent domain: when the inactive definition (what the next `virsh start`
    /// boots) names another image for `disk` than the one it runs on, or a backing chain
    /// the running image no longer has, redefines the domain with only that disk's source
    /// changed (`virDomainDefineXML`).
    public func updateManagerRecord(disk name: String) async throws -> String? {
        let persistent = try await domain.call("virDomainIsPersistent") { pointer -> Int32? in
            let answer = virDomainIsPersistent(pointer)
            return answer < 0 ? nil : answer
        }
        guard persistent == 1 else { return nil }
        let running = try await liveDisks()
        let entry = try await findDisk(name, recorded: running)
        guard let live = running.first(where: { $0.target == entry.device }), let file = live.source else { return nil }
        let definition = try await xml(flags: VIR_DOMAIN_XML_INACTIVE.rawValue)
        guard let recorded = try LibvirtDomainXML.disks(definition).first(where: { $0.target == entry.device }) else { return nil }
        // The same image: stale only when it records a backing chain the image no longer
        // has (mid-copy, libvirt records the chain itself).
        guard recorded.source != file || (live.backing.isEmpty && !recorded.backing.isEmpty) else { return nil }
        guard let updated = try LibvirtDomainXML.redefining(definition, target: entry.device, file: file, format: live.format ?? "qcow2")
        else { return nil }
        let connection = domain.connection
        _ = try await domain.call("virDomainDefineXML") { _ -> Bool? in
            guard let defined = virDomainDefineXML(connection.pointer, updated) else { return nil }
            virDomainFree(defined)
            return true
        }
        let before = recorded.source.map { $0 + (recorded.backing.isEmpty ? "" : " (backed by \(recorded.backing.joined(separator: ", ")))") } ?? "no image"
        return "libvirt's persistent definition of \(domain.domainName) named \(before) for \(entry.device); livecopy redefined it to \(file), which \(entry.device) runs on"
    }
}
