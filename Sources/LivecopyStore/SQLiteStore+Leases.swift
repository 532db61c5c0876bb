// Plan ownership (the lease: acquire, renew, release) and cancel requests.

import Foundation
import GRDB
import LivecopyModel

extension SQLiteStore {
    public func owner(ofPlan planId: Int64) throws -> PlanOwner? {
        try read { db in
            try Row.fetchOneCached(db, sql: "SELECT owner_pid, owner_host, owner_heartbeat FROM plans WHERE id = ?", arguments: [planId])
                .flatMap(Self.owner)
        }
    }

    public func acquireLease(planId: Int64, owner: PlanOwner, isGone: @escaping @Sendable (PlanOwner) -> Bool) async throws -> PlanOwner? {
        try await writeAwaiting { db in try Self.acquireLease(db, planId: planId, owner: owner, isGone: isGone) }
    }

    /// `acquireLease(planId:owner:isGone:)` on the calling thread (for `batch` and tools).
    @discardableResult
    public func acquireLease(planId: Int64, owner: PlanOwner, isGone: (PlanOwner) -> Bool) throws -> PlanOwner? {
        try write { db in try Self.acquireLease(db, planId: planId, owner: owner, isGone: isGone) }
    }

    private static func acquireLease(_ db: Database, planId: Int64, owner: PlanOwner, isGone: (PlanOwner) -> Bool) throws -> PlanOwner? {
        guard let row = try Row.fetchOne(
            db, sql: "SELECT owner_pid, owner_host, owner_heartbeat FROM plans WHERE id = ?", arguments: [planId])
        else { throw StoreError("no plan with id \(planId)") }
        let current = try Self.owner(row)
        if let current, current.pid != owner.pid || current.host != owner.host, !isGone(current) {
            throw StoreError(.leaseHeld(planId: planId, owner: current))
        }
        try db.executeCached(
            sql: "UPDATE plans SET owner_pid = ?, owner_host = ?, owner_heartbeat = ? WHERE id = ?",
            arguments: [owner.pid, owner.host, owner.heartbeat.timeIntervalSince1970, planId])
        let detail = current.map { "lease taken over from \($0) by \(owner)" } ?? "lease taken by \(owner)"
        try insertEvent(db, planId: planId, diskId: nil, event: NewEvent(kind: .note, detail: detail), at: owner.heartbeat)
        return current
    }

    public func renewLease(planId: Int64, owner: PlanOwner, at: Date) async throws -> Bool {
        try await writeAwaiting { db in try Self.renewLease(db, planId: planId, owner: owner, at: at) }
    }

    /// `renewLease(planId:owner:at:)` on the calling thread (for `batch` and tools).
    public func renewLease(planId: Int64, owner: PlanOwner, at: Date) throws -> Bool {
        try write { db in try Self.renewLease(db, planId: planId, owner: owner, at: at) }
    }

    private static func renewLease(_ db: Database, planId: Int64, owner: PlanOwner, at: Date) throws -> Bool {
        try db.executeCached(
            sql: "UPDATE plans SET owner_heartbeat = ? WHERE id = ? AND owner_pid = ? AND owner_host = ?",
            arguments: [at.timeIntervalSince1970, planId, owner.pid, owner.host])
        return db.changesCount == 1
    }

    public func releaseLease(planId: Int64, owner: PlanOwner) async throws {
        try await writeAwaiting { db in try Self.releaseLease(db, planId: planId, owner: owner) }
    }

    /// `releaseLease(planId:owner:)` on the calling thread (for `batch` and tools).
    public func releaseLease(planId: Int64, owner: PlanOwner) throws {
        try write { db in try Self.releaseLease(db, planId: planId, owner: owner) }
    }

    private static func releaseLease(_ db: Database, planId: Int64, owner: PlanOwner) throws {
        try db.executeCached(
            sql: "UPDATE plans SET owner_pid = NULL, owner_host = NULL, owner_heartbeat = NULL WHERE id = ? AND owner_pid = ? AND owner_host = ?",
            arguments: [planId, owner.pid, owner.host])
    }

    public func requestCancel(planId: Int64, at: Date) throws {
        try write { db in
            try db.executeCached(sql: "UPDATE plans SET cancel_requested = 1 WHERE id = ?", arguments: [planId])
            try Self.insertEvent(db, planId: planId, diskId: nil,
                                 event: NewEvent(kind: .note, detail: "cancel requested by pid \(getpid())"), at: at)
        }
    }

    public func isCancelRequested(planId: Int64) throws -> Bool {
        try read { db in
            try Bool.fetchOne(db, sql: "SELECT cancel_requested FROM plans WHERE id = ?", arguments: [planId]) ?? false
        }
    }
}
