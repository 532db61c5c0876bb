import Foundation

/// A tmpfs mounted for a test: real ENOSPC for the destination. Needs root
/// (`Requirement.tmpfs`); unmounted when released.
public final class SmallFilesystem {
    public let path: String

    /// Mounts a tmpfs of `size` (`6M`) at `path`, or nil when that fails.
    public init?(path: String, size: String) {
        self.path = path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard (try? QEMUTools.run("mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", path]))?.status == 0 else { return nil }
    }

    /// Gives the file system `size` (more room, say).
    public func resize(_ size: String) throws {
        let result = try QEMUTools.run("mount", ["-o", "remount,size=\(size)", path])
        guard result.status == 0 else {
            throw QEMUFixtureError.toolFailed(command: "mount -o remount,size=\(size) \(path)", status: result.status, output: result.stderr)
        }
    }

    deinit { _ = try? QEMUTools.run("umount", ["-l", path]) }
}
