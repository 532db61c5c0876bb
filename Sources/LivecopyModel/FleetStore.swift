// Fleet mode: what agents on many hosts share through one store (PostgreSQL): who drives
// each host, which plans wait for which host, the limits, and the copy slots taken.

import Foundation

/// The store of a fleet: every `PlanStore` guarantee, plus what the agents of many hosts
/// coordinate through. `PostgresStore` is the one.
///
/// - Each host is driven by one agent at a time: the host's lease (`holdHostLease`), held
///   with a heartbeat and taken over once it expires.
/// - A plan belongs to one host (`PlanRecord.host`); that host's agent claims it
///   (`claimPlan`, `SELECT … FOR UPDATE SKIP LOCKED`) and holds the plan's own lease
///   (`acquireLease`, as a single-host livecopy does).
/// - Limits (`FleetLimit`) are kept in the store, set by `livecopy limits set`.
/// - A disk copies only while it holds a copy slot (`takeCopySlot`): taking one checks the
///   limits of its host and of its storage target under a lock of their rows, so the limits
///   hold at every moment, across every agent.
public protocol FleetStore: PlanStore {
    /// Takes host `host`'s agent lease for `agent`, or renews it if `agent` holds it. A lease
    /// whose heartbeat is older than `timeout` is taken over (logged at notice level).
    func holdHostLease(host: String, agent: AgentIdentity, timeout: TimeInterval, at: Date) async throws -> HostLease

    /// Gives host `host`'s lease up if `agent` holds it.
    func releaseHostLease(host: String, agent: AgentIdentity) async throws

    /// The hosts' leases (`livecopy agents`, status).
    func hostLeases() throws -> [HostLeaseRecord]

    /// In one transaction: the oldest plan of `host` in one of `states` whose lease is free
    /// or older than `leaseTimeout`, and not in `excluding`, locked with `FOR UPDATE SKIP
    /// LOCKED`, its lease given to `owner` (with an event). nil when there is none.
    func claimPlan(host: String, states: Set<PlanState>, excluding: Set<Int64>, owner: PlanOwner,
                   leaseTimeout: TimeInterval) async throws -> PlanRecord?

    /// Sets (or, with both values nil, removes) the limits of `scope`, with a timestamp.
    func setLimit(_ limit: FleetLimit, at: Date) throws

    /// Every limit set, by scope.
    func limits() throws -> [FleetLimit]

    /// Takes a copy slot for a disk if its host's and its storage target's limits allow one
    /// more copying disk, in one transaction that locks those limits' rows; records an event
    /// on the disk when it is taken. A disk that already holds its slot (an agent restarted
    /// while its job ran on) gets it again.
    func takeCopySlot(_ request: CopySlotRequest, at: Date) async throws -> CopySlotDecision

    /// Gives the disk's slot back (with an event), under the same locks as `takeCopySlot`.
    func releaseCopySlot(diskId: Int64, at: Date) async throws

    /// The slots held now.
    func copySlots() throws -> [CopySlot]

    /// What may let a waiting disk fit, as it happens: a slot given back, a limit changed.
    /// It tells every process listening, at once (PostgreSQL's LISTEN/NOTIFY), so a waiting
    /// disk asks for its slot again when one may be free rather than on a timer. After a
    /// lost connection it yields `.anything` (what happened meanwhile is not known). It ends
    /// when the listening task is cancelled.
    func copySlotChanges() -> AsyncStream<CopySlotChange>
}

/// What `copySlotChanges` tells.
public enum CopySlotChange: Sendable, Equatable {
    /// A slot of `host` was given back; it counted against `target`'s limit (nil: none).
    case released(host: String, target: String?)
    /// A limit changed, or the listener reconnected: any waiting disk may fit now.
    case anything

    /// The notification's text: `host=NAME target=PATH` (`target=-` for none), or `anything`.
    public var payload: String {
        switch self {
        case .released(let host, let target): return "host=\(host) target=\(target ?? "-")"
        case .anything: return "anything"
        }
    }

    /// Parses `payload`; anything it cannot read is `.anything`.
    public init(payload: String) {
        let fields = Dictionary(payload.split(separator: " ").compactMap { field -> (String, String)? in
            guard let equals = field.firstIndex(of: "=") else { return nil }
            return (String(field[..<equals]), String(field[field.index(after: equals)...]))
        }, uniquingKeysWith: { first, _ in first })
        guard let host = fields["host"], let target = fields["target"] else {
            self = .anything
            return
        }
        self = .released(host: host, target: target == "-" ? nil : target)
    }

