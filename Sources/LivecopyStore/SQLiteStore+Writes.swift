// Writing plans, disks, progress and events: the compare-and-set saves the engine's
// ledger relies on, each with its awaited and its synchronous form.

import Foundation
import GRDB
import LivecopyModel

extension SQLiteStore {
    public func insertPlan(_ plan: NewPlan, at: Date) throws -> (PlanRecord, [DiskRecord]) {
        let policyJSON = String(decoding: try JSONEncoder().encode(plan.policy), as: UTF8.self)
        let planId: Int64 = try writeImmediate { db in
            // Checked in the transaction that records the plan: of two plans submitted at
            // once that claim the same destination or VM disk, exactly one is recorded.
            if !plan.state.isFinal { try Self.refuseClaimed(db, plan.disks) }
            try db.executeCached(
                sql: """
                    INSERT INTO plans (name, policy_reference, policy_json, state, created_at, finished_at, error)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [plan.name, plan.policyReference, policyJSON, plan.state.rawValue, at.timeIntervalSince1970,
                            plan.state.isFinal ? at.timeIntervalSince1970 : nil, plan.error])
            let planId = db.lastInsertedRowID
            for disk in plan.disks {
                try db.executeCached(
                    sql: """
                        INSERT INTO disks (plan_id, vm_name, vm_address, device, destination, source, source_format,
                                           qmp_device, state, updated_at, strategy, destination_format,
                                           allocated_bytes)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)
                        """,
                    arguments: [planId, disk.vmName, disk.vmAddress, disk.device, disk.destination, disk.source,
                                disk.sourceFormat, disk.qmpDevice, at.timeIntervalSince1970, disk.strategy.rawValue,
                                disk.destinationFormat.rawValue, disk.allocatedBytes])
            }
            let detail = plan.error.map { "plan \(plan.state.rawValue): \($0)" }
                ?? "plan recorded with \(plan.disks.count) disk(s), policy \(plan.policyReference ?? "default")"
            try Self.insertEvent(db, planId: planId, diskId: nil,
                                 event: NewEvent(kind: .transition, from: nil, to: plan.state.rawValue, detail: detail), at: at)
            return planId
        }
        guard let record = try self.plan(id: planId) else { throw StoreError("plan \(planId) vanished after insert") }
        return (record, try disks(ofPlan: planId))
    }

    /// Disks that may still change, as migration 0004's partial index names them (word
    /// for word: SQLite uses a partial index only for a query repeating its WHERE term).
    static let diskNotFinal = "state NOT IN ('completed', 'rolled_back')"

    /// Throws a `.claimed` `StoreError` when a plan not yet final has a disk not yet final with one
    /// of `disks`' destinations, or on the same VM disk (VM address and device).
    private static func refuseClaimed(_ db: Database, _ disks: [NewPlan.Disk]) throws {
        let planStates = ClaimConflict.claimingPlanStates.map { "'\($0.rawValue)'" }.joined(separator: ", ")
        for disk in disks {
            for (sameDestination, match) in [(true, "destination = ?"), (false, "vm_address = ? AND device = ?")] {
                let row = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT p.id AS plan_id, p.state AS plan_state
                        FROM disks d JOIN plans p ON p.id = d.plan_id
                        WHERE d.\(match) AND d.\(diskNotFinal) AND p.state IN (\(planStates))
                        ORDER BY p.id LIMIT 1
                        """,
                    arguments: sameDestination ? [disk.destination] : [disk.vmAddress, disk.device])
                guard let row else { continue }
                let stateText: String = try column(row, "plan_state", of: "plans")
                guard let state = PlanState(rawValue: stateText) else { throw StoreError("plan has unknown state '\(stateText)'") }
                throw StoreError(.claimed(ClaimConflict(vmName: disk.vmName, device: disk.device,
                                    claim: sameDestination ? .destination(disk.destination) : .vmDisk,
                                    otherPlanId: try column(row, "plan_id", of: "plans"), otherPlanState: state)))
            }
        }
    }

    public func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) async throws {
        try await writeAwaiting { db in try Self.save(db, disk: disk, expecting: expecting, event: event, at: at) }
    }

    /// `save(disk:expecting:event:at:)` on the calling thread (for `batch` and tools).
    public func save(disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) throws {
        try write { db in try Self.save(db, disk: disk, expecting: expecting, event: event, at: at) }
    }

    static func save(_ db: Database, disk: DiskRecord, expecting: DiskState, event: NewEvent?, at: Date) throws {
        try db.executeCached(
            sql: """
                UPDATE disks SET source = ?, source_format = ?, qmp_device = ?, state = ?, bytes_done = ?,
                    bytes_total = ?, error = ?, intent = ?, destination_created = ?, updated_at = ?, pivoted = ?,
                    pending_hook = ?, allocated_bytes = ?
                WHERE id = ? AND state = ?
                """,
            arguments: [disk.source, disk.sourceFormat, disk.qmpDevice, disk.state.rawValue, disk.bytesDone,
                        disk.bytesTotal, disk.error, disk.intent?.rawValue, disk.destinationCreated,
                        at.timeIntervalSince1970, disk.pivoted, disk.pendingHook?.rawValue, disk.allocatedBytes,
                        disk.id, expecting.rawValue])
        guard db.changesCount == 1 else {
            throw StoreError(.conflict("disk \(disk.id) is no longer \(expecting.rawValue)"))
        }
        if let event {
            try insertEvent(db, planId: disk.planId, diskId: disk.id, event: event, at: at)
        }
    }

    public func save(plan: PlanRecord, expecting: PlanState, event: NewEvent?, at: Date) async throws {
        try await writeAwaiting { db in try Self.save(db, plan: plan, expecting: expecting, event: event, at: at) }
    }

    /// `save(plan:expecting:event:at:)` on the calling thread (for `batch` and tools).
    public func save(plan: PlanRecord, expecting: PlanState, event: NewEvent?, at: Date) throws {
        try write { db in try Self.save(db, plan: plan, expecting: expecting, event: event, at: at) }
    }

    private static func save(_ db: Database, plan: PlanRecord, expecting: PlanState, event: NewEvent?, at: Date) throws {
        try db.executeCached(
            sql: "UPDATE plans SET state = ?, finished_at = ?, error = ? WHERE id = ? AND state = ?",
            arguments: [plan.state.rawValue, plan.finishedAt?.timeIntervalSince1970, plan.error, plan.id,
                        expecting.rawValue])
        guard db.changesCount == 1 else {
            throw StoreError(.conflict("plan \(plan.id) is no longer \(expecting.rawValue)"))
        }
        if let event {
            try insertEvent(db, planId: plan.id, diskId: nil, event: event, at: at)
        }
    }

    public func saveProgress(diskId: Int64, bytesDone: Int64, bytesTotal: Int64, at: Date) async throws {
        try await writeAwaiting { db in try Self.saveProgress(db, diskId: diskId, bytesDone: bytesDone, bytesTotal: bytesTotal, at: at) }
    }

    /// `saveProgress(diskId:bytesDone:bytesTotal:at:)` on the calling thread (for `batch` and tools).
    public func saveProgress(diskId: Int64, bytesDone: Int64, bytesTotal: Int64, at: Date) throws {
        try write { db in try Self.saveProgress(db, diskId: diskId, bytesDone: bytesDone, bytesTotal: bytesTotal, at: at) }
    }

    private static func saveProgress(_ db: Database, diskId: Int64, bytesDone: Int64, bytesTotal: Int64, at: Date) throws {
        try db.executeCached(
            sql: "UPDATE disks SET bytes_done = ?, bytes_total = ?, updated_at = ? WHERE id = ?",
            arguments: [bytesDone, bytesTotal, at.timeIntervalSince1970, diskId])
    }

    public func appendEvent(planId: Int64, diskId: Int64?, event: NewEvent, at: Date) async throws {
        try await writeAwaiting { db in try Self.insertEvent(db, planId: planId, diskId: diskId, event: event, at: at) }
    }

    /// `appendEvent(planId:diskId:event:at:)` on the calling thread (for `batch` and tools).
    public func appendEvent(planId: Int64, diskId: Int64?, event: NewEvent, at: Date) throws {
        try write { db in try Self.insertEvent(db, planId: planId, diskId: diskId, event: event, at: at) }
    }
}
