import Foundation
import Logging
import LivecopyModel

/// How long a plan's lease lives without renewal, and how often its owner renews it.
public struct LeaseTiming: Sendable, Equatable {
    /// How long an owner may stay silent before its lease counts as abandoned (by another
    /// host, or after a reboot; see `Engine.isGone`).
    public var timeout: Double
    /// How often the owner renews its lease (and, on another task, looks for cancel and
    /// operator requests).
    public var heartbeatInterval: Double

    public init(timeout: Double = 10, heartbeatInterval: Double = 1) {
        self.timeout = timeout
        self.heartbeatInterval = heartbeatInterval
    }
}

/// Renews one plan's lease every `heartbeatInterval`, and does nothing else: it runs on a
/// task of its own, so no QMP command (however long QEMU takes to answer) and no other
/// store access of the engine can delay it.
///
/// A renewal that throws is noted and retried at the next beat; failures are bounded by
/// time, not by count: once the last successful renewal is so old that the lease would
/// expire before the next attempt, the heartbeat gives up (`.notRenewed`) so the engine
/// stops driving before another host could take the plan over. A renewal that finds the
/// lease held by someone else ends it at once (`.takenOver`).
struct LeaseHeartbeat {
    let store: any WorkflowStore
    let planId: Int64
    let owner: PlanOwner
    let timing: LeaseTiming
    let observer: any EngineObserver

    /// Renews until the task is cancelled (then nil) or the lease is gone (then why).
    /// `acquired` is when the lease was taken or last renewed.
    func run(acquired: Date) async -> LeaseLost.Cause? {
        var lastRenewal = acquired
        var failures = 0
        while true {
            do {
                try await Task.sleep(for: .seconds(timing.heartbeatInterval))
            } catch {
                return nil
            }
            let now = Date()
            do {
                let held = try await store.renewLease(planId: planId, owner: owner, at: now)
                if Task.isCancelled { return nil }
                guard held else { return .takenOver }
                logger.trace("lease renewed", metadata: ["plan": "\(planId)", "owner": "\(owner)"])
                if failures > 0 {
                    observer.note(nil, "plan \(planId): lease renewed again after \(failures) failed attempt(s)")
                }
                failures = 0
                lastRenewal = now
            } catch {
                if Task.isCancelled { return nil }
                failures += 1
                let silent = Date().timeIntervalSince(lastRenewal)
                if silent + timing.heartbeatInterval >= timing.timeout {
                    return .notRenewed(seconds: silent, lastError: describe(error))
                }
                logger.notice("lease renewal failed; retrying at the next beat", metadata: [
                    "plan": "\(planId)", "attempt": "\(failures)", "error": "\(describe(error))",
                ])
                observer.note(nil, "plan \(planId): cannot renew the lease (attempt \(failures), last renewed \(String(format: "%.1f", silent)) s ago): \(describe(error)); retrying in \(formatSeconds(timing.heartbeatInterval)) s")
            }
        }
    }

    private func formatSeconds(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}
