// Quarantined sources: recorded with their disk's move to `completed`, moved through their
// states by `purge` and `restore` with an event in the disk's timeline, summed for `status`.

import Foundation
import LivecopyModel
import PostgresNIO

extension PostgresStore {
    public func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, quarantining image: NewQuarantinedImage,
                     at: Date) async throws {
        try await writeAwaiting { statements in
            try Self.save(statements, disk: disk, expecting: expecting, event: event, at: at)
            try statements.execute("""
                INSERT INTO quarantined_images (disk_id, plan_id, original_path, quarantine_path, size_bytes, device, inode,
                                                quarantined_at, expires_at, state)
                VALUES (\(disk.id), \(disk.planId), \(image.originalPath), \(image.quarantinePath), \(image.sizeBytes),
                        \(Int64(bitPattern: image.device)), \(Int64(bitPattern: image.inode)),
                        \(image.quarantinedAt.timeIntervalSince1970), \(image.expiresAt.timeIntervalSince1970), 'held')
                """)
        }
    }

    public func quarantinedImage(ofDisk diskId: Int64) throws -> QuarantinedImage? {
        try read { statements in
            try statements.row("SELECT * FROM quarantined_images WHERE disk_id = \(diskId)").map(Self.quarantinedImage)
        }
    }

    public func quarantinedImages(ofPlan planId: Int64) throws -> [QuarantinedImage] {
        try read { statements in
            try statements.query("""
                SELECT q.* FROM disks d JOIN quarantined_images q ON q.disk_id = d.id
                WHERE d.plan_id = \(planId) ORDER BY q.id
                """).map(Self.quarantinedImage)
        }
    }

    public func quarantinedImages(in states: Set<QuarantineState>, expiredBy: Date?) throws -> [QuarantinedImage] {
        guard !states.isEmpty else { return [] }
        let names = states.map(\.rawValue).sorted()
        let query: PostgresQuery = expiredBy.map { expiry in
            "SELECT * FROM quarantined_images WHERE state = ANY(\(names)) AND expires_at <= \(expiry.timeIntervalSince1970) ORDER BY id"
        } ?? "SELECT * FROM quarantined_images WHERE state = ANY(\(names)) ORDER BY id"
        return try read { statements in try statements.query(query).map(Self.quarantinedImage) }
    }

    public func saveQuarantine(id: Int64, state: QuarantineState, expecting: QuarantineState, event: NewEvent,
                               at: Date) async throws {
        try await writeAwaiting { statements in
            guard let row = try statements.row("SELECT id, disk_id, plan_id FROM quarantined_images WHERE id = \(id)") else {
                throw StoreError(.conflict("quarantined image \(id) is gone from the database"))
            }
            let endedAt: Double? = state.isFinal ? at.timeIntervalSince1970 : nil
            let changed = try statements.execute("""
                UPDATE quarantined_images SET state = \(state.rawValue), ended_at = \(endedAt)
                WHERE id = \(id) AND state = \(expecting.rawValue)
                """)
            guard changed == 1 else { throw StoreError(.conflict("quarantined image \(id) is no longer \(expecting.rawValue)")) }
            let columns = Columns(row, of: "quarantined_images")
            try Self.insertEvent(statements, planId: try columns.value("plan_id"), diskId: try columns.value("disk_id"),
                                 event: event, at: at)
        }
    }

    public func quarantineSummary() throws -> QuarantineSummary {
        try read { statements in
            guard let row = try statements.row("""
                SELECT COUNT(*) AS n, COALESCE(SUM(size_bytes), 0)::bigint AS bytes,
                       MIN(CASE WHEN state = 'held' THEN expires_at END) AS next_expiry
                FROM quarantined_images WHERE state IN ('held', 'purging', 'restoring')
                """) else { return QuarantineSummary(count: 0, bytes: 0, nextExpiry: nil) }
            let columns = Columns(row, of: "quarantined_images")
            return QuarantineSummary(count: Int(try columns.value("n", as: Int64.self)), bytes: try columns.value("bytes"),
                                     nextExpiry: try columns.date("next_expiry"))
        }
    }

    public func disks(usingPath path: String) throws -> [DiskRecord] {
        try read { statements in
            try statements.query("SELECT * FROM disks WHERE destination = \(path) OR source = \(path) ORDER BY id")
                .map(Self.diskRecord)
        }
    }
}
