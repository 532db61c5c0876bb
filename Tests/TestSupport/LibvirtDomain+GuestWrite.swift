import Foundation
import QMP

/// Guest writes and queries through the domain's test-only QMP monitor.
extension LibvirtDomain {
    /// Connects to the test monitor, runs `body`, and disconnects, so the next caller
    /// (the monitor serves one client at a time) is never kept waiting. Retries the
    /// connect for 10 s while the socket is not listening yet.
    public func withTestMonitor<T>(_ body: (QMPConnection) async throws -> T) async throws -> T {
        let deadline = Date().addingTimeInterval(10)
        var connection: QMPConnection
        while true {
            do {
                connection = try await QMPConnection.connect(socketPath: testSocket, connectTimeout: 5, commandTimeout: 30)
                break
            } catch let error as QMPClientError {
                guard case .connectFailed = error, Date() < deadline else { throw error }
                try await Task.sleep(nanoseconds: 50_000_000)
            }
        }
        do {
            let result = try await body(connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }

    /// The node at the top of disk `target` now (`inserted.node-name` of the `query-block`
    /// entry whose `qdev` is `/machine/peripheral/ua-<target>/virtio-backend`). libvirt
    /// names nodes `libvirt-N-format`; a snapshot puts a new one on top.
    public func topNode(target: String, on connection: QMPConnection) async throws -> String {
        let qdev = "/machine/peripheral/ua-\(target)/virtio-backend"
        let devices = try await connection.execute("query-block").arrayValue ?? []
        guard let device = devices.first(where: { $0["qdev"]?.stringValue == qdev }) else {
            throw LibvirtRigError.noSuchDisk(domain: name, target: target, reason: "query-block has no device \(qdev)")
        }
        guard let node = device["inserted"]?["node-name"]?.stringValue else {
            throw LibvirtRigError.noSuchDisk(domain: name, target: target, reason: "\(qdev) has no medium (no inserted.node-name)")
        }
        return node
    }

    /// A guest write into disk `target`, flushed: on the disk's current top node, HMP
    /// `qemu-io NODE "write -P 0xPP OFFSET LENGTH"` then `qemu-io NODE "flush"`. Throws
    /// when HMP answers with text (an error), or when QEMU's log does not show qemu-io's
    /// "wrote" line, or shows an error, within 5 s (virtlogd relays it).
    public func write(pattern: UInt8, offset: String, length: String, target: String) async throws {
        try await withTestMonitor { connection in
            let node = try await topNode(target: target, on: connection)
            let before = logSize()
            let write = "qemu-io \(node) \"write -P \(QEMUImage.hex(pattern)) \(offset) \(length)\""
            let flush = "qemu-io \(node) \"flush\""
            for commandLine in [write, flush] {
                let reply = try await connection.execute("human-monitor-command", ["command-line": .string(commandLine)])
                let text = reply.stringValue ?? reply.compactText
                if !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                    throw LibvirtRigError.guestWriteFailed(command: commandLine, output: text)
                }
            }
            var printed = ""
            let deadline = Date().addingTimeInterval(5)
            repeat {
                printed = logText(from: before)
                if printed.contains("wrote ") || QEMUImage.containsFailure(printed) { break }
                try await Task.sleep(nanoseconds: 20_000_000)
            } while Date() < deadline
            if QEMUImage.containsFailure(printed) || !printed.contains("wrote ") {
                throw LibvirtRigError.guestWriteFailed(command: write, output: "QEMU's log (\(logPath)) shows: \(printed)")
            }
        }
    }

    /// The size of QEMU's log now, to read only what follows.
    private func logSize() -> UInt64 {
        let size = (try? FileManager.default.attributesOfItem(atPath: logPath)[.size] as? NSNumber)?.uint64Value
        return size ?? 0
    }

    /// QEMU's log from byte `offset` on.
    private func logText(from offset: UInt64) -> String {
        guard let handle = FileHandle(forReadingAtPath: logPath) else { return "" }
        defer { try? handle.close() }
        handle.seek(toFileOffset: offset)
        return String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
    }
}