    /// Whether a disk of `host` copying to `destination`, waiting, may fit after this.
    public func mayAdmit(host: String, destination: String) -> Bool {
        switch self {
        case .anything: return true
        case .released(let releasedHost, let target):
            return releasedHost == host || target.map { destination.hasPrefix($0 + "/") } == true
        }
    }
}

/// One agent process: the host it drives, and which process it is.
public struct AgentIdentity: Sendable, Equatable, CustomStringConvertible {
    /// The host name it drives (`livecopy agent --host`).
    public let host: String
    /// Where it runs: the machine's own name and the process id.
    public let machine: String
    public let pid: Int32
    /// Unique for each start of an agent.
    public let instance: String

    public init(host: String, machine: String, pid: Int32, instance: String) {
        self.host = host
        self.machine = machine
        self.pid = pid
        self.instance = instance
    }

    public var description: String { "agent \(instance) (pid \(pid) on \(machine))" }
}

/// What `holdHostLease` answers.
public enum HostLease: Sendable, Equatable {
    /// The caller holds the host's lease (taken, taken over or renewed).
    case held
    /// Another live agent holds it, heartbeat at that time.
    case heldBy(AgentIdentity, heartbeat: Date)
}

/// A host's lease as recorded.
public struct HostLeaseRecord: Sendable, Equatable {
    public let host: String
    public let agent: AgentIdentity
    public let heartbeat: Date

    public init(host: String, agent: AgentIdentity, heartbeat: Date) {
        self.host = host
        self.agent = agent
        self.heartbeat = heartbeat
    }
}

/// What a fleet limit applies to.
public enum LimitScope: Sendable, Hashable, CustomStringConvertible {
    /// One host: every disk of its plans.
    case host(String)
    /// A storage target: a directory, and every destination inside it (the limit of the
    /// deepest target holding a destination applies to it).
    case target(String)

    public var description: String {
        switch self {
        case .host(let name): return "host \(name)"
        case .target(let path): return "target \(path)"
        }
    }
}

/// The limits of one scope.
public struct FleetLimit: Sendable, Equatable {
    public let scope: LimitScope
    /// At most this many disks copying at once; nil: no limit.
    public var maxDisks: Int?
    /// Targets only: bytes per second for the target's copy jobs together, split evenly
    /// among its `maxDisks` slots (each job's speed is at most bandwidth / maxDisks); nil:
    /// no budget.
    public var bandwidth: Int64?
    public var updatedAt: Date?

    public init(scope: LimitScope, maxDisks: Int?, bandwidth: Int64?, updatedAt: Date? = nil) {
        self.scope = scope
        self.maxDisks = maxDisks
        self.bandwidth = bandwidth
        self.updatedAt = updatedAt
    }

    /// Each copy job's speed under this limit (bandwidth / maxDisks); nil: not capped.
    public var speedPerSlot: Int64? {
        guard let bandwidth, let maxDisks, maxDisks > 0 else { return nil }
        return max(1, bandwidth / Int64(maxDisks))
    }
}

/// A disk asking for a copy slot.
public struct CopySlotRequest: Sendable, Equatable {
    public let diskId: Int64
    public let planId: Int64
    public let host: String
    /// The disk's destination: the target limit is that of the deepest target holding it.
    public let destination: String

    public init(diskId: Int64, planId: Int64, host: String, destination: String) {
        self.diskId = diskId
        self.planId = planId
        self.host = host
        self.destination = destination
    }
}

/// What `takeCopySlot` answers.
public enum CopySlotDecision: Sendable, Equatable {
    /// The disk may copy; its job runs at most at `speedCap` bytes per second (nil: no cap).
    case granted(speedCap: Int64?)
    /// Not now: the reason, for `status` ("host a has 2 of 2 disks copying").
    case waiting(reason: String)
}

/// A copy slot held.
public struct CopySlot: Sendable, Equatable {
    public let diskId: Int64
    public let planId: Int64
    public let host: String
    /// The target whose limit it counts against (nil: none applies).
    public let target: String?
    public let speedCap: Int64?
    public let takenAt: Date

    public init(diskId: Int64, planId: Int64, host: String, target: String?, speedCap: Int64?, takenAt: Date) {
        self.diskId = diskId
        self.planId = planId
        self.host = host
        self.target = target
        self.speedCap = speedCap
        self.takenAt = takenAt
    }
}
