/// The lifecycle of one disk copy. Every change of state goes through
/// `DiskState.allowedNext` (the one transition table) and is persisted with an event.
public enum DiskState: String, CaseIterable, Codable, Sendable {
    /// Recorded, nothing done to the VM yet.
    case pending
    /// Intent to snapshot recorded; `blockdev-snapshot-sync` may or may not have happened.
    case snapshotting
    /// The VM writes into the destination; `block-stream` copies the source into it.
    case streaming
    /// Mirror strategy: the VM still runs on the source while `blockdev-mirror` copies it
    /// into the destination; the disk leaves this state at the pivot onto the destination.
    case mirroring
    /// The destination stands alone; the source is being deleted, renamed or kept per policy.
    case retiring
    /// Done: the VM runs on the destination, with no backing file. Final.
    case completed
    /// Stopped by an error; the VM keeps running on a consistent chain and the disk can be resumed.
    case failed
    /// An active `block-commit` of the destination into the source is under way.
    case rollingBack = "rolling_back"
    /// The VM is back on the source, holding every guest write; the destination is gone. Final.
    case rolledBack = "rolled_back"
    /// Reality contradicts the record in a way livecopy must not guess about; an operator decides.
    case needsAttention = "needs_attention"

    /// The one transition table: the states a disk may move to from this one. Every edge
    /// is taken by some test (`TransitionCoverageTests`); an edge no code takes is removed.
    /// A disk's whole state is this plus its open `DiskIntent` (see `DiskIntent.isAllowed(in:)`).
    public var allowedNext: Set<DiskState> {
        switch self {
        case .pending: return [.snapshotting, .mirroring, .failed, .rolledBack, .needsAttention]
        case .snapshotting: return [.streaming, .failed, .rollingBack, .needsAttention]
        case .streaming: return [.retiring, .failed, .rollingBack, .needsAttention]
        case .mirroring: return [.retiring, .failed, .rollingBack, .needsAttention]
        case .retiring: return [.completed, .failed, .needsAttention]
        case .completed: return []
        case .failed: return [.snapshotting, .streaming, .mirroring, .retiring, .rollingBack, .needsAttention]
        case .rollingBack: return [.rolledBack, .failed, .needsAttention]
        case .rolledBack: return []
        case .needsAttention: return [.snapshotting, .streaming, .mirroring, .rollingBack]
        }
    }

    /// Whether `next` is a legal move from this state.
    public func canMove(to next: DiskState) -> Bool { allowedNext.contains(next) }

    /// Final states never change again.
    public var isFinal: Bool { allowedNext.isEmpty }
}

/// The lifecycle of a plan, derived from its disks at the end of a run.
public enum PlanState: String, CaseIterable, Codable, Sendable {
    /// Recorded (for example by `submit --detach`); no engine has started it.
    case pending
    /// An engine drives it now.
    case running
    /// Every disk completed. Final.
    case completed
    /// At least one disk failed; the plan can be resumed with `run --plan` or `recover`.
    case failed
    /// Every disk that was not completed was rolled back. Final.
    case rolledBack = "rolled_back"
    /// At least one disk needs an operator's decision.
    case needsAttention = "needs_attention"
    /// Refused before anything was touched (preflight failed). Final.
    case refused

    /// The plan transition table. A plan changes state only when an engine takes it
    /// (`running`) and when that run ends (its outcome, from its disks), or when a
    /// detached plan is refused at its first run.
    public var allowedNext: Set<PlanState> {
        switch self {
        case .pending: return [.running, .refused]
        case .running: return [.completed, .failed, .rolledBack, .needsAttention]
        case .completed: return []
        case .failed: return [.running]
        case .rolledBack: return []
        case .needsAttention: return [.running]
        case .refused: return []
        }
    }

    public func canMove(to next: PlanState) -> Bool { allowedNext.contains(next) }

    public var isFinal: Bool { allowedNext.isEmpty }

    /// The state a plan ends in, given its disks' states after a run.
    public static func outcome(of disks: [DiskState]) -> PlanState {
        if disks.contains(.needsAttention) { return .needsAttention }
        if disks.contains(where: { $0 == .failed || $0 == .pending || $0 == .snapshotting
            || $0 == .streaming || $0 == .mirroring || $0 == .retiring || $0 == .rollingBack }) { return .failed }
        if !disks.isEmpty && disks.allSatisfy({ $0 == .completed }) { return .completed }
        return .rolledBack
    }
}

/// A refused transition: a programming error or a record changed under our feet.
public struct IllegalTransition: Error, CustomStringConvertible, Sendable {
    public let subject: String
    public let from: String
    public let to: String
    public init(subject: String, from: String, to: String) {
        self.subject = subject
        self.from = from
        self.to = to
    }
    public var description: String { "illegal transition of \(subject): \(from) → \(to)" }
}
