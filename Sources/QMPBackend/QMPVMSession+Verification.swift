// Verification exports over QMP: dirty bitmaps, frozen copies, and one NBD server per VM
// on a private UNIX socket (checked on QEMU 7.2: ../shared/NOTES.md, "Dirty bitmaps").

import Foundation
import LivecopyBackend
import QMP

extension QMPVMSession {
    public func addDirtyBitmap(nodeName: String, name: String) async throws {
        try await QMPErrors.mapping("block-dirty-bitmap-add") {
            do {
                try await qmp.blockDirtyBitmapAdd(node: nodeName, name: name)
            } catch let error as QMPCommandError where error.desc.lowercased().contains("already exists") {
                return  // added by an earlier attempt, and recording since
            }
        }
    }

    public func removeDirtyBitmap(nodeName: String, name: String) async throws {
        try await QMPErrors.mapping("block-dirty-bitmap-remove") {
            do {
                try await qmp.blockDirtyBitmapRemove(node: nodeName, name: name)
            } catch let error as QMPCommandError where Self.saysMissing(error) {
                return
            }
        }
    }

    public func openVerificationExport(_ export: VerificationExport) async throws -> VerificationEndpoint {
        let qmp = self.qmp
        return try await QMPErrors.mapping("block-export-add") {
            try await nbdServer.serialized {
                // A copy frozen earlier (a re-check, or a run that died) goes first, with its export.
                try await Self.endExport(export, qmp: qmp)
                try await qmp.freezeDirtyBitmap(node: export.nodeName, source: export.bitmap, copy: export.frozenBitmap)
                let socket = try await nbdServer.socket(qmp: qmp)
                do {
                    try await qmp.blockExportAdd(nodeName: export.nodeName, name: export.exportName, bitmap: export.frozenBitmap)
                } catch {
                    try? await qmp.blockDirtyBitmapRemove(node: export.nodeName, name: export.frozenBitmap)
                    try? await nbdServer.stopIfUnused(qmp: qmp)
                    throw error
                }
                nbdServer.exports.insert(export.exportName)
                return VerificationEndpoint(socketPath: socket, exportName: export.exportName, frozenBitmap: export.frozenBitmap)
            }
        }
    }

    public func closeVerificationExport(_ export: VerificationExport) async throws {
        let qmp = self.qmp
        try await QMPErrors.mapping("block-export-del") {
            try await nbdServer.serialized {
                try await Self.endExport(export, qmp: qmp)
                nbdServer.exports.remove(export.exportName)
                try await nbdServer.stopIfUnused(qmp: qmp)
            }
        }
    }

    /// Deletes the export if QEMU lists it, waits until QEMU has let go of it (a deletion
    /// completes once its clients are gone), then removes the frozen copy if present.
    private static func endExport(_ export: VerificationExport, qmp: any QMPSession) async throws {
        if try await qmp.queryBlockExports().contains(export.exportName) {
            try await qmp.blockExportDel(id: export.exportName)
            var checks = 0
            while try await qmp.queryBlockExports().contains(export.exportName) {
                checks += 1
                guard checks < 3000 else {
                    throw BackendError(.refused(transient: true), operation: "block-export-del",
                                       reason: "export \(export.exportName) still listed after its deletion (a client still connected?)")
                }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        do {
            try await qmp.blockDirtyBitmapRemove(node: export.nodeName, name: export.frozenBitmap)
        } catch let error as QMPCommandError where saysMissing(error) {
        }
    }

    /// QEMU's answer for a bitmap (or node) that is not there.
    static func saysMissing(_ error: QMPCommandError) -> Bool {
        let text = error.desc.lowercased()
        return text.contains("not found") || text.contains("no such") || text.contains("cannot find")
    }
}

/// The NBD server livecopy starts in one VM for its verification exports: started with
/// the first export on a socket in a fresh private directory (mode 0700), stopped with the
/// last. Operations on it are serialized, so disks of one VM verifying at once share it.
final class NBDServerSlot: @unchecked Sendable {
    // Guarded by `gate`: only touched inside `serialized`.
    private(set) var socketDirectory: String?
    var exports: Set<String> = []
    private let gate = Gate()

    /// Runs `body` alone among this VM's verification operations.
    func serialized<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await gate.enter()
        do {
            let result = try await body()
            await gate.leave()
            return result
        } catch {
            await gate.leave()
            throw error
        }
    }

    /// The server's socket, the server started first if livecopy runs none in this VM. An
    /// NBD server left by a livecopy that died (every export listed is one of livecopy's,
    /// `livecopy-…-frozen`) is stopped and replaced; anyone else's is left alone, and the
    /// verification refused.
    func socket(qmp: any QMPSession) async throws -> String {
        if let socketDirectory { return socketDirectory + "/nbd.sock" }
        let directory = try Self.privateDirectory()
        let socket = directory + "/nbd.sock"
        do {
            try await qmp.nbdServerStart(socketPath: socket)
        } catch let error as QMPCommandError where error.desc.lowercased().contains("already running") {
            let exports = try await qmp.queryBlockExports()
            guard exports.allSatisfy({ $0.hasPrefix("livecopy-") && $0.hasSuffix("-frozen") }) else {
                rmdir(directory)
                throw BackendError(.refused(transient: false), operation: "nbd-server-start",
                                   reason: "the VM already runs an NBD server that is not livecopy's (exports: \(exports.joined(separator: ", "))); livecopy cannot export the destination beside it")
            }
            for export in exports { try? await qmp.blockExportDel(id: export) }
            try await qmp.nbdServerStop()
            try await qmp.nbdServerStart(socketPath: socket)
        } catch {
            rmdir(directory)
            throw error
        }
        socketDirectory = directory
        return socket
    }

    /// Stops the server once no export of livecopy's is left.
    func stopIfUnused(qmp: any QMPSession) async throws {
        guard exports.isEmpty, let directory = socketDirectory else { return }
        try await qmp.nbdServerStop()
        unlink(directory + "/nbd.sock")
        rmdir(directory)
        socketDirectory = nil
    }

    private static func privateDirectory() throws -> String {
        var template = Array((NSTemporaryDirectory() + "livecopy-nbd-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw BackendError(.refused(transient: false), operation: "nbd-server-start",
                               reason: "cannot make a private directory for the NBD socket: \(String(cString: strerror(errno)))")
        }
        return String(cString: made)
    }

    /// A first-come first-served gate for async callers.
    private actor Gate {
        private var busy = false
        private var waiting: [CheckedContinuation<Void, Never>] = []

        func enter() async {
            while busy { await withCheckedContinuation { waiting.append($0) } }
            busy = true
        }

        func leave() {
            busy = false
            if !waiting.isEmpty { waiting.removeFirst().resume() }
        }
    }
}
