// Fleet: each host's agent lease, and an agent claiming its host's next plan.

import Foundation
import LivecopyModel
import PostgresNIO

extension PostgresStore {
    /// In one transaction: no lease → taken; held by `agent` (same instance) → renewed;
    /// held by another whose heartbeat is older than `timeout` → taken over (logged at
    /// notice; no event, there is no plan to record it on); otherwise `.heldBy`.
    public func holdHostLease(host: String, agent: AgentIdentity, timeout: TimeInterval, at: Date) async throws -> HostLease {
        let logger = self.logger
        return try await writeAwaiting { [self] statements in
            try sweepReceiptsIfDue(statements, now: at)
            let now = at.timeIntervalSince1970
            let inserted = try statements.row("""
                INSERT INTO host_leases (host, instance, machine, pid, heartbeat)
                VALUES (\(host), \(agent.instance), \(agent.machine), \(agent.pid), \(now))
                ON CONFLICT (host) DO NOTHING RETURNING host
                """)
            if inserted != nil { return .held }
            guard let row = try statements.row("SELECT * FROM host_leases WHERE host = \(host) FOR UPDATE") else {
                throw StoreError(.conflict("host \(host)'s lease vanished while it was taken"))
            }
            let current = try Self.hostLease(row)
            let expired = now - current.heartbeat.timeIntervalSince1970 > timeout
            guard current.agent.instance == agent.instance || expired else {
                return .heldBy(current.agent, heartbeat: current.heartbeat)
            }
            try statements.execute("""
                UPDATE host_leases SET instance = \(agent.instance), machine = \(agent.machine), pid = \(agent.pid), heartbeat = \(now)
                WHERE host = \(host)
                """)
            if current.agent.instance != agent.instance {
                logger.notice("host lease taken over", metadata: [
                    "host": "\(host)", "from": "\(current.agent)", "by": "\(agent)",
                    "heartbeat_age": "\(String(format: "%.1f", now - current.heartbeat.timeIntervalSince1970)) s"])
            }
            return .held
        }
    }

    public func releaseHostLease(host: String, agent: AgentIdentity) async throws {
        try await writeAwaiting { statements in
            try statements.execute("DELETE FROM host_leases WHERE host = \(host) AND instance = \(agent.instance)")
        }
    }

    public func hostLeases() throws -> [HostLeaseRecord] {
        try read { statements in try statements.query("SELECT * FROM host_leases ORDER BY host").map(Self.hostLease) }
    }

    /// The oldest plan of `host` in `states`, not in `excluding`, whose lease is free, older
    /// than `leaseTimeout` or `owner`'s own, locked `FOR UPDATE SKIP LOCKED` (two claimers
    /// never wait for nor get the same plan), its lease given to `owner` with the same event
    /// as `acquireLease`.
    public func claimPlan(host: String, states: Set<PlanState>, excluding: Set<Int64>, owner: PlanOwner,
                          leaseTimeout: TimeInterval) async throws -> PlanRecord? {
        guard !states.isEmpty else { return nil }
        let stateNames = states.map(\.rawValue).sorted()
        let excluded = excluding.sorted()
        let staleBefore = owner.heartbeat.timeIntervalSince1970 - leaseTimeout
        return try await writeAwaiting { statements in
            guard let row = try statements.row("""
                SELECT * FROM plans
                WHERE host = \(host) AND state = ANY(\(stateNames)) AND NOT (id = ANY(\(excluded)))
                  AND (owner_pid IS NULL OR owner_heartbeat < \(staleBefore)
                       OR (owner_host = \(owner.host) AND owner_pid = \(owner.pid)))
                ORDER BY id LIMIT 1
                FOR UPDATE SKIP LOCKED
                """) else { return nil }
            let plan = try Self.planRecord(row)
            let current = try Self.owner(row)
            let takenFrom = current.flatMap { $0.host == owner.host && $0.pid == owner.pid ? nil : $0 }
            try Self.takeLease(statements, planId: plan.id, owner: owner, from: takenFrom)
            return plan
        }
    }
}
