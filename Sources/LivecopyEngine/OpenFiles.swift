// Which process holds a file open, before livecopy deletes or reuses it.

import CSystemExtras
import Foundation

/// Which process, if any, has a file open. A write lease answers at once whether anyone
/// (any user's process) has it open; `/proc/PID/fd` then names the holder by device and
/// inode, and is the whole check where leases are not supported.
enum OpenFiles {
    /// `pid N (comm)` of a process holding `path` open, or nil. A holder seen once is
    /// looked for again for up to `settle` seconds: QEMU closes an image it dropped right
    /// after the command that dropped it, not always before its reply.
    static func holder(of path: String, settle: Double = 1) async -> String? {
        let deadline = Date().addingTimeInterval(settle)
        while true {
            guard let found = check(path) else { return nil }
            if Date() >= deadline { return found }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// `holder(of:)` without waiting: the holder seen right now, or nil.
    static func holderNow(of path: String) -> String? { check(path) }

    private static func check(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        if fd < 0 && errno == ENOENT { return nil }
        if fd >= 0 {
            let answer = livecopy_open_elsewhere(fd)
            close(fd)
            if answer == 0 { return nil }
            if answer == 1 { return scan(path) ?? "a process livecopy may not look into" }
        }
        return scan(path)
    }

    private static func scan(_ path: String) -> String? {
        var target = stat()
        guard stat(path, &target) == 0 else { return nil }
        guard let processes = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        let me = String(getpid())
        for pid in processes where pid != me && pid.allSatisfy(\.isNumber) {
            guard let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { continue }
            for descriptor in descriptors {
                var info = stat()
                guard stat("/proc/\(pid)/fd/\(descriptor)", &info) == 0 else { continue }
                if info.st_dev == target.st_dev && info.st_ino == target.st_ino {
                    let name = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?
                        .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
                    return "process \(pid) (\(name))"
                }
            }
        }
        return nil
    }
}
