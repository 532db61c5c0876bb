import Foundation
import LivecopyModel
import LivecopyBackend

/// Refuses a VM that is busy with something livecopy must not interleave with: a job of
/// another tool (stream, mirror, commit, backup, or a VM-wide job such as a snapshot
/// save) on a disk of the plan, or a migration in progress. Livecopy never touches such
/// a job: it only ever cancels or dismisses the ids it made for its own disks.
enum VMActivityCheck {
    /// Migration states in which the VM's disks may be switched under livecopy.
    static let migrating: Set<String> = [
        "setup", "active", "pre-switchover", "device", "postcopy-active", "postcopy-paused", "postcopy-recover",
        "wait-unplug", "cancelling", "colo",
    ]
    /// Block job types, which run on one device's chain; other job types (snapshot-save,
    /// snapshot-load, create, amend …) concern the whole VM.
    static let blockJobTypes: Set<String> = ["stream", "mirror", "commit", "backup"]

    /// Throws `PreflightError` naming the first problem `problems` finds.
    static func check(vmName: String, session: any VMSession, planDevices: Set<String>, deviceNames: Set<String>,
                      ownJobOfAnotherDisk: (String) -> Bool) async throws {
        let found = await problems(vmName: vmName, session: session, planDevices: planDevices, deviceNames: deviceNames,
                                   ownJobOfAnotherDisk: ownJobOfAnotherDisk)
        if let first = found.first { throw PreflightError(first) }
    }

    /// One line per problem: the migration in progress, and each foreign job (every one,
    /// for `validate`). `planDevices` are the plan's disks of this VM, as `query-block`
    /// names them; `deviceNames` every device of the VM; `ownJobOfAnotherDisk` says
    /// whether a job id is one livecopy made for a disk outside the plan.
    static func problems(vmName: String, session: any VMSession, planDevices: Set<String>, deviceNames: Set<String>,
                         ownJobOfAnotherDisk: (String) -> Bool) async -> [String] {
        var found: [String] = []
        do {
            if let status = try await session.migrationStatus(), migrating.contains(status) {
                found.append("VM '\(vmName)' is migrating (query-migrate status \(status)); livecopy touches nothing until the migration ends")
            }
        } catch {
            found.append("VM '\(vmName)': query-migrate failed: \(describe(error))")
        }
        let jobs: [CopyJob]
        do {
            jobs = try await session.jobs()
        } catch {
            return found + ["VM '\(vmName)': query-jobs failed: \(describe(error))"]
        }
        for job in jobs.sorted(by: { $0.id < $1.id }) where !job.status.isOver {
            if ownJobOfAnotherDisk(job.id) { continue }
            // A block job started without a job id is named after its device: one on a
            // device outside the plan is none of livecopy's business. Any other job may
            // be on the plan's chains (nothing in QMP says which node it holds).
            if blockJobTypes.contains(job.type), deviceNames.contains(job.id), !planDevices.contains(job.id) { continue }
            let devices = planDevices.sorted().joined(separator: ", ")
            found.append(
                "VM '\(vmName)': job '\(job.id)' (\(job.type), \(job.status)) of another tool runs in the VM, where the plan copies \(devices); livecopy touches nothing while it runs and never cancels it")
        }
        return found
    }

    /// Whether `id` is a job livecopy made (`livecopy-stream-N`, `livecopy-mirror-N`,
    /// `livecopy-commit-N`) for a disk recorded at `vmAddress` (stored form) whose device is
    /// not one of `planDevices`.
    static func isOwnJobOfAnotherDisk(_ id: String, vmAddress: String, planDevices: Set<String>, store: any WorkflowStore) -> Bool {
        for prefix in ["livecopy-stream-", "livecopy-mirror-", "livecopy-commit-"] where id.hasPrefix(prefix) {
            guard let diskId = Int64(id.dropFirst(prefix.count)),
                  let disk = try? store.disk(id: diskId), disk.vmAddress == vmAddress else { return false }
            return !planDevices.contains(disk.device) && !planDevices.contains(disk.qmpDevice ?? "")
        }
        return false
    }
}
