// A minimal, blocking, read-only NBD client: `NBDReader`.

/// Reads an NBD export over a UNIX socket, written from the NBD protocol: the fixed
/// newstyle handshake with NBD_OPT_GO (`NBDHandshake`), then NBD_CMD_READ requests, one
/// at a time, each answered by a simple reply whose handle and error are checked.
///
/// It blocks the calling thread on every read (at most 60 s of silence per socket
/// operation, see `NBDSocket`). It is not `Sendable`: one task uses it, from connect to `close()`.
/// A failure of the connection itself (a timeout, a short or malformed reply) closes
/// it, since the stream can no longer be trusted; a read the server answers with an
/// error leaves it open.
final class NBDReader {
    /// The most one NBD_CMD_READ asks for (less if the server says its maximum is smaller).
    static let largestRequest = 4 * 1024 * 1024

    /// The socket, for messages.
    let socketPath: String
    /// The export's name.
    let export: String
    /// The export's size in bytes.
    let size: Int64
    /// The export's NBD_FLAG_* transmission flags.
    let transmissionFlags: UInt16
    /// The most each request asks for.
    let requestLimit: Int

    /// The connection; nil once closed.
    private var socket: NBDSocket?
    private var nextHandle: UInt64 = 1
    private let label: String

    /// Connects to the NBD server at `socketPath` and opens `export` (NBD_OPT_GO). Every
    /// socket operation, there and in reads, gives up after `timeoutSeconds` of silence.
    convenience init(socketPath: String, export: String,
                     timeoutSeconds: Int = NBDSocket.defaultTimeoutSeconds) throws(VerificationError) {
        let label = Self.label(socketPath: socketPath, export: export)
        switch try NBDSocket.connect(path: socketPath, label: label, timeoutSeconds: timeoutSeconds) {
        case .connected(let socket):
            try self.init(connected: socket, socketPath: socketPath, export: export)
        case .notListening(let reason):
            throw VerificationError("\(label): no NBD server listens there: \(reason)")
        }
    }

    /// Opens `export` over a socket already connected (closed here if that fails).
    init(connected socket: NBDSocket, socketPath: String, export: String) throws(VerificationError) {
        let info: NBDExportInfo
        do throws(VerificationError) {
            info = try NBDHandshake.negotiate(socket, export: export)
        } catch {
            socket.close()
            throw error
        }
        self.socketPath = socketPath
        self.export = export
        self.label = socket.label
        self.size = info.size
        self.transmissionFlags = info.transmissionFlags
        self.requestLimit = max(1, min(Self.largestRequest, info.maximumBlockSize ?? Self.largestRequest))
        self.socket = socket
    }

    deinit {
        close()
    }

    /// "NBD export 'source' at /run/x/source.sock": how errors name a connection.
    static func label(socketPath: String, export: String) -> String {
        "NBD export '\(export)' at \(socketPath)"
    }

    /// Whether the export says it is read-only (NBD_FLAG_READ_ONLY).
    var isReadOnly: Bool { transmissionFlags & NBDProtocol.transmissionReadOnly != 0 }

    /// The `length` bytes at `offset`, asked for in requests of at most `requestLimit`.
    func read(offset: Int64, length: Int) throws(VerificationError) -> [UInt8] {
        guard length >= 0 else {
            throw VerificationError("\(label): cannot read a negative length (\(length)) at offset \(offset)")
        }
        var bytes = [UInt8](repeating: 0, count: length)
        // `withUnsafeMutableBytes` rethrows untyped errors: carry the typed one out in a Result.
        try bytes.withUnsafeMutableBytes { buffer in
            Result { () throws(VerificationError) in try read(offset: offset, into: buffer) }
        }.get()
        return bytes
    }

    /// Fills `buffer` with the bytes at `offset`, in requests of at most `requestLimit`.
    func read(offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(VerificationError) {
        guard offset >= 0, offset <= size, Int64(buffer.count) <= size - offset else {
            throw VerificationError("\(label): cannot read \(buffer.count) bytes at offset \(offset): the export holds \(size) bytes")
        }
        var done = 0
        while done < buffer.count {
            let count = min(requestLimit, buffer.count - done)
            try request(offset: offset + Int64(done), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done ..< done + count]))
            done += count
        }
    }

    /// Ends the session (NBD_CMD_DISC) and closes the socket. Calling it again does nothing.
    func close() {
        guard let socket else { return }
        self.socket = nil
        var message = NBDMessage()
        message.append(NBDProtocol.requestMagic)
        message.append(UInt16(0))
        message.append(NBDProtocol.commandDisconnect)
        message.append(nextHandle)
        message.append(UInt64(0))
        message.append(UInt32(0))
        try? socket.write(message.bytes, what: "NBD_CMD_DISC")  // the server may be gone already
        socket.close()
    }

    /// One NBD_CMD_READ of `buffer.count` bytes (at most `requestLimit`) at `offset`.
    private func request(offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(VerificationError) {
        guard let socket else {
            throw VerificationError("\(label): the connection is closed")
        }
        let handle = nextHandle
        nextHandle &+= 1
        let what = "the reply to a read of \(buffer.count) bytes at offset \(offset)"
        var message = NBDMessage()
        message.append(NBDProtocol.requestMagic)
        message.append(UInt16(0))  // no command flags
        message.append(NBDProtocol.commandRead)
        message.append(handle)
        message.append(UInt64(offset))
        message.append(UInt32(buffer.count))
        let status: UInt32
        do throws(VerificationError) {
            try socket.write(message.bytes, what: "a read request (\(buffer.count) bytes at offset \(offset))")
            var reply = NBDFields(try socket.read(count: NBDProtocol.simpleReplySize, what: what))
            let magic = reply.uint32()
            status = reply.uint32()
            let replyHandle = reply.uint64()
            if magic == NBDProtocol.structuredReplyMagic {
                throw VerificationError("\(label): the server sent a structured reply, which livecopy never negotiated, as \(what)")
            }
            guard magic == NBDProtocol.simpleReplyMagic else {
                throw VerificationError("\(label): malformed \(what) (magic 0x\(String(magic, radix: 16)))")
            }
            guard replyHandle == handle else {
                throw VerificationError("\(label): \(what) carries handle \(replyHandle) instead of \(handle)")
            }
            // No data follows an error: the stream stays in step.
            if status == 0 { try socket.read(into: buffer, what: "the data of \(what)") }
        } catch {
            // Out of step with the server, or cut off: nothing more can be read here.
            self.socket = nil
            socket.close()
            throw error
        }
        guard status == 0 else {
            throw VerificationError("\(label): the server failed a read of \(buffer.count) bytes at offset \(offset): \(NBDProtocol.transmissionErrorName(status))")
        }
    }
}
