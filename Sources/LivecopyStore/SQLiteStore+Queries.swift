// Reading plans, disks and events.

import Foundation
import GRDB
import LivecopyModel

extension SQLiteStore {
    public func plan(id: Int64) throws -> PlanRecord? {
        try read { db in
            try Row.fetchOneCached(db, sql: "SELECT * FROM plans WHERE id = ?", arguments: [id]).map(Self.planRecord)
        }
    }

    public func disks(ofPlan planId: Int64) throws -> [DiskRecord] {
        try read { db in
            try Row.fetchAllCached(db, sql: "SELECT * FROM disks WHERE plan_id = ? ORDER BY id", arguments: [planId])
                .map(Self.diskRecord)
        }
    }

    public func disk(id: Int64) throws -> DiskRecord? {
        try read { db in
            try Row.fetchOneCached(db, sql: "SELECT * FROM disks WHERE id = ?", arguments: [id]).map(Self.diskRecord)
        }
    }

    public func events(ofPlan planId: Int64) throws -> [EventRecord] {
        try read { db in
            try Row.fetchAllCached(db, sql: "SELECT * FROM events WHERE plan_id = ? ORDER BY id", arguments: [planId])
                .map(Self.eventRecord)
        }
    }

    public func events(ofDisk diskId: Int64, planId: Int64) throws -> [EventRecord] {
        try read { db in
            try Row.fetchAllCached(db, sql: "SELECT * FROM events WHERE plan_id = ? AND disk_id = ? ORDER BY id",
                                   arguments: [planId, diskId])
                .map(Self.eventRecord)
        }
    }

    public func plans(states: Set<PlanState>?, vm: String?, limit: Int?) throws -> [PlanRecord] {
        try plans(PlanFilter(states: states, vm: vm), limit: limit)
    }

    /// Plans newest first that `filter` selects, at most `limit`.
    public func plans(_ filter: PlanFilter, limit: Int?) throws -> [PlanRecord] {
        var (clauses, arguments) = filter.whereClause(table: "plans")
        var sql = "SELECT * FROM plans"
        if !clauses.isEmpty { sql += " WHERE " + clauses }
        sql += " ORDER BY id DESC"
        if let limit {
            sql += " LIMIT ?"
            _ = arguments.append(contentsOf: [limit])
        }
        return try read { db in try Row.fetchAllCached(db, sql: sql, arguments: arguments).map(Self.planRecord) }
    }
}

extension SQLiteStore {
    /// The newest event of each disk of plan `planId`, by disk id (one query over the
    /// plan's events through its index, for `livecopy watch`'s refreshes); the plan's own
    /// newest event, with no disk, is left out.
    public func latestDiskEvents(ofPlan planId: Int64) throws -> [Int64: EventRecord] {
        let events = try read { db in
            try Row.fetchAllCached(db, sql: """
                SELECT * FROM events WHERE id IN
                    (SELECT MAX(id) FROM events WHERE plan_id = ? AND disk_id IS NOT NULL GROUP BY disk_id)
                """, arguments: [planId]).map(Self.eventRecord)
        }
        return Dictionary(events.compactMap { event in event.diskId.map { ($0, event) } }, uniquingKeysWith: { $1 })
    }
}
