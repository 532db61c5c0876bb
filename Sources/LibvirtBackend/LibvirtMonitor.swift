// QEMU's monitor reached through libvirt (libvirt-qemu's pass-through), as a QMPSession.

import CLibvirt
import Foundation
import LivecopyBackend
import QMP

/// A `QMPSession` to a libvirt domain's QEMU, through libvirt's monitor pass-through
/// (`virDomainQemuMonitorCommand`, and `virConnectDomainQemuMonitorEventRegister` for
/// events). libvirt marks a domain it passes commands to as tainted (`custom-monitor`
/// in the domain's log); livecopy sends through it only what libvirt has no API for:
/// the copy job held before its header rewrite, and the flush QEMU confirms (see
/// docs/libvirt.md).
final class LibvirtMonitor: QMPSession {
    let domain: LibvirtDomainConnection

    init(_ domain: LibvirtDomainConnection) {
        self.domain = domain
    }

    func execute(_ command: String, arguments: [String: JSONValue]?, timeout: Double?) async throws -> JSONValue {
        var message: [String: JSONValue] = ["execute": .string(command)]
        if let arguments { message["arguments"] = .object(arguments) }
        let text = JSONValue.object(message).compactText
        let reply = try await domain.call("virDomainQemuMonitorCommand(\(command))") { domain -> String? in
            var result: UnsafeMutablePointer<CChar>?
            guard virDomainQemuMonitorCommand(domain, text, &result, 0) == 0, let result else { return nil }
            defer { free(result) }
            return String(cString: result)
        }
        switch try QMPMessage.parse(line: reply) {
        case .reply(_, .success(let value)):
            return value
        case .reply(_, .failure(let error)):
            throw QMPCommandError(command: command, errorClass: error.errorClass, desc: error.desc)
        case .greeting, .event:
            throw QMPClientError.protocolViolation("libvirt passed back something other than a reply to \(command): \(reply.prefix(200))")
        }
    }

    func events() -> AsyncStream<QMPEvent> { domain.events.monitorEvents() }

    var isClosed: Bool { domain.isClosed }

    func close() async { await domain.close() }
}
