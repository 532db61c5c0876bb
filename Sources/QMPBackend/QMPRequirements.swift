// What livecopy needs of a QEMU, checked when it connects.

import LivecopyBackend
import QMP

/// The QEMU version and QMP commands livecopy needs, checked by `query-version` and
/// `query-commands` when a session opens; a QEMU without them is refused with a message
/// naming what is missing, before anything is sent.
enum QMPRequirements {
    /// `block-stream`'s `auto-finalize`/`auto-dismiss`, `job-finalize` and `job-dismiss`
    /// came with QEMU 3.0.
    static let minimumVersion = (major: 3, minor: 0)
    /// The QEMU release the test suite runs against.
    static let testedVersion = "7.2"

    /// Every command livecopy may send.
    static let commands: [String] = [
        "query-block", "query-jobs", "query-block-jobs", "query-migrate",
        "transaction", "blockdev-snapshot-sync", "block-stream", "job-finalize", "job-dismiss",
        "human-monitor-command", "block-commit", "drive-mirror", "block-job-complete",
        "block-job-cancel", "block-job-pause", "block-job-resume", "block-job-set-speed",
        "blockdev-add", "blockdev-del", "blockdev-mirror",
    ]

    /// Throws `BackendError` (`.unsupported`) when the QEMU at `address` is too old or lacks
    /// a command.
    static func check(_ session: any QMPSession, address: String) async throws {
        let version = try await session.execute("query-version")
        let qemu = version["qemu"]
        let major = Int(qemu?["major"]?.int64Value ?? -1)
        let minor = Int(qemu?["minor"]?.int64Value ?? -1)
        let micro = Int(qemu?["micro"]?.int64Value ?? 0)
        let name = "QEMU \(major).\(minor).\(micro) at \(address)"
        guard major >= 0, minor >= 0 else {
            throw unsupported("\(address): query-version answered \(version.compactText), not a QEMU version")
        }
        if (major, minor) < minimumVersion {
            throw unsupported(
                "\(name) is too old: livecopy needs QEMU \(minimumVersion.major).\(minimumVersion.minor) or newer (tested with \(testedVersion))")
        }
        let offered = Set((try await session.execute("query-commands").arrayValue ?? []).compactMap { $0["name"]?.stringValue })
        let missing = commands.filter { !offered.contains($0) }
        guard missing.isEmpty else {
            throw unsupported(
                "\(name) lacks the QMP command(s) \(missing.joined(separator: ", ")) that livecopy needs (tested with QEMU \(testedVersion)); was it built without them, or is a filter in front of its monitor?")
        }
    }

    private static func unsupported(_ message: String) -> BackendError {
        BackendError(.unsupported, reason: message)
    }
}
