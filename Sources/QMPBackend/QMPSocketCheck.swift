// Who may write to a QMP socket: checked before livecopy uses it.

import Foundation
import LivecopyBackend

/// QMP sockets are root-equivalent: whoever can write to one commands the VM.
enum QMPSocketCheck {
    /// Refuses a socket that is group- or world-writable or owned by another user than
    /// this process's, unless `allowShared`.
    static func check(_ socket: String, allowShared: Bool) throws {
        guard !allowShared else { return }
        var info = stat()
        // The socket a connection reaches (through any symlink); a missing one is reported by connect.
        guard stat(socket, &info) == 0 else { return }
        let mode = String(info.st_mode & 0o7777, radix: 8)
        if info.st_uid != geteuid() {
            throw unsafe("QMP socket \(socket) is owned by uid \(info.st_uid), not by livecopy's uid \(geteuid()); whoever owns it controls the VM (set allow_shared_socket: true in the policy to accept it)")
        }
        let writable = [(S_IWGRP, "group"), (S_IWOTH, "world")].filter { info.st_mode & $0.0 != 0 }.map(\.1)
        if !writable.isEmpty {
            throw unsafe("QMP socket \(socket) is \(writable.joined(separator: "- and "))-writable (mode 0\(mode)); anyone who can write to it controls the VM (chmod it 0700, or set allow_shared_socket: true in the policy)")
        }
    }

    private static func unsafe(_ message: String) -> BackendError {
        BackendError(.unsafe, reason: message)
    }
}
