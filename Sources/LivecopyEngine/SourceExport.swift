// Serving a copy's source image read-only over NBD for the data comparison: `SourceExport`.

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// An image file served read-only by a `qemu-nbd` of livecopy's own, with an open
/// `NBDReader` on it.
///
/// `qemu-nbd` listens on `source.sock` in a fresh private directory (mode 0700, made with
/// `mkdtemp`) inside the directory the caller names, and serves one client: the reader.
/// It runs without `--persistent`, so it exits by itself once that client leaves,
/// whether livecopy disconnects or dies after connecting. `stop()` closes the reader,
/// ends the process (SIGTERM, then SIGKILL after 5 s), reaps it and removes the
/// directory.
///
/// Not `Sendable`: one task starts it, reads through `reader` and stops it.
final class SourceExport {
    /// The export's name on the socket.
    static let exportName = "source"
    /// How long `start` waits for `qemu-nbd` to listen.
    static let startTimeout: Duration = .seconds(30)
    /// How often `start` tries to connect meanwhile.
    static let retryInterval: Duration = .milliseconds(2)

    /// The image served.
    let image: String
    /// The private directory holding the socket.
    let directory: String
    /// The socket `qemu-nbd` listens on.
    var socketPath: String { Self.socketPath(in: directory) }
    /// The open connection to the export.
    let reader: NBDReader
    /// `qemu-nbd`'s process id.
    var processIdentifier: Int32? { server.processIdentifier }

    private let server: BackgroundProcess
    private var stopped = false

    private init(image: String, directory: String, reader: NBDReader, server: BackgroundProcess) {
        self.image = image
        self.directory = directory
        self.reader = reader
        self.server = server
    }

    deinit {
        // Not stopped: the reader's own deinit disconnects (qemu-nbd then exits by
        // itself), the process is ended and reaped on its task, the directory goes now.
        if !stopped {
            reader.close()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// Serves `image` (of `format`, e.g. qcow2 or raw) read-only with `qemu-nbd`, its socket
    /// in a new private directory inside `parent`, and connects to it. Waits up to
    /// `startTimeout` for `qemu-nbd` to listen, and fails at once, with its stderr, if it
    /// exits first (an image it cannot open or lock, say).
    static func start(image: String, format: String, in parent: String) async throws(VerificationError) -> SourceExport {
        let directory = try makePrivateDirectory(in: parent)
        let socket = Self.socketPath(in: directory)
        let label = NBDReader.label(socketPath: socket, export: exportName)
        let server = BackgroundProcess(program: "qemu-nbd", arguments: [
            "--read-only", "--format=\(format)", "--socket=\(socket)", "--export-name=\(exportName)", "--shared=1",
            "--", image,
        ])
        func failing(_ error: VerificationError) async -> VerificationError {
            await server.stop()
            try? FileManager.default.removeItem(atPath: directory)
            return error
        }
        let attempts = Int(startTimeout / retryInterval)
        var lastReason = "it has not created its socket"
        for attempt in 1 ... attempts {
            if let ending = server.ending {
                throw await failing(VerificationError(
                    "qemu-nbd serving \(image) (\(format)) ended before it listened on \(socket) (\(ending)): \(server.errorText)"))
            }
            let connection: NBDSocket.Attempt
            do throws(VerificationError) {
                connection = try NBDSocket.connect(path: socket, label: label)
            } catch {
                throw await failing(error)
            }
            switch connection {
            case .connected(let connected):
                do throws(VerificationError) {
                    let reader = try NBDReader(connected: connected, socketPath: socket, export: exportName)
                    return SourceExport(image: image, directory: directory, reader: reader, server: server)
                } catch {
                    // qemu-nbd listens before it opens the image, and may end right after
                    // accepting: its stderr is complete once it is stopped and reaped.
                    await server.stop()
                    throw await failing(VerificationError("\(error.description) (qemu-nbd serving \(image); its stderr: \(server.errorText))"))
                }
            case .notListening(let reason):
                lastReason = reason
            }
            if attempt == attempts || Task.isCancelled { break }
            try? await Task.sleep(for: retryInterval)
        }
        let why = Task.isCancelled ? "livecopy stopped waiting" : "it did not listen within \(startTimeout) (\(attempts) attempts; last: \(lastReason))"
        throw await failing(VerificationError("qemu-nbd serving \(image) (\(format)) on \(socket): \(why); its stderr: \(server.errorText)"))
    }

    /// Closes the reader, ends `qemu-nbd` (SIGTERM, then SIGKILL after 5 s) unless it has
    /// exited, reaps it and removes the socket's directory. Calling it again does nothing.
    func stop() async {
        guard !stopped else { return }
        stopped = true
        reader.close()
        await server.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func socketPath(in directory: String) -> String {
        directory + "/source.sock"
    }

    /// A new directory `parent/livecopy-nbd.XXXXXX`, mode 0700, made with `mkdtemp`.
    /// Refused when the socket inside would not fit in a UNIX socket address.
    static func makePrivateDirectory(in parent: String) throws(VerificationError) -> String {
        var base = parent
        while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
        let template = base + "/livecopy-nbd.XXXXXX"
        let longest = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1
        guard socketPath(in: template).utf8.count <= longest else {
            throw VerificationError("the directory \(parent) is too deep for an NBD socket: \(socketPath(in: template)) is longer than \(longest) bytes")
        }
        var bytes = Array(template.utf8CString)
        guard bytes.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw VerificationError("cannot create a private directory for an NBD socket in \(parent): \(NBDSocket.errorText(errno))")
        }
        return String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
