import Foundation
@testable import LivecopyEngine
import TestSupport
import Testing

private let KiB = 1024
private let MiB = 1024 * 1024

/// `NBDReader`, livecopy's own NBD client, against a real `qemu-nbd`.
@Suite(.requires(.qemu), .timeLimit(.minutes(2)))
struct NBDReaderTests {
    /// An image of `size`, written with `qemu-io` (each write `(pattern, offset, length)` in qemu-io's syntax).
    static func image(in scratch: TemporaryDirectory, size: String, writes: [(UInt8, String, String)]) throws -> String {
        let path = scratch.appending("disk.qcow2")
        try QEMUImage.create(path, size: size)
        for (pattern, offset, length) in writes {
            try QEMUImage.write(path, pattern: pattern, offset: offset, length: length)
        }
        return path
    }

    @Test func readsWhatQemuIOWrote() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-nbd")
        defer { scratch.remove() }
        let image = try Self.image(in: scratch, size: "8M", writes: [(0x5A, "1M", "64k")])
        let server = try QemuNBDServer(image: image, socketPath: scratch.appending("nbd.sock"))
        defer { server.stop() }

        let reader = try NBDReader(socketPath: server.socketPath, export: server.exportName)
        defer { reader.close() }
        #expect(reader.size == Int64(8 * MiB))
        #expect(reader.isReadOnly, "qemu-nbd --read-only says so in its transmission flags")
        let bytes = try reader.read(offset: Int64(MiB - 4 * KiB), length: 72 * KiB)
        #expect(bytes.count == 72 * KiB)
        #expect(bytes[..<(4 * KiB)].allSatisfy { $0 == 0 }, "before the write")
        #expect(bytes[(4 * KiB) ..< (68 * KiB)].allSatisfy { $0 == 0x5A }, "the write")
        #expect(bytes[(68 * KiB)...].allSatisfy { $0 == 0 }, "after it")
        #expect(try reader.read(offset: 0, length: 0).isEmpty)
    }

    /// A read larger than one request is split into requests of at most 4 MiB, each piece
    /// landing in place (unaligned ends). 40 MiB could not be one request anyway: QEMU's
    /// server announces a maximum of 32 MiB (an NBD_INFO_BLOCK_SIZE it sends unasked),
    /// and `requestLimit` would honour a maximum below 4 MiB.
    @Test func readsAcrossRequestSplits() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-nbd-split")
        defer { scratch.remove() }
        let writes: [(UInt8, String, String)] = (0 ..< 12).map { (UInt8(0x10 + $0), "\($0 * 4)M", "4M") }
        let image = try Self.image(in: scratch, size: "48M", writes: writes)
        let server = try QemuNBDServer(image: image, socketPath: scratch.appending("nbd.sock"))
        defer { server.stop() }

        let reader = try NBDReader(socketPath: server.socketPath, export: server.exportName)
        defer { reader.close() }
        #expect(reader.requestLimit == 4 * MiB)
        let start = 3 * MiB + 1
        let bytes = try reader.read(offset: Int64(start), length: 40 * MiB)
        #expect(bytes.count == 40 * MiB)
        var wrong: [Int] = []
        for index in stride(from: 0, to: bytes.count, by: 4 * KiB) + [bytes.count - 1] {
            let offset = start + index
            if bytes[index] != UInt8(0x10 + offset / (4 * MiB)) { wrong.append(offset) }
        }
        #expect(wrong.isEmpty, "bytes not as written at offsets \(wrong.prefix(8))")
    }

    /// The last bytes of a disk whose size is no multiple of a cluster; past the end is refused.
    @Test func readsTheEndOfTheDiskAndNotPastIt() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-nbd-end")
        defer { scratch.remove() }
        let size = 10 * MiB + 512
        let image = try Self.image(in: scratch, size: "\(size)", writes: [(0x33, "\(size - 512)", "512")])
        let server = try QemuNBDServer(image: image, socketPath: scratch.appending("nbd.sock"))
        defer { server.stop() }

        let reader = try NBDReader(socketPath: server.socketPath, export: server.exportName)
        defer { reader.close() }
        #expect(reader.size == Int64(size))
        let tail = try reader.read(offset: Int64(size - 4 * KiB), length: 4 * KiB)
        #expect(tail[..<(3 * KiB + 512)].allSatisfy { $0 == 0 })
        #expect(tail[(3 * KiB + 512)...].allSatisfy { $0 == 0x33 })

        do {
            _ = try reader.read(offset: Int64(size - 512), length: 513)
            Issue.record("a read past the end was not refused")
        } catch {
            #expect(error.description.contains("cannot read 513 bytes at offset \(size - 512): the export holds \(size) bytes"), "\(error)")
        }
        #expect(try reader.read(offset: Int64(size - 1), length: 1) == [0x33], "the connection is still usable")
    }

    @Test func anExportThatDoesNotExistIsRefusedClearly() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-nbd-name")
        defer { scratch.remove() }
        let image = try Self.image(in: scratch, size: "1M", writes: [])
        let server = try QemuNBDServer(image: image, socketPath: scratch.appending("nbd.sock"))
        defer { server.stop() }

        do {
            _ = try NBDReader(socketPath: server.socketPath, export: "no-such-export")
            Issue.record("a missing export was opened")
        } catch {
            let text = error.description
            #expect(text.contains("NBD export 'no-such-export' at \(server.socketPath)"), "\(text)")
            #expect(text.contains("NBD_REP_ERR_UNKNOWN (no such export)"), "\(text)")
            #expect(!text.contains("\n"))
        }
        // The server is not upset: the right name still works.
        let reader = try NBDReader(socketPath: server.socketPath, export: server.exportName)
        #expect(reader.size == Int64(MiB))
        reader.close()
        reader.close()  // harmless
        #expect(throws: VerificationError.self) { try reader.read(offset: 0, length: 1) }
    }

    /// No socket at all, and a socket file left by a server killed with SIGKILL.
    @Test func aDeadSocketIsRefusedClearly() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-nbd-dead")
        defer { scratch.remove() }
        let missing = scratch.appending("missing.sock")
        do {
            _ = try NBDReader(socketPath: missing, export: "disk")
            Issue.record("connected to nothing")
        } catch {
            #expect(error.description == "NBD export 'disk' at \(missing): no NBD server listens there: No such file or directory (errno 2)")
        }

        let image = try Self.image(in: scratch, size: "1M", writes: [])
        let server = try QemuNBDServer(image: image, socketPath: scratch.appending("nbd.sock"))
        server.stop()
        #expect(FileManager.default.fileExists(atPath: server.socketPath), "SIGKILL leaves the socket file")
        do {
            _ = try NBDReader(socketPath: server.socketPath, export: "disk")
            Issue.record("connected to a dead server")
        } catch {
            #expect(error.description == "NBD export 'disk' at \(server.socketPath): no NBD server listens there: Connection refused (errno 111)")
        }
    }

    /// A server that closes the connection mid-session: the read fails, and names it.
    @Test func aServerKilledMidSessionFailsTheRead() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-nbd-kill")
        defer { scratch.remove() }
        let image = try Self.image(in: scratch, size: "1M", writes: [])
        let server = try QemuNBDServer(image: image, socketPath: scratch.appending("nbd.sock"))
        let reader = try NBDReader(socketPath: server.socketPath, export: server.exportName)
        server.stop()
        do {
            _ = try reader.read(offset: 0, length: 4096)
            Issue.record("read from a killed server")
        } catch {
            #expect(error.description.hasPrefix("NBD export 'disk' at \(server.socketPath): "), "\(error)")
        }
        #expect(throws: VerificationError.self) { try reader.read(offset: 0, length: 1) }
        reader.close()
    }

    /// A server that accepts and never answers: the handshake gives up after the timeout
    /// (60 s by default; 1 s here) instead of hanging.
    @Test func aSilentServerTimesOut() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-nbd-silent")
        defer { scratch.remove() }
        let path = scratch.appending("silent.sock")
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8))
            raw[path.utf8.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0 && listen(listener, 4) == 0)

        do {
            _ = try NBDReader(socketPath: path, export: "disk", timeoutSeconds: 1)
            Issue.record("a silent server was taken for an NBD server")
        } catch {
            #expect(error.description == "NBD export 'disk' at \(path): no answer within 1 s while livecopy awaited the server's greeting")
        }
    }
}
