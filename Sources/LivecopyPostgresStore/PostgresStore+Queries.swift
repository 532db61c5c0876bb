// Reading plans, disks and events; `history`'s filter as SQL with its bindings.

import Foundation
import LivecopyModel
import PostgresNIO

/// SQL built piece by piece with its bindings numbered as they are added (`$1`, `$2`, …).
struct QueryBuilder {
    var sql = ""
    var binds = PostgresBindings()

    /// Binds `value` and returns its placeholder.
    mutating func bind<Value: PostgresDynamicTypeEncodable>(_ value: Value) -> String {
        binds.append(value)
        return "$\(binds.count)"
    }

    var query: PostgresQuery { PostgresQuery(unsafeSQL: sql, binds: binds) }
}

extension PlanFilter {
    /// The condition on the plans aliased `table`, "" for none, its values bound in `builder`.
    func condition(table: String, _ builder: inout QueryBuilder) -> String {
        var clauses: [String] = []
        if let states {
            clauses.append("\(table).state = ANY(\(builder.bind(states.map(\.rawValue).sorted())))")
        }
        if let vm {
            clauses.append("\(table).id IN (SELECT plan_id FROM disks WHERE vm_name = \(builder.bind(vm)))")
        }
        if let createdFrom {
            clauses.append("\(table).created_at >= \(builder.bind(createdFrom.timeIntervalSince1970))")
        }
        if let createdBefore {
            clauses.append("\(table).created_at < \(builder.bind(createdBefore.timeIntervalSince1970))")
        }
        return clauses.joined(separator: " AND ")
    }
}

extension PostgresStore {
    public func plan(id: Int64) throws -> PlanRecord? {
        try read { statements in try statements.row("SELECT * FROM plans WHERE id = \(id)").map(Self.planRecord) }
    }

    public func disks(ofPlan planId: Int64) throws -> [DiskRecord] {
        try read { statements in
            try statements.query("SELECT * FROM disks WHERE plan_id = \(planId) ORDER BY id").map(Self.diskRecord)
        }
    }

    public func disk(id: Int64) throws -> DiskRecord? {
        try read { statements in try statements.row("SELECT * FROM disks WHERE id = \(id)").map(Self.diskRecord) }
    }

    public func events(ofPlan planId: Int64) throws -> [EventRecord] {
        try read { statements in
            try statements.query("SELECT * FROM events WHERE plan_id = \(planId) ORDER BY id").map(Self.eventRecord)
        }
    }

    public func events(ofDisk diskId: Int64, planId: Int64) throws -> [EventRecord] {
        try read { statements in
            try statements.query("SELECT * FROM events WHERE disk_id = \(diskId) AND plan_id = \(planId) ORDER BY id")
                .map(Self.eventRecord)
        }
    }

    public func plans(states: Set<PlanState>?, vm: String?, limit: Int?) throws -> [PlanRecord] {
        try plans(PlanFilter(states: states, vm: vm), limit: limit)
    }

    public func plans(_ filter: PlanFilter, limit: Int?) throws -> [PlanRecord] {
        var builder = QueryBuilder()
        let condition = filter.condition(table: "plans", &builder)
        if filter.createdFrom != nil || filter.createdBefore != nil {
            // A time range is selected first, through plans_by_created_at, then sorted. Given
            // `ORDER BY id DESC LIMIT n` directly, the planner walks the primary key backwards
            // and filters, not knowing that ids grow with created_at: a day in the middle of a
            // 250,000-plan store read 124,000 plans (68 ms) to find 20.
            builder.sql = "WITH selected AS MATERIALIZED (SELECT * FROM plans WHERE " + condition
                + ") SELECT * FROM selected ORDER BY id DESC"
        } else {
            builder.sql = "SELECT * FROM plans" + (condition.isEmpty ? "" : " WHERE " + condition) + " ORDER BY id DESC"
        }
        if let limit { builder.sql += " LIMIT \(builder.bind(limit))" }
        let query = builder.query
        return try read { statements in try statements.query(query).map(Self.planRecord) }
    }

    /// The newest event of each disk of plan `planId`, by disk id (one query through
    /// `events_by_plan`); the plan's own events, with no disk, are left out.
    public func latestDiskEvents(ofPlan planId: Int64) throws -> [Int64: EventRecord] {
        let events = try read { statements in
            try statements.query("""
                SELECT DISTINCT ON (disk_id) * FROM events WHERE plan_id = \(planId) AND disk_id IS NOT NULL
                ORDER BY disk_id, id DESC
                """).map(Self.eventRecord)
        }
        return Dictionary(events.compactMap { event in event.diskId.map { ($0, event) } }, uniquingKeysWith: { $1 })
    }

    /// The disks of `planIds` in one statement (`disks_by_plan`).
    public func disks(ofPlans planIds: [Int64]) throws -> [Int64: [DiskRecord]] {
        guard !planIds.isEmpty else { return [:] }
        let disks = try read { statements in
            try statements.query("SELECT * FROM disks WHERE plan_id = ANY(\(planIds)) ORDER BY plan_id, id")
                .map(Self.diskRecord)
        }
        var result = Dictionary(uniqueKeysWithValues: planIds.map { ($0, [DiskRecord]()) })
        for disk in disks { result[disk.planId, default: []].append(disk) }
        return result
    }

