// Plan ownership (the lease: acquire, renew, release) and cancel requests.

import Foundation
import LivecopyModel

extension PostgresStore {
    public func owner(ofPlan planId: Int64) throws -> PlanOwner? {
        try read { statements in
            try statements.row("SELECT owner_pid, owner_host, owner_heartbeat FROM plans WHERE id = \(planId)").flatMap(Self.owner)
        }
    }

    /// As SQLite's, with one difference for the fleet: a holder on another host than
    /// `owner`'s cannot be asked whether its process lives, so it counts as gone only when
    /// its heartbeat is older than `leaseTimeout`; one on the same host is judged by `isGone`.
    public func acquireLease(planId: Int64, owner: PlanOwner, isGone: @escaping @Sendable (PlanOwner) -> Bool) async throws -> PlanOwner? {
        let leaseTimeout = self.leaseTimeout
        return try await writeAwaiting { statements in
            guard let row = try statements.row(
                "SELECT owner_pid, owner_host, owner_heartbeat FROM plans WHERE id = \(planId) FOR UPDATE")
            else { throw StoreError("no plan with id \(planId)") }
            let current = try Self.owner(row)
            if let current, current.pid != owner.pid || current.host != owner.host {
                let gone = current.host == owner.host
                    ? isGone(current)
                    : owner.heartbeat.timeIntervalSince(current.heartbeat) > leaseTimeout
                if !gone { throw StoreError(.leaseHeld(planId: planId, owner: current)) }
            }
            try Self.takeLease(statements, planId: planId, owner: owner, from: current)
            return current
        }
    }

    /// Gives the plan's lease to `owner` and records so (the row is locked by the caller).
    static func takeLease(_ statements: Statements, planId: Int64, owner: PlanOwner, from current: PlanOwner?) throws {
        try statements.execute("""
            UPDATE plans SET owner_pid = \(owner.pid), owner_host = \(owner.host),
                owner_heartbeat = \(owner.heartbeat.timeIntervalSince1970)
            WHERE id = \(planId)
            """)
        let detail = current.map { "lease taken over from \($0) by \(owner)" } ?? "lease taken by \(owner)"
        try insertEvent(statements, planId: planId, diskId: nil, event: NewEvent(kind: .note, detail: detail), at: owner.heartbeat)
    }

    public func renewLease(planId: Int64, owner: PlanOwner, at: Date) async throws -> Bool {
        try await writeAwaiting { statements in
            try statements.execute("""
                UPDATE plans SET owner_heartbeat = \(at.timeIntervalSince1970)
                WHERE id = \(planId) AND owner_pid = \(owner.pid) AND owner_host = \(owner.host)
                """) == 1
        }
    }

    public func releaseLease(planId: Int64, owner: PlanOwner) async throws {
        try await writeAwaiting { statements in
            try statements.execute("""
                UPDATE plans SET owner_pid = NULL, owner_host = NULL, owner_heartbeat = NULL
                WHERE id = \(planId) AND owner_pid = \(owner.pid) AND owner_host = \(owner.host)
                """)
        }
    }

    public func requestCancel(planId: Int64, at: Date) throws {
        try transaction { statements in
            try statements.execute("UPDATE plans SET cancel_requested = TRUE WHERE id = \(planId)")
            try Self.insertEvent(statements, planId: planId, diskId: nil,
                                 event: NewEvent(kind: .note, detail: "cancel requested by pid \(getpid())"), at: at)
        }
    }

    public func isCancelRequested(planId: Int64) throws -> Bool {
        try read { statements in
            try statements.row("SELECT cancel_requested FROM plans WHERE id = \(planId)")?.decode(Bool.self) ?? false
        }
    }
}
