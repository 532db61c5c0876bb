// Writing plans, disks, progress and events: the compare-and-set saves the engine's
// ledger relies on (each a transaction with its write receipt), and the claim check.

import Foundation
import LivecopyModel
import PostgresNIO

extension PostgresStore {
    /// The advisory lock key the claim check and the plan's insert take together, so two
    /// plans submitted at once are checked one after the other (SQLite's IMMEDIATE write lock).
    static let claimLockKey: Int64 = 0x6c63_636c_6169_6d73

    public func insertPlan(_ plan: NewPlan, at: Date) throws -> (PlanRecord, [DiskRecord]) {
        let policyJSON = String(decoding: try JSONEncoder().encode(plan.policy), as: UTF8.self)
        return try transaction { statements in
            // Checked in the transaction that records the plan, under one lock: of two plans
            // submitted at once that claim the same destination or VM disk, one is recorded.
            if !plan.state.isFinal {
                try statements.execute("SELECT pg_advisory_xact_lock(\(Self.claimLockKey))")
                try Self.refuseClaimed(statements, plan.disks)
            }
            let time = at.timeIntervalSince1970
            let finishedAt: Double? = plan.state.isFinal ? time : nil
            guard let inserted = try statements.row("""
                INSERT INTO plans (name, policy_reference, policy_json, state, created_at, finished_at, error, host, disk_count)
                VALUES (\(plan.name), \(plan.policyReference), \(policyJSON), \(plan.state.rawValue), \(time), \(finishedAt),
                        \(plan.error), \(plan.host), \(Int32(clamping: plan.disks.count)))
                RETURNING *
                """) else { throw StoreError("database \(location): the plan's insert returned no row") }
            let record = try Self.planRecord(inserted)
            try statements.execute("""
                UPDATE plan_state_totals SET plans = plans + 1, disks = disks + \(Int64(plan.disks.count))
                WHERE state = \(plan.state.rawValue)
                """)
            var disks: [DiskRecord] = []
            for disk in plan.disks {
                guard let row = try statements.row("""
                    INSERT INTO disks (plan_id, vm_name, vm_address, device, destination, source, source_format,
                                       qmp_device, state, updated_at, strategy, destination_format, allocated_bytes)
                    VALUES (\(record.id), \(disk.vmName), \(disk.vmAddress), \(disk.device), \(disk.destination), \(disk.source),
                            \(disk.sourceFormat), \(disk.qmpDevice), 'pending', \(time), \(disk.strategy.rawValue),
                            \(disk.destinationFormat.rawValue), \(disk.allocatedBytes))
                    RETURNING *
                    """) else { throw StoreError("database \(location): a disk's insert returned no row") }
                disks.append(try Self.diskRecord(row))
            }
            let detail = plan.error.map { "plan \(plan.state.rawValue): \($0)" }
                ?? "plan recorded with \(plan.disks.count) disk(s), policy \(plan.policyReference ?? "default")"
            try Self.insertEvent(statements, planId: record.id, diskId: nil,
                                 event: NewEvent(kind: .transition, from: nil, to: plan.state.rawValue, detail: detail), at: at)
            return (record, disks)
        }
    }

    /// Throws a `.claimed` `StoreError` when a plan not yet final has a disk not yet final with one
    /// of `disks`' destinations, or on the same VM disk (VM address and device).
    private static func refuseClaimed(_ statements: Statements, _ disks: [NewPlan.Disk]) throws {
        let planStates = ClaimConflict.claimingPlanStates.map(\.rawValue)
        for disk in disks {
            for sameDestination in [true, false] {
                let query: PostgresQuery = sameDestination
                    ? """
                      SELECT p.id AS plan_id, p.state AS plan_state FROM disks d JOIN plans p ON p.id = d.plan_id
                      WHERE d.destination = \(disk.destination) AND d.state NOT IN ('completed', 'rolled_back')
                        AND p.state = ANY(\(planStates))
                      ORDER BY p.id LIMIT 1
                      """
                    : """
                      SELECT p.id AS plan_id, p.state AS plan_state FROM disks d JOIN plans p ON p.id = d.plan_id
                      WHERE d.vm_address = \(disk.vmAddress) AND d.device = \(disk.device)
                        AND d.state NOT IN ('completed', 'rolled_back') AND p.state = ANY(\(planStates))
                      ORDER BY p.id LIMIT 1
                      """
                guard let row = try statements.row(query) else { continue }
                let columns = Columns(row, of: "plans")
                throw StoreError(.claimed(ClaimConflict(
                    vmName: disk.vmName, device: disk.device,
                    claim: sameDestination ? .destination(disk.destination) : .vmDisk,
                    otherPlanId: try columns.value("plan_id"), otherPlanState: try columns.choice("plan_state"))))
            }
        }
    }

