import Foundation
import LivecopyModel
import LivecopyBackend

/// The checks every destructive step makes right before it acts, on every path
/// (a first run or a resume): what QEMU and the kernel say now, never what the record
/// says. The world may have changed while livecopy was down: a VM's manager may have
/// restarted the VM on another image, another process may have opened the file.
extension DiskWorkflow {
    /// What makes retiring the source unsafe now, or nil: the disk's device must run on
    /// the destination with no backing file, no device of the VM may have the source in
    /// its chain, and no process may hold the source open.
    func sourceRetirementProblem() async throws -> String? {
        let source = disk.source ?? "the source"
        let devices = try await session.disks()
        guard let entry = devices.entry(for: disk) else {
            return "device '\(disk.device)' is no longer in VM '\(disk.vmName)', so nothing proves \(disk.destination) holds its data"
        }
        guard entry.medium?.file == disk.destination, entry.medium?.backingFile == nil else {
            let active = entry.medium?.file ?? "no image"
            let backing = entry.medium?.backingFile.map { " backed by \($0)" } ?? ""
            return "VM '\(disk.vmName)' device '\(disk.device)' runs on \(active)\(backing), not on \(disk.destination) standing alone"
        }
        if let user = devices.first(where: { $0.medium?.image.chain.contains { $0.filename == source } ?? false }) {
            return "device '\(user.device)' of VM '\(disk.vmName)' has \(source) in its chain"
        }
        if let holder = await OpenFiles.holder(of: source) {
            return "\(holder) holds \(source) open"
        }
        return nil
    }

    /// What makes deleting `path` (a file livecopy created) unsafe now, or nil: no
    /// device of the VM may run on it or have it in its chain, and no process may hold it
    /// open.
    func deletionProblem(_ path: String) async throws -> String? {
        let devices = try await session.disks()
        if let user = devices.first(where: { $0.medium?.image.chain.contains { $0.filename == path } ?? false }) {
            return "device '\(user.device)' of VM '\(disk.vmName)' uses \(path)"
        }
        if let holder = await OpenFiles.holder(of: path) {
            return "\(holder) holds \(path) open"
        }
        return nil
    }

    /// Deletes `path`, a file livecopy created, after checking that nothing uses it.
    /// Throws `NeedsAttention` (touching nothing) when something does, or when the
    /// unlink fails other than because the file is already gone.
    func deleteOwnFile(_ path: String, because reason: String) async throws {
        if let problem = try await deletionProblem(path) {
            throw NeedsAttention(description: "not deleting \(path) (\(reason)): \(problem); nothing was touched")
        }
        if unlink(path) != 0 && errno != ENOENT {
            throw NeedsAttention(description: "cannot delete \(path): \(String(cString: strerror(errno)))")
        }
    }
}
