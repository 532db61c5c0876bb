import Foundation

/// A plan not yet final already claims a destination or a VM disk that a new plan names.
/// The store checks claims and records a plan in one transaction, so of two plans
/// submitted at once that claim the same thing exactly one is recorded.
/// The store throws it as a `.claimed` `StoreError`; preflight words its refusal with it.
public struct ClaimConflict: CustomStringConvertible, Sendable, Equatable {
    /// What the other plan claims.
    public enum Claim: Sendable, Equatable {
        /// The destination file, by path.
        case destination(String)
        /// The VM disk (its VM address and device).
        case vmDisk
    }

    public let vmName: String
    public let device: String
    public let claim: Claim
    public let otherPlanId: Int64
    public let otherPlanState: PlanState

    public init(vmName: String, device: String, claim: Claim, otherPlanId: Int64, otherPlanState: PlanState) {
        self.vmName = vmName
        self.device = device
        self.claim = claim
        self.otherPlanId = otherPlanId
        self.otherPlanState = otherPlanState
    }

    public var description: String {
        switch claim {
        case .destination(let path):
            return "VM '\(vmName)' disk '\(device)': destination \(path) is claimed by plan \(otherPlanId) (\(otherPlanState.rawValue))"
        case .vmDisk:
            return "VM '\(vmName)' disk '\(device)' is already being copied by plan \(otherPlanId) (\(otherPlanState.rawValue))"
        }
    }

    /// Plan states whose disks (those not final) hold their claims: every state not final.
    public static let claimingPlanStates: [PlanState] = PlanState.allCases.filter { !$0.isFinal }
}
