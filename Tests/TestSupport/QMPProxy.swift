import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A QMP monitor in front of a real QEMU's: every line passes through unchanged, except
/// the replies the test chooses to replace. For error paths real QEMU cannot produce on
/// demand (a flush that fails at one precise moment), with real QEMU doing everything
/// else. Serves one client at a time, one after another (livecopy, then recover).
public final class QMPProxy: @unchecked Sendable {
    /// Given a command's name and arguments (as JSON objects), the reply to give instead
    /// of QEMU's (a JSON object such as `["return": "Error flushing drive: …"]`), or nil
    /// to pass QEMU's on. QEMU still executes the command.
    public typealias Rewrite = @Sendable (_ name: String, _ arguments: [String: Any]) -> [String: Any]?

    public let socketPath: String
    private let upstream: String
    private let rewrite: Rewrite
    private let listener: Int32
    private let lock = NSLock()
    private var stopped = false

    /// Listens at `socketPath` (mode 0700) and forwards each client to `upstream`.
    public init(socketPath: String, upstream: String, rewrite: @escaping Rewrite) throws {
        self.socketPath = socketPath
        self.upstream = upstream
        self.rewrite = rewrite
        listener = try Self.listen(at: socketPath)
        chmod(socketPath, 0o700)
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    /// Stops accepting clients (a client connected stays connected until it leaves).
    public func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        unlink(socketPath)
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    private func acceptLoop() {
        while !isStopped {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { if isStopped { return } else { continue } }
            guard let server = try? Self.connect(to: upstream) else { close(client); continue }
            serve(client: client, server: server)
        }
    }

    /// Copies lines both ways until either side closes, replacing the chosen replies.
    private func serve(client: Int32, server: Int32) {
        let replaced = ReplacedReplies()
        let rewrite = self.rewrite
        let toServer = Thread {
            Self.copyLines(from: client, to: server) { line in
                if let object = Self.object(line), let name = object["execute"] as? String,
                   let reply = rewrite(name, object["arguments"] as? [String: Any] ?? [:]) {
                    replaced.set(Self.idKey(object["id"]), reply)
                }
                return line
            }
            shutdown(server, Int32(SHUT_RDWR))
        }
        toServer.start()
        Self.copyLines(from: server, to: client) { line in
            guard let object = Self.object(line), object["return"] != nil || object["error"] != nil,
                  var reply = replaced.take(Self.idKey(object["id"])) else { return line }
            reply["id"] = object["id"]
            guard let data = try? JSONSerialization.data(withJSONObject: reply) else { return line }
            return data
        }
        shutdown(client, Int32(SHUT_RDWR))
        close(client)
        close(server)
    }

    private final class ReplacedReplies: @unchecked Sendable {
        private let lock = NSLock()
        private var replies: [String: [String: Any]] = [:]
        func set(_ id: String, _ reply: [String: Any]) { lock.lock(); replies[id] = reply; lock.unlock() }
        func take(_ id: String) -> [String: Any]? {
            lock.lock()
            defer { lock.unlock() }
            return replies.removeValue(forKey: id)
        }
    }

    private static func idKey(_ id: Any?) -> String { id.map { "\($0)" } ?? "none" }

    private static func object(_ line: Data) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: line)) as? [String: Any]
    }

    /// Reads `from` line by line, writes `transform(line)` plus a newline to `to`.
    private static func copyLines(from source: Int32, to destination: Int32, _ transform: (Data) -> Data) {
        var pending = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(source, &buffer, buffer.count)
            guard count > 0 else { return }
            pending.append(contentsOf: buffer[0..<count])
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[pending.startIndex..<newline]
                pending = Data(pending[(newline + 1)...])
                var out = transform(Data(line))
                out.append(UInt8(ascii: "\n"))
                let written = out.withUnsafeBytes { write(destination, $0.baseAddress, $0.count) }
                guard written == out.count else { return }
            }
        }
    }

    private static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes + [0])
        }
        return address
    }

    private static func listen(at path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = address(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0, Glibc.listen(fd, 4) == 0 else {
            throw QEMUFixtureError.startFailed(reason: "QMPProxy cannot listen at \(path): \(String(cString: strerror(errno)))", log: "")
        }
        return fd
    }

    private static func connect(to path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = address(path)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, connected == 0 else {
            close(fd)
            throw QEMUFixtureError.startFailed(reason: "QMPProxy cannot reach \(path): \(String(cString: strerror(errno)))", log: "")
        }
        return fd
    }
}
