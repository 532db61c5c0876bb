// A block device as a mirror's destination (an LVM volume, a loop device, a LUN): livecopy
// never creates, truncates or deletes one; it checks it before using it.

import Foundation
import LivecopyModel

/// The checks on a block device destination, made at preflight and again right before
/// QEMU opens it: it is a block device, it can hold the disk, and nothing uses it.
enum BlockDeviceDestination {
    /// What makes `path` unfit to receive a disk of `virtualSize` bytes now, or nil. An
    /// exclusive open (`O_EXCL` on a block device) fails with `EBUSY` while the device is
    /// mounted, held by device-mapper or md, or opened exclusively by another program;
    /// processes that opened it without `O_EXCL` (QEMU does) are found by `OpenFiles`.
    static func problem(_ path: String, virtualSize: Int64) -> String? {
        guard isBlockDevice(path) else { return "destination \(path) is not a block device" }
        let fd = open(path, O_RDONLY | O_EXCL | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == EBUSY {
                return "block device \(path) is in use (mounted, part of a volume or array, or opened exclusively by another program); livecopy writes only to a device nothing uses"
            }
            return "cannot open block device \(path): \(String(cString: strerror(code)))"
        }
        defer { close(fd) }
        let size = Int64(lseek(fd, 0, SEEK_END))
        guard size >= virtualSize else {
            return "block device \(path) holds \(ByteSize.format(size)) (\(size) bytes), less than the disk's \(ByteSize.format(virtualSize)) (\(virtualSize) bytes)"
        }
        return nil
    }

    /// The device's size in bytes, or nil when it cannot be opened.
    static func size(of path: String) -> Int64? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        return size >= 0 ? Int64(size) : nil
    }

    /// `problem`, and then whether any process holds the device open (`OpenFiles`, looked
    /// at once: for preflight).
    static func problemIncludingHolders(_ path: String, virtualSize: Int64) -> String? {
        if let problem = problem(path, virtualSize: virtualSize) { return problem }
        return OpenFiles.holderNow(of: realPath(path)).map(heldOpen(path))
    }

    /// `problemIncludingHolders`, a holder seen looked for again for a moment (QEMU closes
    /// a node it dropped a moment after its reply): right before QEMU opens the device.
    static func problemNow(_ path: String, virtualSize: Int64) async -> String? {
        if let problem = problem(path, virtualSize: virtualSize) { return problem }
        return await OpenFiles.holder(of: realPath(path)).map(heldOpen(path))
    }

    private static func heldOpen(_ path: String) -> (String) -> String {
        { holder in "\(holder) holds block device \(path) open; livecopy writes only to a device nothing uses" }
    }

    /// `path` with every symlink resolved (LVM's `/dev/VG/LV` leads to `/dev/dm-N`), or
    /// `path` itself when it cannot be resolved.
    static func realPath(_ path: String) -> String {
        guard let real = realpath(path, nil) else { return path }
        defer { free(real) }
        return String(cString: real)
    }
}
