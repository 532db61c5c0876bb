// Where `retire_source: quarantine` puts a source, which file it is, and the checks on
// the quarantine directory.

import Foundation
import LivecopyModel

/// The quarantine of `retire_source: quarantine`: a directory `.livecopy-quarantine` in
/// the source's own directory (so the move is a rename on one file system), owner-only,
/// holding each source as `<plan id>-<disk id>-<file name>` (a name no other disk's source
/// can take).
public enum Quarantine {
    public static let directoryName = ".livecopy-quarantine"

    /// The quarantine directory for `source`.
    public static func directory(for source: String) -> String {
        let parent = (source as NSString).deletingLastPathComponent
        return (parent.isEmpty ? "." : parent) + "/" + directoryName
    }

    /// The path `source` of disk `diskId` of plan `planId` takes in quarantine.
    public static func path(for source: String, planId: Int64, diskId: Int64) -> String {
        directory(for: source) + "/\(planId)-\(diskId)-" + (source as NSString).lastPathComponent
    }

    /// What is wrong with the quarantine directory `directory` as it is now (nil when it
    /// is fine or does not exist yet): it must be a real directory (not a symlink), owned
    /// by livecopy's user and writable by nobody else.
    static func directoryProblem(_ directory: String) -> String? {
        var info = stat()
        guard lstat(directory, &info) == 0 else {
            return errno == ENOENT ? nil : "cannot inspect \(directory): \(String(cString: strerror(errno)))"
        }
        switch info.st_mode & S_IFMT {
        case S_IFDIR: break
        case S_IFLNK: return "\(directory) is a symlink; livecopy quarantines only into a real directory"
        default: return "\(directory) is not a directory"
        }
        if info.st_uid != geteuid() {
            return "\(directory) is owned by uid \(info.st_uid), not by livecopy's user (uid \(geteuid()))"
        }
        if info.st_mode & (S_IWGRP | S_IWOTH) != 0 {
            return "\(directory) is writable by others (mode \(String(info.st_mode & 0o7777, radix: 8))); it must be owner-only"
        }
        return nil
    }

    /// The problem preflight sees in quarantining `source`: its quarantine directory, if it exists, must be usable.
    public static func preflightProblem(source: String) -> String? {
        directoryProblem(directory(for: source)).map { "cannot quarantine the source: \($0)" }
    }

    /// Creates `directory` with mode 0700 when it is missing, then checks it; returns the
    /// problem, or nil when it can take the source.
    static func prepareDirectory(_ directory: String) -> String? {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            return "cannot create \(directory): \(String(cString: strerror(errno)))"
        }
        return directoryProblem(directory)
    }

    /// Writes a directory's entries to disk (best effort): a rename recorded as done must
    /// survive a power cut.
    static func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }

    /// Which file is at a path, by its numbers: what `purge` and `restore` compare with
    /// the ones recorded when the source was moved.
    struct FileIdentity: Equatable, CustomStringConvertible {
        let device: UInt64
        let inode: UInt64
        /// Allocated bytes (as `du` counts them).
        let allocatedBytes: Int64

        var description: String { "device \(device), inode \(inode)" }

        func matches(_ image: QuarantinedImage) -> Bool { device == image.device && inode == image.inode }
    }

    /// The file at `path`, not following a symlink: `.file` (a regular file), `.absent`,
    /// or `.other` (something else is there, or it cannot be looked at), with why.
    enum Lookup {
        case file(FileIdentity)
        case absent
        case other(String)
    }

    static func lookUp(_ path: String) -> Lookup {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            return errno == ENOENT ? .absent : .other("cannot inspect \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else { return .other("\(path) is not a regular file") }
        return .file(FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino),
                                  allocatedBytes: Int64(info.st_blocks) * 512))
    }

    /// `FileIdentity` as an intent's detail says it (`(device D, inode I)`), and back: a
    /// resumed attempt finds out from the timeline which file the interrupted one moved.
    static func identityText(_ identity: FileIdentity?) -> String {
        identity.map { "(device \($0.device), inode \($0.inode))" } ?? "(the source was not found)"
    }

    /// The identity in the last `(device D, inode I)` of `detail`, if any.
    static func identity(in detail: String) -> (device: UInt64, inode: UInt64)? {
        guard let start = detail.range(of: "(device ", options: .backwards) else { return nil }
        let rest = detail[start.upperBound...]
        guard let comma = rest.range(of: ", inode "), let close = rest.range(of: ")") , comma.upperBound <= close.lowerBound,
              let device = UInt64(rest[..<comma.lowerBound]), let inode = UInt64(rest[comma.upperBound..<close.lowerBound])
        else { return nil }
        return (device, inode)
    }
}
