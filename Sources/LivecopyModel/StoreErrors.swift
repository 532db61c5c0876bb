// The errors every `WorkflowStore` throws for the engine to act on: a plan owned by
// another live process (`LeaseHeld`) and a lost compare-and-set (`StoreConflict`).
// Database and file failures are `StoreError`, in LivecopyStore/StoreError.swift.

import Foundation

/// The plan is driven by another live process.
public struct LeaseHeld: Error, CustomStringConvertible, Sendable {
    public let planId: Int64
    public let owner: PlanOwner
    public init(planId: Int64, owner: PlanOwner) {
        self.planId = planId
        self.owner = owner
    }
    public var description: String {
        let age = String(format: "%.1f", Date().timeIntervalSince(owner.heartbeat))
        return "plan \(planId) is owned by a live livecopy (\(owner), heartbeat \(age) s ago); use livecopy cancel \(planId) to stop it"
    }
}

/// A compare-and-set write found the row in another state than expected.
public struct StoreConflict: Error, CustomStringConvertible, Sendable {
    public let what: String
    public init(_ what: String) { self.what = what }
    public var description: String { "record changed concurrently: \(what)" }
}
