import Foundation

/// The operator's settings for a plan's jobs (`livecopy throttle`, `pause`, `resume`),
/// in force for its running jobs and for every job it starts later.
public struct PlanControls: Sendable, Equatable {
    /// Bytes per second replacing the policy's `speed` (0 = unlimited); nil: the policy's.
    public var speedOverride: Int64?
    /// The plan's jobs are kept paused.
    public var paused: Bool

    public init(speedOverride: Int64? = nil, paused: Bool = false) {
        self.speedOverride = speedOverride
        self.paused = paused
    }
}

/// What an operator asked of a plan's jobs.
public enum OperatorAction: Sendable, Equatable, CustomStringConvertible {
    case throttle(speed: Int64)
    case pause
    case resume

    /// The `action` column's value.
    public var name: String {
        switch self {
        case .throttle: return "throttle"
        case .pause: return "pause"
        case .resume: return "resume"
        }
    }

    public var description: String {
        switch self {
        case .throttle(let speed): return "throttle to \(OperatorAction.speedText(speed))"
        case .pause: return "pause"
        case .resume: return "resume"
        }
    }

    /// `20.0 MiB/s`, or `unlimited` for 0.
    public static func speedText(_ speed: Int64) -> String {
        speed == 0 ? "unlimited" : "\(ByteSize.format(speed))/s"
    }
}

/// One recorded operator command and, once done with, its outcome.
public struct OperatorRequest: Sendable, Equatable {
    public let id: Int64
    public let planId: Int64
    public let action: OperatorAction
    public let requestedAt: Date
    public let requestedBy: String
    /// When the owner applied it (or the command found no owner); nil while open.
    public var finishedAt: Date?
    public var ok: Bool?
    public var outcome: String?

    public init(id: Int64, planId: Int64, action: OperatorAction, requestedAt: Date, requestedBy: String,
                finishedAt: Date?, ok: Bool?, outcome: String?) {
        self.id = id
        self.planId = planId
        self.action = action
        self.requestedAt = requestedAt
        self.requestedBy = requestedBy
        self.finishedAt = finishedAt
        self.ok = ok
        self.outcome = outcome
    }
}
