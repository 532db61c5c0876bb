/// A copy job's status, in the words of QEMU's job model (`JobStatus` in qapi/job.json);
/// every backend reports its jobs in these words (libvirt's block jobs know fewer of
/// them: running, ready, concluded). A status livecopy does not know (a newer QEMU's) is
/// `.unrecognized`: the watcher keeps watching such a job and acts on nothing until it
/// reaches a status it knows.
public enum JobStatus: Sendable, Hashable, CustomStringConvertible {
    /// Erroneous, default state; should never be visible.
    case undefined
    /// Created, not started yet.
    case created
    /// Making progress.
    case running
    /// Paused: by `block-job-pause`, or by an I/O error under `on-error: stop`/`enospc`.
    case paused
    /// Finished its work and waits for `block-job-complete` (commit and mirror jobs).
    case ready
    /// Paused while ready.
    case standby
    /// Waiting for the other jobs of its transaction.
    case waiting
    /// Waiting for `job-finalize` (started with `auto-finalize: false`).
    case pending
    /// Being cancelled or failing.
    case aborting
    /// Done; waits for `job-dismiss` (started with `auto-dismiss: false`). Its `error` tells how it ended.
    case concluded
    /// Dismissed; about to disappear.
    case null
    /// A status QEMU 7.2 does not have.
    case unrecognized(String)

    public init(_ text: String) {
        switch text {
        case "undefined": self = .undefined
        case "created": self = .created
        case "running": self = .running
        case "paused": self = .paused
        case "ready": self = .ready
        case "standby": self = .standby
        case "waiting": self = .waiting
        case "pending": self = .pending
        case "aborting": self = .aborting
        case "concluded": self = .concluded
        case "null": self = .null
        default: self = .unrecognized(text)
        }
    }

    /// The status as QMP spells it.
    public var description: String {
        switch self {
        case .undefined: return "undefined"
        case .created: return "created"
        case .running: return "running"
        case .paused: return "paused"
        case .ready: return "ready"
        case .standby: return "standby"
        case .waiting: return "waiting"
        case .pending: return "pending"
        case .aborting: return "aborting"
        case .concluded: return "concluded"
        case .null: return "null"
        case .unrecognized(let text): return text
        }
    }

    /// The status in words for the operator, never to be read as one of livecopy's own
    /// disk states (`pending` is QEMU's "waiting to be finalized").
    public var explanation: String {
        switch self {
        case .undefined: return "in an undefined state"
        case .created: return "created, not started yet"
        case .running: return "running"
        case .paused: return "paused"
        case .ready: return "ready, waiting to be completed"
        case .standby: return "ready but paused"
        case .waiting: return "waiting for the other jobs of its transaction"
        case .pending: return "done copying, waiting to be finalized"
        case .aborting: return "aborting"
        case .concluded: return "concluded, waiting to be dismissed"
        case .null: return "dismissed"
        case .unrecognized(let text): return "in a state livecopy does not know (\(text))"
        }
    }

    /// Whether `block-job-set-speed`, `block-job-pause` and `block-job-resume` apply to a
    /// job in this status (operator controls).
    public var acceptsControls: Bool {
        switch self {
        case .created, .running, .paused, .ready, .standby: return true
        case .undefined, .waiting, .pending, .aborting, .concluded, .null, .unrecognized: return false
        }
    }

    /// Whether the job is over (concluded, or dismissed meanwhile).
    public var isOver: Bool {
        switch self {
        case .concluded, .null: return true
        case .undefined, .created, .running, .paused, .ready, .standby, .waiting, .pending, .aborting, .unrecognized: return false
        }
    }
}

extension JobStatus: ExpressibleByStringLiteral {
    public init(stringLiteral text: String) { self.init(text) }
}
