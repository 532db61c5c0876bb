// Telling systemd how `livecopy serve` is doing (sd_notify(3)'s protocol, for a unit of
// Type=notify): a datagram to the socket systemd names in $NOTIFY_SOCKET.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Sends `READY=1`, `RELOADING=1`, `STOPPING=1` and `STATUS=…` to systemd when started by
/// a Type=notify unit; does nothing otherwise. Best effort: a lost message changes
/// nothing livecopy does.
struct SystemdNotifier: Sendable {
    /// The socket's path (`@` first: Linux's abstract namespace); nil outside systemd.
    let socketPath: String?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let path = environment["NOTIFY_SOCKET"] ?? ""
        socketPath = path.isEmpty ? nil : path
    }

    func ready(status: String) { send("READY=1\nSTATUS=\(status)") }
    func reloading() { send("RELOADING=1") }
    func status(_ text: String) { send("STATUS=\(text)") }
    func stopping(status: String) { send("STOPPING=1\nSTATUS=\(status)") }

    /// One datagram to the notify socket.
    func send(_ message: String) {
        guard let socketPath else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(socketPath.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { return }
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            for (index, byte) in bytes.enumerated() { path[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let payload = Array(message.utf8)
        _ = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                sendto(fd, payload, payload.count, Int32(MSG_NOSIGNAL), socketAddress, length)
            }
        }
    }
}
