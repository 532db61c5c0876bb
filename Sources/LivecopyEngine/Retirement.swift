import CSystemExtras
import Foundation
import LivecopyModel

/// The last step of the recipe: the destination stands alone; its data is compared with
/// the source's (`verify`, `DiskWorkflow+Verify.swift`), and the source is kept, renamed
/// to `<source>.retired`, deleted or moved into quarantine, per `retire_source`.
///
/// On every path, a first run or a resume after a crash or a reboot, the rename or
/// unlink happens only right after `sourceRetirementProblem()` finds nothing wrong:
/// the record saying "retiring" is not enough, since a VM's manager may have restarted
/// the VM on its source meanwhile.
extension DiskWorkflow {
    func retire() async throws {
        guard let source = disk.source else { throw NeedsAttention(description: "no source recorded") }
        // The data first (policy `verify`): a source whose copy differs is never retired.
        guard try await verifyBeforeRetiring(source) else { return }
        switch policy.retireSource {
        case .keep:
            try await ledger.transition(to: .completed, "source kept at \(source) (retire_source: keep)")
        case .rename:
            try await renameSource(source)
        case .delete:
            try await deleteSource(source)
        case .quarantine:
            try await quarantineSource(source)
        }
        await dropDirtyBitmap()
    }

    /// Renames the source to `<source>.retired`, never over an existing file.
    private func renameSource(_ source: String) async throws {
        let retired = source + ".retired"
        // An intent left by an earlier run means that run may have renamed the source.
        let earlierAttempt = disk.intent == .renameSource
        try await ledger.intend(.renameSource, "\(source) → \(retired)")
        try await refuseUnlessRetirable(source, action: "rename")
        if livecopy_rename_noreplace(source, retired) == 0 {
            ledger.sent()
            let handedBack = Self.handBack(retired)
            // The outcome is the move to `completed`, in one write: a record that said
            // "renamed" while still retiring could not be told from one never attempted.
            try await ledger.transition(to: .completed, "source renamed: retired to \(retired)\(handedBack)")
            return
        }
        let code = errno
        switch code {
        case ENOENT where earlierAttempt && exists(retired) && !exists(source):
            try await ledger.outcome("source already renamed by the interrupted attempt")
            try await ledger.transition(to: .completed, "source retired to \(retired)")
        case ENOENT where !exists(source):
            let truth = "the source \(source) was gone before livecopy retired it: nothing was renamed"
                + (exists(retired) ? " (the \(retired) there is not livecopy's doing)" : " and no \(retired) exists")
            try await ledger.outcome("refused: \(truth)")
            try await ledger.note("warning: \(truth)")
            try await ledger.transition(to: .completed, "\(truth); \(disk.destination) holds the data")
        case EEXIST:
            let reason = "cannot retire \(source): \(retired) already exists and livecopy never overwrites a file; move it away, then run livecopy recover"
            try await ledger.outcome("refused: \(retired) exists")
            throw NeedsAttention(description: reason)
        default:
            try await ledger.outcome("refused: \(String(cString: strerror(code)))")
            throw NeedsAttention(description: "cannot rename \(source) to \(retired): \(String(cString: strerror(code)))")
        }
    }

    /// Deletes the source.
    private func deleteSource(_ source: String) async throws {
        let earlierAttempt = disk.intent == .deleteSource
        try await ledger.intend(.deleteSource, source)
        try await refuseUnlessRetirable(source, action: "delete")
        if unlink(source) == 0 {
            ledger.sent()
            try await ledger.transition(to: .completed, "source \(source) deleted")  // the outcome, in the same write
            return
        }
        let code = errno
        switch code {
        case ENOENT where earlierAttempt:
            try await ledger.outcome("source already deleted by the interrupted attempt")
            try await ledger.transition(to: .completed, "source \(source) deleted")
        case ENOENT:
            let truth = "the source \(source) was gone before livecopy retired it: livecopy deleted nothing"
            try await ledger.outcome("refused: \(truth)")
            try await ledger.note("warning: \(truth)")
            try await ledger.transition(to: .completed, "\(truth); \(disk.destination) holds the data")
        default:
            try await ledger.outcome("refused: \(String(cString: strerror(code)))")
            throw NeedsAttention(description: "cannot delete \(source): \(String(cString: strerror(code)))")
        }
    }

    /// Right before the rename or unlink: if reality says the source may still be needed,
    /// records the refusal (closing the intent: nothing was done) and stops with a
    /// message naming both images.
    func refuseUnlessRetirable(_ source: String, action: String) async throws {
        guard let problem = try await sourceRetirementProblem() else { return }
        try await ledger.outcome("refused: \(problem)")
        throw NeedsAttention(
            description: "refusing to \(action) the source \(source): \(problem). Neither \(source) nor \(disk.destination) was touched; find out which image holds the VM's newest writes, then run livecopy recover")
    }

    /// Whether anything (a file, a link) is at `path`.
    func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// Gives a retired image to livecopy's own user when the hypervisor's user owns it:
    /// libvirt's DAC driver chowns a VM's images to the QEMU user (`libvirt-qemu`) and
    /// gives back only the top image when QEMU lets go of it, so a retired source would
    /// stay readable and writable by every VM's QEMU. Best effort, and only as root;
    /// returns the note for the record ("" when nothing changed).
    static func handBack(_ retired: String) -> String {
        var info = stat()
        guard geteuid() == 0, lstat(retired, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG,
              info.st_uid != geteuid() || info.st_gid != getegid() else { return "" }
        guard lchown(retired, geteuid(), getegid()) == 0 else { return "" }
        return "; owner \(info.st_uid):\(info.st_gid) handed back to \(geteuid()):\(getegid())"
    }
}
