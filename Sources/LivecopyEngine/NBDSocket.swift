// The blocking UNIX socket under `NBDReader`: connect, whole writes and whole reads,
// with timeouts.

#if canImport(Glibc)
import Glibc
#endif

/// One connected UNIX stream socket, read and written whole: every write and read loops
/// over short transfers and `EINTR`, and gives up when the peer is silent for
/// `timeoutSeconds` (`SO_RCVTIMEO`, `SO_SNDTIMEO`; 60 s unless the caller says), so a
/// hung server cannot hang livecopy.
/// Writes never raise `SIGPIPE` (`MSG_NOSIGNAL`). Errors name `label` (the socket path
/// and export) and what was being done.
struct NBDSocket {
    /// How long a read or a write may wait for the peer, unless the caller says.
    static let defaultTimeoutSeconds = 60

    /// How a connection attempt ended.
    enum Attempt {
        case connected(NBDSocket)
        /// Nothing listens there (yet): no such socket, or connection refused.
        case notListening(String)
    }

    let descriptor: Int32
    let label: String
    /// How long a read or a write waits for the peer.
    let timeoutSeconds: Int

    /// Connects to the UNIX socket at `path`. A missing socket or a refusal is
    /// `.notListening` (a server may be starting); other failures throw.
    static func connect(path: String, label: String, timeoutSeconds: Int = defaultTimeoutSeconds) throws(VerificationError) -> Attempt {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, !bytes.contains(0) else {
            throw VerificationError("\(label): invalid socket path '\(path)'")
        }
        guard bytes.count < capacity else {
            throw VerificationError("\(label): the socket path is \(bytes.count) bytes long, more than a UNIX socket address holds (\(capacity - 1))")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        while true {
            let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard descriptor >= 0 else {
                throw VerificationError("\(label): cannot create a socket: \(Self.errorText(errno))")
            }
            // 0 would mean no timeout at all to the kernel.
            let connection = NBDSocket(descriptor: descriptor, label: label, timeoutSeconds: max(1, timeoutSeconds))
            do throws(VerificationError) {
                try connection.setTimeouts()
            } catch {
                connection.close()
                throw error
            }
            let result = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    Glibc.connect(descriptor, socketAddress, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if result == 0 { return .connected(connection) }
            let code = errno
            connection.close()
            switch code {
            case EINTR:
                continue  // a fresh socket: an interrupted connect may still complete on the old one
            case ENOENT, ECONNREFUSED:
                return .notListening(Self.errorText(code))
            case EAGAIN:
                throw VerificationError("\(label): the server accepts no connection (its queue stayed full for \(timeoutSeconds) s)")
            default:
                throw VerificationError("\(label): cannot connect: \(Self.errorText(code))")
            }
        }
    }

    private func setTimeouts() throws(VerificationError) {
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            if setsockopt(descriptor, SOL_SOCKET, option, &timeout, socklen_t(MemoryLayout<timeval>.size)) != 0 {
                throw VerificationError("\(label): cannot set the socket's timeouts: \(Self.errorText(errno))")
            }
        }
    }

    /// Writes all of `bytes`; `what` says what they are, for the error.
    func write(_ bytes: UnsafeRawBufferPointer, what: String) throws(VerificationError) {
        var done = 0
        while done < bytes.count {
            let sent = send(descriptor, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            if sent > 0 {
                done += sent
                continue
            }
            let code = errno
            if sent < 0 && code == EINTR { continue }
            if sent < 0 && (code == EAGAIN || code == EWOULDBLOCK) {
                throw VerificationError("\(label): the server took no data for \(timeoutSeconds) s while livecopy sent \(what)")
            }
            throw VerificationError("\(label): cannot send \(what): \(sent < 0 ? Self.errorText(code) : "nothing sent")")
        }
    }

    /// Writes `bytes` whole.
    func write(_ bytes: [UInt8], what: String) throws(VerificationError) {
        // `withUnsafeBytes` rethrows untyped errors: carry the typed one out in a Result.
        try bytes.withUnsafeBytes { raw in Result { () throws(VerificationError) in try write(raw, what: what) } }.get()
    }

    /// Fills `buffer` from the socket; `what` says what is awaited, for the error.
    func read(into buffer: UnsafeMutableRawBufferPointer, what: String) throws(VerificationError) {
        var done = 0
        while done < buffer.count {
            let received = recv(descriptor, buffer.baseAddress! + done, buffer.count - done, 0)
            if received > 0 {
                done += received
                continue
            }
            if received == 0 {
                throw VerificationError("\(label): the server closed the connection while livecopy awaited \(what) (\(done) of \(buffer.count) bytes came)")
            }
            let code = errno
            if code == EINTR { continue }
            if code == EAGAIN || code == EWOULDBLOCK {
                throw VerificationError("\(label): no answer within \(timeoutSeconds) s while livecopy awaited \(what)")
            }
            throw VerificationError("\(label): cannot read \(what): \(Self.errorText(code))")
        }
    }

    /// Reads exactly `count` bytes.
    func read(count: Int, what: String) throws(VerificationError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { raw in Result { () throws(VerificationError) in try read(into: raw, what: what) } }.get()
        return bytes
    }

    /// Closes the descriptor (once; the caller forgets this value afterwards).
    func close() {
        _ = Glibc.close(descriptor)
    }

    /// `strerror` with the errno's number: "No such file or directory (errno 2)".
    static func errorText(_ code: Int32) -> String {
        "\(String(cString: strerror(code))) (errno \(code))"
    }
}

