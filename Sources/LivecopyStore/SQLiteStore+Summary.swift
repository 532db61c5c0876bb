// `history`'s plan filter as SQL, and the selected plans' totals in one SQL query
// (`SQLiteStore.summary`).

import Foundation
import GRDB
import LivecopyModel

extension PlanFilter {
    /// The SQL condition on `table`'s rows (the plans table or its alias), "" for none,
    /// and its arguments. With a time range, the state is named with a unary `+`: SQLite
    /// then walks the creation-time index (`plans_by_created_at`, migration 0008) over
    /// the range instead of every plan of those states.
    func whereClause(table: String) -> (String, StatementArguments) {
        var clauses: [String] = []
        var arguments: StatementArguments = []
        if let states {
            let column = createdFrom != nil || createdBefore != nil ? "+\(table).state" : "\(table).state"
            clauses.append("\(column) IN (\(states.map { _ in "?" }.joined(separator: ", ")))")
            for state in states.sorted(by: { $0.rawValue < $1.rawValue }) { _ = arguments.append(contentsOf: [state.rawValue]) }
        }
        if let vm {
            clauses.append("\(table).id IN (SELECT plan_id FROM disks WHERE vm_name = ?)")
            _ = arguments.append(contentsOf: [vm])
        }
        if let createdFrom {
            clauses.append("\(table).created_at >= ?")
            _ = arguments.append(contentsOf: [createdFrom.timeIntervalSince1970])
        }
        if let createdBefore {
            clauses.append("\(table).created_at < ?")
            _ = arguments.append(contentsOf: [createdBefore.timeIntervalSince1970])
        }
        return (clauses.joined(separator: " AND "), arguments)
    }
}

extension SQLiteStore {
    /// The totals of the plans `filter` selects, in one query of SQL aggregates
    /// (`PlanSummary`): no row is read into Swift but the one answer.
    public func summary(_ filter: PlanFilter) throws -> PlanSummary {
        let (sql, arguments) = Self.summaryQuery(filter)
        return try read { db in
            guard let row = try Row.fetchOne(db, sql: sql, arguments: arguments) else {
                return PlanSummary(plans: 0, disks: 0, completedDisks: 0, bytes: 0, timedBytes: 0, copySeconds: 0)
            }
            return PlanSummary(plans: row["plans"], disks: row["disks"], completedDisks: row["completed_disks"],
                               bytes: row["bytes"], timedBytes: row["timed_bytes"], copySeconds: row["copy_seconds"])
        }
    }

    /// `summary`'s query: the aggregates over the selected plans left-joined to their disks,
    /// each completed disk's copy time from two lookups of its events.
    private static func summaryQuery(_ filter: PlanFilter) -> (String, StatementArguments) {
        let (clauses, arguments) = filter.whereClause(table: "p")
        let copyTime = """
            (SELECT MAX(e.at) FROM events e WHERE e.plan_id = d.plan_id AND e.disk_id = d.id
                AND e.kind = 'transition' AND e.to_state = 'retiring')
            - (SELECT MIN(e.at) FROM events e WHERE e.plan_id = d.plan_id AND e.disk_id = d.id
                AND e.kind = 'transition' AND e.to_state IN ('streaming', 'mirroring'))
            """
        let sql = """
            SELECT COUNT(DISTINCT plan_id) AS plans, COUNT(disk_id) AS disks,
                   COUNT(CASE WHEN completed THEN 1 END) AS completed_disks,
                   COALESCE(SUM(CASE WHEN completed THEN allocated END), 0) AS bytes,
                   COALESCE(SUM(CASE WHEN timed THEN allocated END), 0) AS timed_bytes,
                   COALESCE(SUM(CASE WHEN timed THEN seconds END), 0) AS copy_seconds
            FROM (SELECT plan_id, disk_id, allocated, seconds, completed,
                         completed AND allocated IS NOT NULL AND seconds > 0 AS timed
                  FROM (SELECT p.id AS plan_id, d.id AS disk_id, d.allocated_bytes AS allocated,
                               d.state = 'completed' AS completed,
                               CASE WHEN d.state = 'completed' THEN \(copyTime) END AS seconds
                        FROM plans p LEFT JOIN disks d ON d.plan_id = p.id
                        \(clauses.isEmpty ? "" : "WHERE " + clauses)))
            """
        return (sql, arguments)
    }

    /// SQLite's plan for `summary(filter)`'s query, one step a line (a test checks that a
    /// time range walks the creation-time index, not every plan).
    public func summaryQueryPlan(_ filter: PlanFilter) throws -> [String] {
        let (sql, arguments) = Self.summaryQuery(filter)
        return try read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: arguments).map { $0["detail"] as String }
        }
    }
}
