import Foundation

/// Records each state transition a process makes, one `subject from→to` line per
/// transition, to the file named by `LIVECOPY_EDGE_LOG` (unset: nothing is recorded).
/// `scripts/test` sets it for the whole suite, then `TransitionCoverageTests` checks that
/// every edge of the transition tables was taken by some test: an edge nobody reaches is
/// either dead (remove it) or untested (test it).
enum EdgeLog {
    private static let path = ProcessInfo.processInfo.environment["LIVECOPY_EDGE_LOG"]

    /// Appends `kind from→to` (kind `disk` or `plan`) with one `O_APPEND` write, so lines
    /// of concurrent processes do not interleave.
    static func record(_ kind: String, from: String, to: String) {
        guard let path, !path.isEmpty else { return }
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let line = Array("\(kind) \(from)→\(to)\n".utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
}
