import Foundation
import Synchronization

/// A fresh temporary directory, removed with everything in it by `remove()` or on deinit.
///
/// It is created under `$TMPDIR` when that path is short, otherwise under `/tmp`, so
/// QMP socket paths inside it stay below the 107-byte limit of UNIX socket addresses.
public final class TemporaryDirectory: Sendable {
    /// The directory.
    public let url: URL
    /// The directory's path.
    public var path: String { url.path }

    private let removed = Mutex(false)

    /// Creates the directory, named `<prefix>.XXXXXX`.
    public init(prefix: String = "livecopy-test") throws {
        var base = FileManager.default.temporaryDirectory.path
        if base.utf8.count > 32 || !FileManager.default.fileExists(atPath: base) {
            base = "/tmp"
        }
        while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
        var template = Array("\(base)/\(prefix).XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { buffer in
            mkdtemp(buffer.baseAddress!)
        }
        guard created != nil else {
            throw CocoaError(.fileWriteUnknown, userInfo: [
                NSLocalizedDescriptionKey: "mkdtemp failed in \(base): errno \(errno)"
            ])
        }
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        url = URL(fileURLWithPath: path, isDirectory: true)
    }

    /// The path of `name` inside the directory.
    public func appending(_ name: String) -> String {
        url.appendingPathComponent(name).path
    }

    /// Removes the directory and its contents. Calling it twice is harmless.
    public func remove() {
        let already = removed.withLock { removed in
            defer { removed = true }
            return removed
        }
        if !already {
            try? FileManager.default.removeItem(at: url)
        }
    }

    deinit {
        remove()
    }
}