    /// The newest event of each disk of `planIds` in one statement (`events_by_plan`).
    public func latestDiskEvents(ofPlans planIds: [Int64]) throws -> [Int64: [Int64: EventRecord]] {
        guard !planIds.isEmpty else { return [:] }
        let events = try read { statements in
            try statements.query("""
                SELECT DISTINCT ON (disk_id) * FROM events WHERE plan_id = ANY(\(planIds)) AND disk_id IS NOT NULL
                ORDER BY disk_id, id DESC
                """).map(Self.eventRecord)
        }
        var result = Dictionary(uniqueKeysWithValues: planIds.map { ($0, [Int64: EventRecord]()) })
        for event in events { if let diskId = event.diskId { result[event.planId, default: [:]][diskId] = event } }
        return result
    }

    /// The controls of `planIds` in one statement.
    public func owners(ofPlans planIds: [Int64]) throws -> [Int64: PlanOwner] {
        guard !planIds.isEmpty else { return [:] }
        return try read { statements in
            var result: [Int64: PlanOwner] = [:]
            let query: PostgresQuery = "SELECT id, owner_pid, owner_host, owner_heartbeat FROM plans WHERE id = ANY(\(planIds))"
            for row in try statements.query(query) {
                if let owner = try Self.owner(row) { result[try Columns(row, of: "plans").value("id")] = owner }
            }
            return result
        }
    }

    public func controls(ofPlans planIds: [Int64]) throws -> [Int64: PlanControls] {
        guard !planIds.isEmpty else { return [:] }
        return try read { statements in
            var result: [Int64: PlanControls] = [:]
            for row in try statements.query("SELECT id, speed_override, paused FROM plans WHERE id = ANY(\(planIds))") {
                let columns = Columns(row, of: "plans")
                result[try columns.value("id")] = PlanControls(speedOverride: try columns.value("speed_override"),
                                                               paused: try columns.value("paused"))
            }
            return result
        }
    }

    /// Plans and disks by state: two aggregate queries. A state this release does not know
    /// (written by a newer one) is left out.
    public func stateCounts() throws -> StateCounts {
        try read { statements in
            var plans: [PlanState: Int] = [:]
            for row in try statements.query("SELECT state, COUNT(*) FROM plans GROUP BY state") {
                let (state, count) = try row.decode((String, Int64).self)
                if let known = PlanState(rawValue: state) { plans[known] = Int(count) }
            }
            var disks: [DiskState: Int] = [:]
            for row in try statements.query("SELECT state, COUNT(*) FROM disks GROUP BY state") {
                let (state, count) = try row.decode((String, Int64).self)
                if let known = DiskState(rawValue: state) { disks[known] = Int(count) }
            }
            return StateCounts(plans: plans, disks: disks)
        }
    }

    /// The totals of the plans `filter` selects, in one query of SQL aggregates over the
    /// plans' own totals (migration 0003: kept by the store as each disk completes), read
    /// from the index `plans_totals` alone: one entry a plan, no disk nor event looked up.
    /// With no VM and no time range (what `history` prints under every listing), the totals
    /// of the states asked for are summed instead (migration 0004): a few rows, whatever
    /// the store holds.
    public func summary(_ filter: PlanFilter) throws -> PlanSummary {
        var builder = QueryBuilder()
        if filter.vm == nil && filter.createdFrom == nil && filter.createdBefore == nil {
            let states = (filter.states ?? Set(PlanState.allCases)).map(\.rawValue)
            builder.sql = """
                SELECT COALESCE(SUM(plans), 0)::bigint AS plans, COALESCE(SUM(disks), 0)::bigint AS disks,
                       COALESCE(SUM(completed_disks), 0)::bigint AS completed_disks,
                       COALESCE(SUM(completed_bytes), 0)::bigint AS bytes,
                       COALESCE(SUM(timed_bytes), 0)::bigint AS timed_bytes,
                       COALESCE(SUM(copy_seconds), 0)::double precision AS copy_seconds
                FROM plan_state_totals WHERE state = ANY(\(builder.bind(states)))
                """
            return try summary(builder.query)
        }
        let condition = filter.condition(table: "p", &builder)
        builder.sql = """
            SELECT COUNT(*) AS plans, COALESCE(SUM(p.disk_count), 0)::bigint AS disks,
                   COALESCE(SUM(p.completed_disks), 0)::bigint AS completed_disks,
                   COALESCE(SUM(p.completed_bytes), 0)::bigint AS bytes,
                   COALESCE(SUM(p.timed_bytes), 0)::bigint AS timed_bytes,
                   COALESCE(SUM(p.copy_seconds), 0)::double precision AS copy_seconds
            FROM plans p
            \(condition.isEmpty ? "" : "WHERE " + condition)
            """
        return try summary(builder.query)
    }

    /// Runs a summary query: one row of the six totals.
    private func summary(_ query: PostgresQuery) throws -> PlanSummary {
        try read { statements in
            guard let row = try statements.row(query) else {
                return PlanSummary(plans: 0, disks: 0, completedDisks: 0, bytes: 0, timedBytes: 0, copySeconds: 0)
            }
            let columns = Columns(row, of: "plans")
            return PlanSummary(plans: Int(try columns.value("plans", as: Int64.self)), disks: Int(try columns.value("disks", as: Int64.self)),
                               completedDisks: Int(try columns.value("completed_disks", as: Int64.self)),
                               bytes: try columns.value("bytes"), timedBytes: try columns.value("timed_bytes"),
                               copySeconds: try columns.value("copy_seconds"))
        }
    }
}
