import Foundation
import LivecopyModel

/// Named places in the workflow where a test can make livecopy die at once, to prove
/// that recovery works from every persisted step boundary.
///
/// `LIVECOPY_CRASH_AT=<name>` makes the process `_exit(86)` the first time it reaches
/// `<name>`. Names: `plan:<state>` after a plan transition is written,
/// `transition:<state>` after a disk transition is written, `intent:<action>` after an
/// intent is written (just before its side effect), `sent:<action>` right after the
/// side effect returned (before its outcome is written), `outcome:<action>` after the
/// outcome is written.
public enum CrashPoint {
    /// The exit status of a deliberate crash.
    public static let exitStatus: Int32 = 86

    private static let target = ProcessInfo.processInfo.environment["LIVECOPY_CRASH_AT"]

    /// Every crash point of a forward copy, in the order a disk reaches them, when the
    /// source is retired by `retire` (`keep` has no retiring step of its own) after the
    /// data is verified (the shipped default; `sent:verify` is reached with the
    /// destination's NBD export and the source's qemu-nbd still open).
    public static func forwardNames(retiring retire: Policy.RetireSource, verifying: Bool = true) -> [String] {
        let retireStep: [String]
        switch retire {
        case .keep: retireStep = []
        // No `outcome:` point: the move to `completed` records the outcome in the same write.
        case .rename: retireStep = ["intent:rename", "sent:rename"]
        case .delete: retireStep = ["intent:delete-source", "sent:delete-source"]
        case .quarantine: retireStep = ["intent:quarantine-source", "sent:quarantine-source"]
        }
        return [
            "plan:running",
            "transition:snapshotting", "intent:blockdev-snapshot-sync", "sent:blockdev-snapshot-sync",
            "outcome:blockdev-snapshot-sync", "transition:streaming",
            "intent:block-stream", "sent:block-stream", "outcome:block-stream",
            "intent:job-finalize", "sent:job-finalize", "outcome:job-finalize", "sent:job-dismiss",
            "transition:retiring",
        ] + (verifying ? ["intent:verify", "sent:verify"] : []) + retireStep + ["transition:completed", "plan:completed"]
    }

    /// Every crash point of a forward copy with the mirror strategy, when the source is
    /// retired by `retire`. `sent:pivot-complete` is inside the pivot's window: the job
    /// completed and waiting in `pending`, the guest's I/O held until it is finalized.
    /// Not `sent:create-destination`: a file found after a crash
    /// there cannot be proven livecopy's, and waits for an operator (as with streaming).
    public static func mirrorForwardNames(retiring retire: Policy.RetireSource) -> [String] {
        let forward = forwardNames(retiring: retire)
        let retirement = Array(forward.drop(while: { $0 != "transition:retiring" }))
        return [
            "plan:running",
            "transition:mirroring", "intent:create-destination", "intent:blockdev-mirror",
            "sent:blockdev-mirror", "outcome:blockdev-mirror",
            "intent:pivot", "sent:pivot-complete", "sent:pivot", "outcome:pivot", "sent:job-dismiss",
        ] + retirement
    }

    /// Every crash point of a forward copy with `retire_source: rename`.
    public static var forwardNames: [String] { forwardNames(retiring: .rename) }

    /// The crash points of a rollback that had to commit (cancel after the snapshot).
    public static let rollbackNames = [
        "transition:rolling_back", "intent:block-job-cancel", "sent:block-job-cancel", "outcome:block-job-cancel",
        "intent:block-commit", "sent:block-commit", "outcome:block-commit",
        "intent:block-job-complete", "sent:block-job-complete", "outcome:block-job-complete",
        "intent:delete-destination", "sent:delete-destination", "outcome:delete-destination", "transition:rolled_back", "plan:rolled_back",
    ]

    /// The crash points of `livecopy purge`, per image: after the intent (the row `purging`,
    /// its event written) and right after the unlink, before its outcome.
    public static let purgeNames = ["intent:purge", "sent:purge"]

    /// The crash points of `livecopy restore`: after the intent (the row `restoring`) and
    /// right after the rename back, before its outcome.
    public static let restoreNames = ["intent:restore", "sent:restore"]

    /// Every name, for tests.
    public static var names: [String] {
        let all = forwardNames + ["intent:delete-source", "sent:delete-source"]
            + ["intent:quarantine-source", "sent:quarantine-source"] + purgeNames + restoreNames
            + rollbackNames + mirrorForwardNames(retiring: .rename)
        var seen = Set<String>()
        return all.filter { seen.insert($0).inserted }
    }

    /// Dies here if this is the point named by `LIVECOPY_CRASH_AT`.
    static func reach(_ name: String) {
        guard let target, target == name else { return }
        FileHandle.standardError.write(Data("livecopy: crash point \(name) reached (LIVECOPY_CRASH_AT)\n".utf8))
        _exit(exitStatus)
    }
}
