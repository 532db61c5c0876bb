// Creating destination overlays: the `DestinationCreator` protocol, its refusal and failure
// errors, and `ExclusiveOverlayCreator`, which never lets QEMU create or overwrite a file.

import Foundation
import LivecopyModel

/// Creates a destination overlay. Livecopy never lets QEMU create or overwrite a file
/// (`blockdev-snapshot-sync` in its default mode truncates an existing file and follows
/// symlinks): it makes the file itself and then snapshots with `mode: existing`.
public protocol DestinationCreator: Sendable {
    /// Creates `path` exclusively (mode 0600, never through a symlink, its directory not a
    /// symlink) and writes into it a qcow2 header of `virtualSize` bytes backed by
    /// `backing`, whose format `backingFormat` is recorded (never probed).
    ///
    /// Throws `DestinationRefused` when something is at `path` already or its directory is
    /// a symlink: then nothing was created and that file was not touched. Any other error
    /// leaves nothing of livecopy's behind either.
    func createOverlay(at path: String, backing: String, backingFormat: String, virtualSize: Int64) throws

    /// Creates `path` the same way, as an empty standalone image of `virtualSize` bytes in
    /// `format`: a qcow2 image with no backing file, or a sparse raw file (the mirror
    /// strategy's destination).
    func createImage(at path: String, format: DestinationFormat, virtualSize: Int64) throws
}

/// A destination livecopy will not create, because something is there already or its
/// directory is a symlink. Nothing was touched.
public struct DestinationRefused: Error, CustomStringConvertible {
    public let description: String
}

/// Creates the file with `open(2)` (`O_CREAT|O_EXCL|O_NOFOLLOW`, relative to the directory
/// opened with `O_NOFOLLOW`), then writes the qcow2 overlay into that very descriptor
/// (`Qcow2Overlay`), so a file swapped in at the path meanwhile can never be the one
/// written. No subprocess: `qemu-img create` and `qemu-img info` cost about 12 ms a disk.
public struct ExclusiveOverlayCreator: DestinationCreator {
    public init() {}

    public func createOverlay(at path: String, backing: String, backingFormat: String, virtualSize: Int64) throws {
        // Checked before anything is created: a request QEMU could not open leaves no file.
        let layout = try Qcow2Overlay(virtualSize: virtualSize, backing: backing, backingFormat: backingFormat)
        try create(path) { fd in try layout.write(to: fd, path: path) }
    }

    public func createImage(at path: String, format: DestinationFormat, virtualSize: Int64) throws {
        switch format {
        case .qcow2:
            let layout = try Qcow2Overlay(virtualSize: virtualSize)
            try create(path) { fd in try layout.write(to: fd, path: path) }
        case .raw:
            guard virtualSize >= 0 else { throw CreationFailed(description: "virtual size \(virtualSize) is negative") }
            try create(path) { fd in
                guard ftruncate(fd, off_t(virtualSize)) == 0 else {
                    throw CreationFailed(description: "cannot size \(path): \(String(cString: strerror(errno)))")
                }
            }
        }
    }

    /// Creates `path` exclusively and lets `fill` write into the new file's descriptor;
    /// if `fill` fails, removes the file, but only if the name still leads to it.
    private func create(_ path: String, fill: (Int32) throws -> Void) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        var info = stat()
        if lstat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK {
            throw DestinationRefused(description: "destination directory \(directory) is a symlink; livecopy creates nothing through a link")
        }
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard directoryFD >= 0 else {
            let code = errno
            if code == ELOOP || code == ENOTDIR {
                throw DestinationRefused(description: "destination directory \(directory) is a symlink or not a directory")
            }
            throw CreationFailed(description: "cannot open destination directory \(directory): \(String(cString: strerror(code)))")
        }
        defer { close(directoryFD) }
        let fd = openat(directoryFD, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let code = errno
            if code == EEXIST || code == ELOOP {
                let kind = lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK ? "a symlink" : "a file"
                throw DestinationRefused(description: "destination \(path) appeared meanwhile (\(kind) livecopy did not create); it was left untouched")
            }
            throw CreationFailed(description: "cannot create \(path): \(String(cString: strerror(code)))")
        }
        defer { close(fd) }
        do {
            try fill(fd)
        } catch {
            // Remove the file only if the name still leads to the one created here.
            var created = stat()
            var named = stat()
            if fstat(fd, &created) == 0, fstatat(directoryFD, name, &named, AT_SYMLINK_NOFOLLOW) == 0,
               created.st_dev == named.st_dev, created.st_ino == named.st_ino {
                unlinkat(directoryFD, name, 0)
            }
            throw error
        }
    }
}

/// A destination that could not be made (other than `DestinationRefused`).
struct CreationFailed: Error, CustomStringConvertible {
    let description: String
}
