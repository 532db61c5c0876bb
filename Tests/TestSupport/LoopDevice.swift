import Foundation

/// A loop device over a file of its own: the block device a mirror test copies into, as
/// an LVM volume would be in production. Detached (and its file removed) by `detach()`.
public final class LoopDevice: Sendable {
    /// `/dev/loopN`.
    public let path: String
    /// The file behind it.
    public let backingFile: String

    /// Attaches a new file of `sizeMiB` MiB, every byte `fill`, as a loop device.
    public init(backingFile: String, sizeMiB: Int, fill: UInt8) throws {
        self.backingFile = backingFile
        let chunk = Data(repeating: fill, count: 1 << 20)
        guard FileManager.default.createFile(atPath: backingFile, contents: nil),
              let handle = FileHandle(forWritingAtPath: backingFile) else {
            throw QEMUFixtureError.unexpectedOutput(command: "create \(backingFile)", output: "")
        }
        for _ in 0..<sizeMiB { handle.write(chunk) }
        try handle.close()
        let (stdout, _) = try QEMUTools.runChecked("losetup", ["--find", "--show", backingFile])
        path = stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Detaches the device and removes its file.
    public func detach() {
        _ = try? QEMUTools.run("losetup", ["-d", path])
        try? FileManager.default.removeItem(atPath: backingFile)
    }

    /// Nil when a loop device can be attached here; else why not.
    static let missing: String? = {
        guard QEMUTools.find("losetup") != nil else { return "losetup not on PATH" }
        guard let scratch = try? TemporaryDirectory(prefix: "lc-loop-probe") else { return "no scratch directory" }
        defer { scratch.remove() }
        do {
            let device = try LoopDevice(backingFile: scratch.appending("probe"), sizeMiB: 1, fill: 0)
            device.detach()
            return nil
        } catch {
            return "losetup --find --show could not attach a file: \(error)"
        }
    }()
}
