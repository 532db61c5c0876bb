import CSystemExtras
import Foundation
import LivecopyModel

/// `retire_source: quarantine`: the source is moved into `.livecopy-quarantine/` in its
/// own directory, under a name no other disk's source can take, never over a file; the
/// move to `completed` records it in `quarantined_images` in the same write, with its
/// device and inode numbers and when its time is up (`quarantine_for`).
///
/// As for `rename` and `delete`: an intent before the move, which names the file by its
/// numbers, and `sourceRetirementProblem()` right before it, on a first run as on a
/// resume. A resumed attempt that finds the source gone and the file it named in
/// quarantine records the move as done.
extension DiskWorkflow {
    func quarantineSource(_ source: String) async throws {
        let directory = Quarantine.directory(for: source)
        let target = Quarantine.path(for: source, planId: disk.planId, diskId: disk.id)
        // An intent left by an earlier run means that run may have moved the source; its
        // event names the file it was about to move.
        let earlier = disk.intent == .quarantineSource ? try interruptedQuarantineIdentity() : nil
        let earlierAttempt = disk.intent == .quarantineSource
        var identity: Quarantine.FileIdentity?
        if case .file(let found) = Quarantine.lookUp(source) { identity = found }
        let named = identity.map { (device: $0.device, inode: $0.inode) } ?? earlier
        let namedText = named.map { "(device \($0.device), inode \($0.inode))" } ?? Quarantine.identityText(nil)
        try await ledger.intend(.quarantineSource, "\(source) → \(target) \(namedText)")
        try await refuseUnlessRetirable(source, action: "quarantine")
        if let problem = Quarantine.prepareDirectory(directory) {
            try await ledger.outcome("refused: \(problem)")
            throw NeedsAttention(description: "cannot quarantine \(source): \(problem). Neither \(source) nor \(disk.destination) was touched; fix the directory, then run livecopy recover")
        }
        if livecopy_rename_noreplace(source, target) == 0 {
            ledger.sent()
            try await recordQuarantined(source, at: target, identity: identity, "source quarantined: moved to \(target)")
            return
        }
        let code = errno
        let found = Quarantine.lookUp(target)
        switch code {
        case ENOENT where !exists(source):
            if earlierAttempt, case .file(let moved) = found, let earlier, moved.device == earlier.device, moved.inode == earlier.inode {
                // One write: the interrupted attempt's outcome is the move to `completed`.
                try await recordQuarantined(source, at: target, identity: moved,
                                            "source already quarantined by the interrupted attempt: it is \(target)")
                return
            }
            let stranger: String
            if case .absent = found { stranger = " and nothing is at \(target)" } else { stranger = " (the \(target) there is not livecopy's doing)" }
            let truth = "the source \(source) was gone before livecopy quarantined it: nothing was moved" + stranger
            try await ledger.outcome("refused: \(truth)")
            try await ledger.note("warning: \(truth)")
            try await ledger.transition(to: .completed, "\(truth); \(disk.destination) holds the data")
        case EEXIST:
            if case .file(let there) = found, let identity, there == identity {
                // The same file under both names: an attempt whose rename fell back to
                // link and unlink (a file system without RENAME_NOREPLACE) stopped between them.
                guard unlink(source) == 0 else {
                    try await ledger.outcome("refused: \(String(cString: strerror(errno)))")
                    throw NeedsAttention(description: "cannot remove \(source), already linked as \(target): \(String(cString: strerror(errno)))")
                }
                ledger.sent()
                try await recordQuarantined(source, at: target, identity: there, "source quarantined: moved to \(target)")
                return
            }
            let reason = "cannot quarantine \(source): \(target) already exists and livecopy never overwrites a file; move it away, then run livecopy recover"
            try await ledger.outcome("refused: \(target) exists")
            throw NeedsAttention(description: reason)
        default:
            try await ledger.outcome("refused: \(String(cString: strerror(code)))")
            throw NeedsAttention(description: "cannot move \(source) to \(target): \(String(cString: strerror(code)))")
        }
    }

    /// The move to `completed`, with the quarantined image's row in the same write.
    private func recordQuarantined(_ source: String, at target: String, identity: Quarantine.FileIdentity?,
                                   _ detail: String) async throws {
        Quarantine.syncDirectory(Quarantine.directory(for: source))
        Quarantine.syncDirectory((source as NSString).deletingLastPathComponent)
        let handedBack = Self.handBack(target)
        // The numbers of the file now in quarantine: the same inode as the source's (a rename).
        var moved = identity
        if case .file(let found) = Quarantine.lookUp(target) { moved = found }
        guard let moved else {
            throw NeedsAttention(description: "\(target) vanished right after livecopy moved \(source) there")
        }
        let now = Date()
        let expires = now.addingTimeInterval(policy.quarantineFor)
        let image = NewQuarantinedImage(originalPath: source, quarantinePath: target, sizeBytes: moved.allocatedBytes,
                                        device: moved.device, inode: moved.inode, quarantinedAt: now, expiresAt: expires)
        try await ledger.transition(
            to: .completed,
            "\(detail) (\(moved), \(ByteSize.format(moved.allocatedBytes))), kept until \(ISO8601.string(expires)) (quarantine_for); livecopy purge deletes it then, livecopy restore \(disk.id) puts it back\(handedBack)",
            quarantining: image)
    }

    /// The file the interrupted attempt's intent named, from the disk's timeline.
    private func interruptedQuarantineIdentity() throws -> (device: UInt64, inode: UInt64)? {
        let prefix = "\(DiskIntent.quarantineSource.rawValue): "
        guard let intent = try ledger.events().last(where: { $0.kind == .intent && $0.detail.hasPrefix(prefix) }) else { return nil }
        return Quarantine.identity(in: intent.detail)
    }
}
