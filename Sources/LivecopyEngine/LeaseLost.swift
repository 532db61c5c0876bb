// The error a run ends with when this process no longer holds the plan's lease.

import Foundation

/// This process no longer holds its lease on a plan, and stopped driving the plan: it was
/// taken over (this process stalled past the lease timeout while another host's livecopy
/// took the plan), or it could not be renewed in time (the database kept failing).
public struct LeaseLost: Error, CustomStringConvertible {
    /// Why the lease is gone.
    public enum Cause: Sendable, Equatable {
        /// Another process holds the lease now.
        case takenOver
        /// Renewals kept failing; the last success was `seconds` ago, past what the lease
        /// timeout allows before another host may take over.
        case notRenewed(seconds: Double, lastError: String)
    }

    public let planId: Int64
    public let cause: Cause

    public var description: String {
        switch cause {
        case .takenOver:
            return "plan \(planId): another livecopy took the plan over; this one stopped driving it"
        case .notRenewed(let seconds, let lastError):
            return "plan \(planId): the lease could not be renewed for \(String(format: "%.1f", seconds)) s (\(lastError)); this livecopy stopped driving the plan so that another may take it over"
        }
    }
}
