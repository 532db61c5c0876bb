// Whether a hook's program may be run as livecopy's user (often root).

import Foundation
import LivecopyModel

/// Checks a hook's program before a plan is accepted and again right before each run:
/// a hook runs as livecopy's user, often root, so whoever can replace the program, or
/// rename anything in a directory above it, could run anything as that user.
///
/// The program (`argv[0]`: an absolute path, or a name looked up in `HookRunner.safePath`)
/// is resolved to its real path (symlinks followed). The real file must be a regular,
/// executable file, and it and every directory above it, up to `/`, must be owned by root
/// or by livecopy's user and writable by neither group nor others (no exception for a
/// sticky directory such as /tmp). A symlink's own directory is checked too.
enum HookProgramCheck {
    /// The program's real path, or the one-line reason it is refused.
    static func resolve(_ argv0: String) -> Result<String, HookRefused> {
        let named: String
        if argv0.hasPrefix("/") {
            named = argv0
        } else if argv0.contains("/") {
            return .failure(HookRefused("\(argv0) is a relative path; name the program by an absolute path"))
        } else {
            let candidates: [String] = HookRunner.safePath.split(separator: ":").map { "\($0)/\(argv0)" }
            let found = candidates.first { (candidate: String) -> Bool in access(candidate, X_OK) == 0 }
            guard let found else {
                return .failure(HookRefused("\(argv0) was not found in \(HookRunner.safePath) (the PATH hooks run with)"))
            }
            named = found
        }
        guard let real = realpath(named, nil) else {
            return .failure(HookRefused("\(named): \(String(cString: strerror(errno)))"))
        }
        defer { free(real) }
        // The directories of the name as written count too: a link in a writable
        // directory can be pointed elsewhere.
        if let problem = unsafeDirectory(above: named) { return .failure(HookRefused(problem)) }
        let path = String(cString: real)
        var info = stat()
        guard stat(path, &info) == 0 else { return .failure(HookRefused("\(path): \(String(cString: strerror(errno)))")) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .failure(HookRefused("\(path) is not a regular file")) }
        guard access(path, X_OK) == 0 else { return .failure(HookRefused("\(path) is not executable")) }
        if let problem = ownershipProblem(info, path: path, what: "the program") { return .failure(HookRefused(problem)) }
        if let problem = unsafeDirectory(above: path) { return .failure(HookRefused(problem)) }
        return .success(path)
    }

    /// One line per hook of `hooks` whose program is refused, each naming the hook.
    static func problems(_ hooks: HookSettings) -> [String] {
        HookEvent.allCases.compactMap { event in
            guard let command = hooks.command(for: event) else { return nil }
            switch resolve(command.argv[0]) {
            case .success: return nil
            case .failure(let refused): return "hooks.\(event.rawValue): \(refused.description)"
            }
        }
    }

    /// The first directory above `path` (up to `/`) that is not safe, in words.
    private static func unsafeDirectory(above path: String) -> String? {
        var directory = (path as NSString).deletingLastPathComponent
        while true {
            var info = stat()
            guard lstat(directory, &info) == 0 else {
                return "directory \(directory): \(String(cString: strerror(errno)))"
            }
            if let problem = ownershipProblem(info, path: directory, what: "directory") { return problem }
            if directory == "/" || directory.isEmpty { return nil }
            directory = (directory as NSString).deletingLastPathComponent
        }
    }

    /// Why a file or directory with `info` is unsafe to trust, or nil.
    private static func ownershipProblem(_ info: stat, path: String, what: String) -> String? {
        let me = geteuid()
        guard info.st_uid == 0 || info.st_uid == me else {
            return "\(what) \(path) is owned by uid \(info.st_uid), neither root nor livecopy's user (uid \(me)); a hook runs as livecopy's user, so only they or root may control it"
        }
        // A symlink's own mode means nothing (always 0777); its owner and directory count.
        if (info.st_mode & S_IFMT) != S_IFLNK, info.st_mode & (S_IWGRP | S_IWOTH) != 0 {
            let who = info.st_mode & S_IWOTH != 0 ? "others" : "its group"
            return "\(what) \(path) is writable by \(who); a hook runs as livecopy's user, so put it where only root or that user can write (chmod go-w)"
        }
        return nil
    }
}

/// A hook's program refused, in one line.
struct HookRefused: Error, CustomStringConvertible, Sendable {
    let description: String
    init(_ description: String) { self.description = description }
}
