import Foundation
@testable import LivecopyEngine
import TestSupport
import Testing

/// `SourceExport`: livecopy's own `qemu-nbd` serving a source image read-only, and what
/// it leaves behind (nothing).
@Suite(.requires(.qemu), .timeLimit(.minutes(2)))
struct SourceExportTests {
    static func entries(of directory: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    }

    @Test func servesTheImageThenLeavesNoProcessAndNoDirectory() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-export")
        defer { scratch.remove() }
        let image = scratch.appending("source.qcow2")
        try QEMUImage.create(image, size: "4M")
        try QEMUImage.write(image, pattern: 0x5A, offset: "1M", length: "64k")
        let parent = scratch.appending("sockets")
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: false)

        let export = try await SourceExport.start(image: image, format: "qcow2", in: parent)
        let pid = try #require(export.processIdentifier)
        #expect(processExists(pid))
        #expect(export.directory.hasPrefix(parent + "/livecopy-nbd."))
        let mode = try FileManager.default.attributesOfItem(atPath: export.directory)[.posixPermissions] as? Int
        #expect(mode == 0o700, "the socket's directory is private")
        #expect(Self.entries(of: export.directory) == ["source.sock"])
        #expect(export.reader.size == 4 * 1024 * 1024)
        #expect(export.reader.isReadOnly)
        #expect(try export.reader.read(offset: 1024 * 1024, length: 65536).allSatisfy { $0 == 0x5A })

        await export.stop()
        #expect(!processExists(pid), "qemu-nbd is gone and reaped")
        #expect(Self.entries(of: parent).isEmpty, "the socket's directory is removed")
        await export.stop()  // harmless
        #expect(throws: VerificationError.self) { try export.reader.read(offset: 0, length: 1) }
    }

    @Test func stopAfterQemuNBDDiedIsFine() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-export-died")
        defer { scratch.remove() }
        let image = scratch.appending("source.raw")
        try QEMUImage.create(image, size: "1M", format: "raw")

        let export = try await SourceExport.start(image: image, format: "raw", in: scratch.path)
        let pid = try #require(export.processIdentifier)
        kill(pid, SIGKILL)
        #expect(throws: VerificationError.self) { try export.reader.read(offset: 0, length: 4096) }
        await export.stop()
        #expect(!processExists(pid))
        #expect(Self.entries(of: scratch.path) == ["source.raw"])
    }

    /// Without `--persistent`, qemu-nbd exits once its one client leaves: a livecopy that
    /// dies after connecting leaves no server behind.
    @Test func qemuNBDExitsWhenItsClientLeaves() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-export-leave")
        defer { scratch.remove() }
        let image = scratch.appending("source.qcow2")
        try QEMUImage.create(image, size: "1M")

        let export = try await SourceExport.start(image: image, format: "qcow2", in: scratch.path)
        let pid = try #require(export.processIdentifier)
        export.reader.close()
        for _ in 0 ..< 500 where processExists(pid) {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(!processExists(pid), "qemu-nbd exited on its own")
        await export.stop()
    }

    /// qemu-nbd that cannot open the image exits at once; its stderr is in the error, and
    /// nothing is left behind.
    @Test func anImageQemuNBDCannotOpenFailsWithItsStderr() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-export-bad")
        defer { scratch.remove() }
        let missing = scratch.appending("missing.qcow2")
        do {
            _ = try await SourceExport.start(image: missing, format: "qcow2", in: scratch.path)
            Issue.record("a missing image was served")
        } catch {
            let text = error.description
            // qemu-nbd listens before it opens the image: livecopy either sees it end first,
            // or connects and has the connection reset; either way the error names the
            // image and quotes qemu-nbd's stderr.
            #expect(text.contains("qemu-nbd serving \(missing)"), "\(text)")
            #expect(text.contains("ended before it listened") || text.contains("cannot read the server's greeting"), "\(text)")
            #expect(text.contains("Could not open '\(missing)'"), "its stderr: \(text)")
        }
        #expect(Self.entries(of: scratch.path).isEmpty)

        // A parent too deep for a socket address is refused before anything starts.
        let deep = scratch.path + "/" + String(repeating: "d", count: 100)
        await #expect(throws: VerificationError.self) { try await SourceExport.start(image: missing, format: "qcow2", in: deep) }
    }
}
