// The checks on a destination path that need no VM (`DestinationCheck`), made at preflight
// and again right before a destination is created.

import Foundation
import LivecopyModel

/// File checks on a destination path, made without following links.
enum DestinationCheck {
    /// Refuses a destination that exists, even as a dangling symlink.
    static func refuseExisting(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) != 0 else {
            let kind = (info.st_mode & S_IFMT) == S_IFLNK ? "is a symlink" : "already exists"
            throw PreflightError("destination \(path) \(kind)")
        }
    }

    /// The destination as preflight checks it: its format and kind suit the strategy; a
    /// block device can take a disk of `virtualSize` bytes (nil: unknown, with no VM to
    /// ask) and nothing uses it; a file does not exist yet, in a writable directory.
    static func check(_ disk: Plan.Disk, strategy: CopyStrategy, virtualSize: Int64?) throws {
        try checkFormat(disk, strategy: strategy)
        if isBlockDevice(disk.destination) {
            if let problem = BlockDeviceDestination.problemIncludingHolders(disk.destination, virtualSize: virtualSize ?? 0) {
                throw PreflightError(problem)
            }
        } else {
            try refuseExisting(disk.destination)
            try checkDirectory(of: disk.destination)
        }
    }

    /// The destination's format and kind suit the strategy: the stream strategy makes
    /// qcow2 overlays only; a block device takes raw data (the mirror strategy) only.
    static func checkFormat(_ disk: Plan.Disk, strategy: CopyStrategy) throws {
        let blockDevice = isBlockDevice(disk.destination)
        switch strategy {
        case .stream:
            if blockDevice {
                throw PreflightError("destination \(disk.destination) is a block device, which needs strategy: mirror (streaming copies into a new qcow2 file)")
            }
            if disk.resolvedFormat != .qcow2 {
                throw PreflightError("format: \(disk.resolvedFormat.rawValue) needs strategy: mirror (streaming copies into a new qcow2 file)")
            }
        case .mirror:
            if blockDevice && disk.resolvedFormat != .raw {
                throw PreflightError("destination \(disk.destination) is a block device, which livecopy fills with raw data only; write format: raw or leave format out")
            }
        }
    }

    /// The destination's directory must exist, be a directory (not a symlink to one) and be writable.
    static func checkDirectory(of path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        var info = stat()
        if lstat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK {
            throw PreflightError("destination directory \(directory) is a symlink; name the real directory")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw PreflightError("destination directory \(directory) does not exist")
        }
        guard isDirectory.boolValue else { throw PreflightError("destination directory \(directory) is not a directory") }
        guard access(directory, W_OK) == 0 else { throw PreflightError("destination directory \(directory) is not writable") }
    }

    /// The path with its directory's symlinks resolved (the file itself need not exist).
    static func resolved(_ path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        guard let real = realpath(directory, nil) else { return path }
        defer { free(real) }
        return (String(cString: real) as NSString).appendingPathComponent(name)
    }
}
