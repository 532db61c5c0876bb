// `livecopy agent --host NAME`: serve's daemon driving one host of a fleet, through the
// fleet store (PostgreSQL): the host's lease, and the plans it claims for that host.

import Foundation
import LivecopyEngine
import LivecopyModel

/// What makes `PlanService` a fleet agent: the host it drives, its identity, the fleet
/// store, and the copy slots the store shares among every agent.
struct FleetRole: Sendable {
    let store: any FleetStore
    let agent: AgentIdentity
    /// How long the host's lease, and each plan's, outlives a silent agent.
    let leaseTimeout: TimeInterval
    let admission: FleetAdmission

    init(store: any FleetStore, host: String, leaseTimeout: TimeInterval) {
        self.store = store
        self.agent = AgentIdentity(host: host, machine: Engine.thisHost, pid: getpid(), instance: UUID().uuidString.lowercased())
        self.leaseTimeout = leaseTimeout
        self.admission = FleetAdmission(store: store, host: host)
    }

    var host: String { agent.host }

    /// The owner this agent's engines take plan leases as: its pid, the fleet's host name.
    var planOwner: PlanOwner { PlanOwner(pid: agent.pid, host: agent.host, heartbeat: Date()) }

    /// Takes or renews the host's lease; nil when the store cannot be reached (said).
    func holdHostLease(say: (String) -> Void) async -> HostLease? {
        do {
            return try await store.holdHostLease(host: host, agent: agent, timeout: leaseTimeout, at: Date())
        } catch {
            say("cannot renew host \(host)'s lease: \(describe(error))")
            return nil
        }
    }

    /// Claims every plan of the host in `states` that no live owner drives, but `excluding`,
    /// one at a time (each claim is one transaction: `FOR UPDATE SKIP LOCKED`).
    func claimPlans(in states: Set<PlanState>, excluding: Set<Int64>, say: (String) -> Void) async -> [PlanRecord] {
        var claimed: [PlanRecord] = []
        var skip = excluding
        while true {
            do {
                guard let plan = try await store.claimPlan(host: host, states: states, excluding: skip, owner: planOwner,
                                                           leaseTimeout: leaseTimeout) else { return claimed }
                claimed.append(plan)
                skip.insert(plan.id)
            } catch {
                say("cannot claim host \(host)'s plans: \(describe(error))")
                return claimed
            }
        }
    }
}
