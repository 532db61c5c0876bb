// The one error every `WorkflowStore` throws: what went wrong (`StoreError.Kind`, for the
// engine and the commands to act on) and one line for the operator (`description`).

import Foundation

/// A store failure: its kind, and one line for the operator.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, and what each kind carries.
    public enum Kind: Sendable {
        /// The database or its file failed, or holds what this livecopy cannot read (the
        /// one-line message says which).
        case database(String)
        /// A compare-and-set write found the row in another state than expected (what changed).
        case conflict(String)
        /// The plan is driven by another live process.
        case leaseHeld(planId: Int64, owner: PlanOwner)
        /// A plan not yet final already claims what a new plan names (refused when recording it).
        case claimed(ClaimConflict)
    }

    public let kind: Kind

    public init(_ kind: Kind) { self.kind = kind }

    /// A `.database` error with `message`.
    public init(_ message: String) { self.kind = .database(message) }

    public var description: String {
        switch kind {
        case .database(let message):
            return message
        case .conflict(let what):
            return "record changed concurrently: \(what)"
        case .leaseHeld(let planId, let owner):
            let age = String(format: "%.1f", Date().timeIntervalSince(owner.heartbeat))
            return "plan \(planId) is owned by a live livecopy (\(owner), heartbeat \(age) s ago); use livecopy cancel \(planId) to stop it"
        case .claimed(let conflict):
            return conflict.description
        }
    }
}