    public func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) async throws {
        try await writeAwaiting { statements in try Self.save(statements, disk: disk, expecting: expecting, event: event, at: at) }
    }

    static func save(_ statements: Statements, disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) throws {
        let changed = try statements.execute("""
            UPDATE disks SET source = \(disk.source), source_format = \(disk.sourceFormat), qmp_device = \(disk.qmpDevice),
                state = \(disk.state.rawValue), bytes_done = \(disk.bytesDone), bytes_total = \(disk.bytesTotal),
                error = \(disk.error), intent = \(disk.intent?.rawValue), destination_created = \(disk.destinationCreated),
                updated_at = \(at.timeIntervalSince1970), pivoted = \(disk.pivoted), pending_hook = \(disk.pendingHook?.rawValue),
                allocated_bytes = \(disk.allocatedBytes)
            WHERE id = \(disk.id) AND state = \(expecting.rawValue)
            """)
        guard changed == 1 else { throw StoreError(.conflict("disk \(disk.id) is no longer \(expecting.rawValue)")) }
        if disk.state == .completed && expecting != .completed { try addToPlanTotals(statements, completed: disk) }
        if let event { try insertEvent(statements, planId: disk.planId, diskId: disk.id, event: event, at: at) }
    }

    /// A disk just completed: its plan's totals (migration 0003) and those of its plan's
    /// state (0004) count it, its allocated bytes, and its copy time from its transitions
    /// (an index-only lookup). One statement; the plan's row is locked before its state's.
    private static func addToPlanTotals(_ statements: Statements, completed disk: DiskRecord) throws {
        try statements.execute("""
            WITH copy AS (
                SELECT MAX(at) FILTER (WHERE to_state = 'retiring')
                       - MIN(at) FILTER (WHERE to_state IN ('streaming', 'mirroring')) AS seconds
                FROM events
                WHERE disk_id = \(disk.id) AND kind = 'transition' AND to_state IN ('retiring', 'streaming', 'mirroring')),
            delta AS (
                SELECT COALESCE(\(disk.allocatedBytes)::bigint, 0) AS added_bytes,
                       CASE WHEN \(disk.allocatedBytes)::bigint IS NOT NULL AND seconds > 0
                            THEN \(disk.allocatedBytes)::bigint ELSE 0 END AS added_timed_bytes,
                       CASE WHEN \(disk.allocatedBytes)::bigint IS NOT NULL AND seconds > 0 THEN seconds ELSE 0 END
                           AS added_seconds
                FROM copy),
            plan AS (
                UPDATE plans SET completed_disks = plans.completed_disks + 1,
                    completed_bytes = plans.completed_bytes + delta.added_bytes,
                    timed_bytes = plans.timed_bytes + delta.added_timed_bytes,
                    copy_seconds = plans.copy_seconds + delta.added_seconds
                FROM delta WHERE plans.id = \(disk.planId)
                RETURNING plans.state, delta.added_bytes, delta.added_timed_bytes, delta.added_seconds)
            UPDATE plan_state_totals totals SET completed_disks = totals.completed_disks + 1,
                completed_bytes = totals.completed_bytes + plan.added_bytes,
                timed_bytes = totals.timed_bytes + plan.added_timed_bytes,
                copy_seconds = totals.copy_seconds + plan.added_seconds
            FROM plan WHERE totals.state = plan.state
            """)
    }

    /// A plan moved from `old` to `new`: its totals move from one state's row to the
    /// other's, in one statement that locks the two rows in key order (never two writers
    /// each holding one and waiting for the other).
    private static func movePlanTotals(_ statements: Statements, planId: Int64, from old: PlanState, to new: PlanState) throws {
        try statements.execute("""
            UPDATE plan_state_totals totals SET
                plans = totals.plans + sign.value,
                disks = totals.disks + sign.value * plan.disk_count,
                completed_disks = totals.completed_disks + sign.value * plan.completed_disks,
                completed_bytes = totals.completed_bytes + sign.value * plan.completed_bytes,
                timed_bytes = totals.timed_bytes + sign.value * plan.timed_bytes,
                copy_seconds = totals.copy_seconds + sign.value * plan.copy_seconds
            FROM (SELECT disk_count, completed_disks, completed_bytes, timed_bytes, copy_seconds FROM plans
                  WHERE id = \(planId)) AS plan,
                 (VALUES (\(old.rawValue), -1), (\(new.rawValue), 1)) AS sign (state, value)
            WHERE totals.state = sign.state
            """)
    }

    public func save(plan: PlanRecord, expecting: PlanState, event: NewEvent?, at: Date) async throws {
        try await writeAwaiting { statements in
            let changed = try statements.execute("""
                UPDATE plans SET state = \(plan.state.rawValue), finished_at = \(plan.finishedAt?.timeIntervalSince1970),
                    error = \(plan.error)
                WHERE id = \(plan.id) AND state = \(expecting.rawValue)
                """)
            guard changed == 1 else { throw StoreError(.conflict("plan \(plan.id) is no longer \(expecting.rawValue)")) }
            if plan.state != expecting { try Self.movePlanTotals(statements, planId: plan.id, from: expecting, to: plan.state) }
            if let event { try Self.insertEvent(statements, planId: plan.id, diskId: nil, event: event, at: at) }
        }
    }

    public func saveProgress(diskId: Int64, bytesDone: Int64, bytesTotal: Int64, at: Date) async throws {
        try await writeAwaiting { statements in
            try statements.execute("""
                UPDATE disks SET bytes_done = \(bytesDone), bytes_total = \(bytesTotal), updated_at = \(at.timeIntervalSince1970)
                WHERE id = \(diskId)
                """)
        }
    }

    public func appendEvent(planId: Int64, diskId: Int64?, event: NewEvent, at: Date) async throws {
        try await writeAwaiting { statements in try Self.insertEvent(statements, planId: planId, diskId: diskId, event: event, at: at) }
    }
}
