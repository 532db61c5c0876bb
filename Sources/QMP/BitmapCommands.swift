// Dirty bitmaps and NBD exports, for comparing a copy with its source (docs/retirement.md).

import Foundation

/// One entry of `inserted.dirty-bitmaps` in `query-block`.
public struct DirtyBitmapInfo: Decodable, Sendable {
    public let name: String?
    /// Bytes marked dirty.
    public let count: Int64
    public let granularity: Int64
    /// False for a frozen (disabled) bitmap.
    public let recording: Bool?
}

extension QMPSession {
    /// `block-dirty-bitmap-add` of a recording bitmap `name` on `node` (a node or device name).
    public func blockDirtyBitmapAdd(node: String, name: String) async throws {
        try await execute("block-dirty-bitmap-add", ["node": .string(node), "name": .string(name)])
    }

    /// `block-dirty-bitmap-remove`.
    public func blockDirtyBitmapRemove(node: String, name: String) async throws {
        try await execute("block-dirty-bitmap-remove", ["node": .string(node), "name": .string(name)])
    }

    /// A frozen copy `copy` of bitmap `source` on `node`, in one transaction: a disabled
    /// bitmap added, then `source` merged into it. A read-only NBD export refuses a
    /// recording bitmap, so this copy is what gets exported.
    public func freezeDirtyBitmap(node: String, source: String, copy: String) async throws {
        try await execute("transaction", ["actions": .array([
            .object(["type": "block-dirty-bitmap-add", "data": .object([
                "node": .string(node), "name": .string(copy), "disabled": true,
            ])]),
            .object(["type": "block-dirty-bitmap-merge", "data": .object([
                "node": .string(node), "target": .string(copy), "bitmaps": .array([.string(source)]),
            ])]),
        ])])
    }

    /// `nbd-server-start` on UNIX socket `path`.
    public func nbdServerStart(socketPath path: String) async throws {
        // `addr` is a SocketAddressLegacy: the path goes in `data`.
        try await execute("nbd-server-start", ["addr": .object(["type": "unix", "data": .object(["path": .string(path)])])])
    }

    /// `nbd-server-stop`.
    public func nbdServerStop() async throws {
        try await execute("nbd-server-stop")
    }

    /// `block-export-add` of node `nodeName` as read-only NBD export `name` (also its id),
    /// with bitmap `bitmap` readable by clients as `qemu:dirty-bitmap:<bitmap>`.
    public func blockExportAdd(nodeName: String, name: String, bitmap: String) async throws {
        try await execute("block-export-add", [
            "type": "nbd", "id": .string(name), "node-name": .string(nodeName), "name": .string(name),
            "writable": false, "bitmaps": .array([.string(bitmap)]),
        ])
    }

    /// `block-export-del` of export `id`.
    public func blockExportDel(id: String) async throws {
        try await execute("block-export-del", ["id": .string(id)])
    }

    /// The ids of the VM's block exports (`query-block-exports`).
    public func queryBlockExports() async throws -> [String] {
        let reply = try await execute("query-block-exports")
        guard case .array(let entries) = reply else { return [] }
        return entries.compactMap { entry in
            guard case .object(let members) = entry, case .string(let id)? = members["id"] else { return nil }
            return id
        }
    }
}
