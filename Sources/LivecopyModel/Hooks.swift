// The policy's `hooks:`: commands that tell a VM's manager where a disk went
// (docs/hooks.md).

/// The moments a hook can be attached to. The raw values are the policy keys and what
/// the database's `pending_hook` column and the events name.
public enum HookEvent: String, Codable, CaseIterable, Sendable {
    /// The disk now runs on its destination: right after the snapshot (stream strategy;
    /// the destination is backed by the source until the stream ends), or after the pivot
    /// (mirror strategy). A manager that restarts the VM from its old record from now on
    /// boots an image without the newest writes.
    case onSwitch = "on_switch"
    /// The disk completed: the VM runs on the destination standing alone, the source retired.
    case onComplete = "on_complete"
    /// The disk rolled back: the VM runs on the source again, with every write.
    case onRollback = "on_rollback"
    /// The disk needs an operator's decision (`needs_attention`).
    case onNeedsAttention = "on_needs_attention"

    /// The hook, if any, that a disk entering `state` calls for. Only a stream disk enters
    /// `streaming`, and it does so once the VM writes into the destination (after the
    /// snapshot, or resumed on it): `on_switch`. The mirror strategy's switch is not a
    /// state change (it is the pivot), so its `on_switch` is set where the pivot is recorded.
    public static func entering(_ state: DiskState) -> HookEvent? {
        switch state {
        case .streaming: return .onSwitch
        case .completed: return .onComplete
        case .rolledBack: return .onRollback
        case .needsAttention: return .onNeedsAttention
        case .pending, .snapshotting, .mirroring, .retiring, .failed, .rollingBack: return nil
        }
    }
}

/// One hook: the program and its arguments (never a shell string), and how long it may run.
public struct HookCommand: Codable, Sendable, Equatable {
    /// The argv: `argv[0]` is the program, an absolute path or a name looked up in `PATH`.
    public var argv: [String]
    /// Seconds the hook may run before it is killed (its process group: SIGTERM, then SIGKILL).
    public var timeout: Double

    public init(argv: [String], timeout: Double) {
        self.argv = argv
        self.timeout = timeout
    }
}

/// What the policy's `hooks:` says.
public struct HookSettings: Codable, Sendable, Equatable {
    /// What a failing `on_switch` does to the disk.
    public enum OnSwitchFailure: String, Codable, CaseIterable, Sendable {
        /// The disk rolls back onto its source, which the VM manager still names: the next
        /// restart boots an image with every write.
        case rollback
        /// Only recorded (the events and the disk's error); the copy goes on.
        case record
    }

    /// The commands, by the moment they run at.
    public var commands: [HookEvent: HookCommand]
    /// What a failing `on_switch` (non-zero exit, timeout, refused program) does.
    public var onSwitchFailure: OnSwitchFailure
    /// The timeout of a hook that names none of its own, in seconds.
    public var timeout: Double

    public static let none = HookSettings(commands: [:], onSwitchFailure: .rollback, timeout: 60)

    public init(commands: [HookEvent: HookCommand], onSwitchFailure: OnSwitchFailure, timeout: Double) {
        self.commands = commands
        self.onSwitchFailure = onSwitchFailure
        self.timeout = timeout
    }

    /// The command run at `event`, if the policy names one.
    public func command(for event: HookEvent) -> HookCommand? { commands[event] }
}
