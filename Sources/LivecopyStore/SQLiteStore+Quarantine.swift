// Quarantined sources (migration 0009): recorded with their disk's move to `completed`,
// moved through their states by `purge` and `restore` with an event in the disk's
// timeline, and summed up for `status`.

import Foundation
import GRDB
import LivecopyModel

extension SQLiteStore {
    public func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, quarantining image: NewQuarantinedImage,
                     at: Date) async throws {
        try await writeAwaiting { db in try Self.save(db, disk: disk, expecting: expecting, event: event, quarantining: image, at: at) }
    }

    /// `save(disk:expecting:event:quarantining:at:)` on the calling thread (for `batch` and tools).
    public func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, quarantining image: NewQuarantinedImage,
                     at: Date) throws {
        try write { db in try Self.save(db, disk: disk, expecting: expecting, event: event, quarantining: image, at: at) }
    }

    private static func save(_ db: Database, disk: DiskRecord, expecting: DiskState, event: NewEvent?,
                             quarantining image: NewQuarantinedImage, at: Date) throws {
        try save(db, disk: disk, expecting: expecting, event: event, at: at)
        try db.executeCached(
            sql: """
                INSERT INTO quarantined_images (disk_id, plan_id, original_path, quarantine_path, size_bytes, device, inode,
                                                quarantined_at, expires_at, state)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'held')
                """,
            arguments: [disk.id, disk.planId, image.originalPath, image.quarantinePath, image.sizeBytes,
                        Int64(bitPattern: image.device), Int64(bitPattern: image.inode),
                        image.quarantinedAt.timeIntervalSince1970, image.expiresAt.timeIntervalSince1970])
    }

    public func quarantinedImage(ofDisk diskId: Int64) throws -> QuarantinedImage? {
        try read { db in
            try Row.fetchOneCached(db, sql: "SELECT * FROM quarantined_images WHERE disk_id = ?", arguments: [diskId])
                .map(Self.quarantinedImage)
        }
    }

    public func quarantinedImages(ofPlan planId: Int64) throws -> [QuarantinedImage] {
        try read { db in
            // Through the plan's disks (disks_by_plan), then each disk's one image.
            try Row.fetchAllCached(db, sql: """
                SELECT q.* FROM disks d JOIN quarantined_images q ON q.disk_id = d.id
                WHERE d.plan_id = ? ORDER BY q.id
                """, arguments: [planId]).map(Self.quarantinedImage)
        }
    }

    public func quarantinedImages(in states: Set<QuarantineState>, expiredBy: Date?) throws -> [QuarantinedImage] {
        guard !states.isEmpty else { return [] }
        let names = states.map(\.rawValue).sorted()
        var sql = "SELECT * FROM quarantined_images WHERE state IN (\(names.map { _ in "?" }.joined(separator: ", ")))"
        var arguments = StatementArguments(names)
        if let expiredBy {
            sql += " AND expires_at <= ?"
            _ = arguments.append(contentsOf: [expiredBy.timeIntervalSince1970])
        }
        sql += " ORDER BY id"
        return try read { db in try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.quarantinedImage) }
    }

    public func saveQuarantine(id: Int64, state: QuarantineState, expecting: QuarantineState, event: NewEvent,
                               at: Date) async throws {
        try await writeAwaiting { db in
            try Self.saveQuarantine(db, id: id, state: state, expecting: expecting, event: event, at: at)
        }
    }

    private static func saveQuarantine(_ db: Database, id: Int64, state: QuarantineState, expecting: QuarantineState,
                                       event: NewEvent, at: Date) throws {
        guard let row = try Row.fetchOneCached(db, sql: "SELECT disk_id, plan_id, state FROM quarantined_images WHERE id = ?",
                                               arguments: [id]) else {
            throw StoreError(.conflict("quarantined image \(id) is gone from the database"))
        }
        try db.executeCached(
            sql: "UPDATE quarantined_images SET state = ?, ended_at = ? WHERE id = ? AND state = ?",
            arguments: [state.rawValue, state.isFinal ? at.timeIntervalSince1970 : nil, id, expecting.rawValue])
        guard db.changesCount == 1 else {
            throw StoreError(.conflict("quarantined image \(id) is no longer \(expecting.rawValue)"))
        }
        try insertEvent(db, planId: try column(row, "plan_id", of: "quarantined_images"),
                        diskId: try column(row, "disk_id", of: "quarantined_images"), event: event, at: at)
    }

    public func quarantineSummary() throws -> QuarantineSummary {
        try read { db in
            let row = try Row.fetchOneCached(db, sql: """
                SELECT COUNT(*) AS n, COALESCE(SUM(size_bytes), 0) AS bytes,
                       MIN(CASE WHEN state = 'held' THEN expires_at END) AS next_expiry
                FROM quarantined_images WHERE state IN ('held', 'purging', 'restoring')
                """)
            guard let row else { return QuarantineSummary(count: 0, bytes: 0, nextExpiry: nil) }
            return QuarantineSummary(count: try Self.column(row, "n", of: "quarantined_images"),
                                     bytes: try Self.column(row, "bytes", of: "quarantined_images"),
                                     nextExpiry: try Self.date(row, "next_expiry", of: "quarantined_images"))
        }
    }

    public func disks(usingPath path: String) throws -> [DiskRecord] {
        try read { db in
            // disks_by_destination for the one; the source has no index (a rare question: purge's).
            try Row.fetchAllCached(db, sql: "SELECT * FROM disks WHERE destination = ? OR source = ? ORDER BY id",
                                   arguments: [path, path]).map(Self.diskRecord)
        }
    }

    static func quarantinedImage(_ row: Row) throws -> QuarantinedImage {
        func value<Value: DatabaseValueConvertible>(_ name: String) throws -> Value { try column(row, name, of: "quarantined_images") }
        let stateText: String = try value("state")
        guard let state = QuarantineState(rawValue: stateText) else {
            throw StoreError("quarantined image has unknown state '\(stateText)'")
        }
        let device: Int64 = try value("device")
        let inode: Int64 = try value("inode")
        return QuarantinedImage(
            id: try value("id"), diskId: try value("disk_id"), planId: try value("plan_id"),
            originalPath: try value("original_path"), quarantinePath: try value("quarantine_path"),
            sizeBytes: try value("size_bytes"), device: UInt64(bitPattern: device), inode: UInt64(bitPattern: inode),
            quarantinedAt: try date(row, "quarantined_at", of: "quarantined_images") ?? Date(timeIntervalSince1970: 0),
            expiresAt: try date(row, "expires_at", of: "quarantined_images") ?? Date(timeIntervalSince1970: 0),
            state: state, endedAt: try date(row, "ended_at", of: "quarantined_images"))
    }
}
