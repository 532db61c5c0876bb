import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A directory that hook programs may live in. livecopy runs a hook only when the program
/// and every directory above it are owned by root or livecopy's user and writable by
/// nobody else, which no directory under /tmp is (/tmp is writable by all). So this one
/// lies under /var/lib/livecopy-tests (as root) or ~/.cache/livecopy-tests (otherwise).
public final class HookDirectory: Sendable {
    public let path: String

    /// The repository's `contrib/hooks`, found from this file.
    public static let contrib = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("contrib/hooks").path

    public init() throws {
        let base = getuid() == 0 ? "/var/lib/livecopy-tests" : (NSHomeDirectory() as NSString).appendingPathComponent(".cache/livecopy-tests")
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        _ = chmod(base, 0o755)
        path = (base as NSString).appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        _ = chmod(path, 0o755)
    }

    /// Writes an executable (mode 0755) `name` holding `contents`; returns its path.
    @discardableResult
    public func install(_ name: String, contents: String, mode: mode_t = 0o755) throws -> String {
        let file = (path as NSString).appendingPathComponent(name)
        try contents.write(toFile: file, atomically: false, encoding: .utf8)
        _ = chmod(file, mode)
        return file
    }

    /// Copies `contrib/hooks/NAME` here, as an operator installs it; returns its path.
    public func installContrib(_ name: String) throws -> String {
        try install(name, contents: String(contentsOfFile: (Self.contrib as NSString).appendingPathComponent(name), encoding: .utf8))
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
