import Foundation

/// A plan as persisted.
public struct PlanRecord: Sendable, Equatable {
    public let id: Int64
    public var name: String?
    /// The `policy:` value as written in the plan (nil: `default`).
    public var policyReference: String?
    /// The policy resolved at submission, stored whole so a later run uses the same values.
    public var policy: Policy
    public var state: PlanState
    public var createdAt: Date
    public var finishedAt: Date?
    /// Why the plan was refused or did not complete, in one line.
    public var error: String?
    /// Fleet store: the host whose agent drives the plan (nil: a single-host store).
    public var host: String?

    public init(
        id: Int64, name: String?, policyReference: String?, policy: Policy, state: PlanState,
        createdAt: Date, finishedAt: Date?, error: String?, host: String? = nil
    ) {
        self.host = host
        self.id = id
        self.name = name
        self.policyReference = policyReference
        self.policy = policy
        self.state = state
        self.createdAt = createdAt
        self.finishedAt = finishedAt
        self.error = error
    }
}

/// One disk of a plan as persisted: what livecopy knows and what it is about to do.
public struct DiskRecord: Sendable, Equatable {
    public let id: Int64
    public let planId: Int64
    public var vmName: String
    /// Where the VM is reached, as `VMAddress.stored` says it: the QMP socket's path, or
    /// `libvirt:<uri>#<domain>`.
    public var vmAddress: String
    /// The device as the plan names it.
    public var device: String
    public var destination: String
    /// The VM's active image when the copy started, discovered from `query-block`.
    public var source: String?
    /// The source image's format (`qcow2`, `raw`, …).
    public var sourceFormat: String?
    /// What QMP commands address: the `query-block` device name, or the top node name.
    public var qmpDevice: String?
    public var state: DiskState
    public var bytesDone: Int64
    public var bytesTotal: Int64
    public var error: String?
    /// A side effect that was started and whose outcome is not recorded yet (for
    /// example the snapshot). After a crash it says what to reconcile.
    public var intent: DiskIntent?
    /// True once livecopy asked QEMU to create the destination: only then may livecopy delete it.
    public var destinationCreated: Bool
    public var updatedAt: Date
    /// How the disk is copied (the plan's policy when it was recorded).
    public var strategy: CopyStrategy
    /// The destination's format: qcow2 for the stream strategy; qcow2 or raw for a mirror.
    public var destinationFormat: DestinationFormat
    /// Mirror strategy: the device pivoted onto the destination (recorded in the pivot's
    /// outcome). From then on the destination is the truth, whatever state follows.
    public var pivoted: Bool
    /// A hook whose run was announced (in the same write as the step that called for it)
    /// and whose outcome is not recorded yet; `recover` runs it again after a crash.
    public var pendingHook: HookEvent?
    /// The bytes allocated in the source chain when preflight looked: what the copy job
    /// really copies (nil: not known: recorded by an earlier release, or recorded detached
    /// and its source not discovered yet).
    public var allocatedBytes: Int64?

    public init(
        id: Int64, planId: Int64, vmName: String, vmAddress: String, device: String, destination: String,
        source: String?, sourceFormat: String?, qmpDevice: String?, state: DiskState, bytesDone: Int64,
        bytesTotal: Int64, error: String?, intent: DiskIntent?, destinationCreated: Bool, updatedAt: Date,
        strategy: CopyStrategy = .stream, destinationFormat: DestinationFormat = .qcow2, pivoted: Bool = false,
        pendingHook: HookEvent? = nil, allocatedBytes: Int64? = nil
    ) {
        self.pendingHook = pendingHook
        self.allocatedBytes = allocatedBytes
        self.strategy = strategy
        self.destinationFormat = destinationFormat
        self.pivoted = pivoted
        self.id = id
        self.planId = planId
        self.vmName = vmName
        self.vmAddress = vmAddress
        self.device = device
        self.destination = destination
        self.source = source
        self.sourceFormat = sourceFormat
        self.qmpDevice = qmpDevice
        self.state = state
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.error = error
        self.intent = intent
        self.destinationCreated = destinationCreated
        self.updatedAt = updatedAt
    }

    /// Nothing is left to do for the disk: it is final and no hook of it waits to run.
    /// A run drives every disk that is not settled (a final one only for its hook).
    public var isSettled: Bool { state.isFinal && pendingHook == nil }

    /// The deterministic QMP job id of this disk's stream job.
    public var streamJobId: String { "livecopy-stream-\(id)" }
    /// The deterministic QMP job id of this disk's mirror job (mirror strategy).
    public var mirrorJobId: String { "livecopy-mirror-\(id)" }
    /// The job that copies this disk forward: the stream or the mirror.
    public var copyJobId: String {
        switch strategy {
        case .stream: return streamJobId
        case .mirror: return mirrorJobId
        }
    }
    /// The deterministic QMP job id of this disk's rollback commit job.
    public var commitJobId: String { "livecopy-commit-\(id)" }
    /// The node name given to the destination overlay at snapshot time.
    public var destinationNodeName: String { "livecopy-dst-\(id)" }
    /// The dirty bitmap on the destination that records the guest's writes from the
    /// switch (stream) or the mirror's READY on, for the verification before retirement.
    public var dirtyBitmapName: String { "livecopy-disk-\(id)" }

    /// The image the VM must be started from right now if it is restarted, given what is
    /// recorded; nil when the record alone cannot tell (QEMU or the files must be asked).
    public var bootImage: String? {
        switch strategy {
        case .stream: return bootImageWhenStreaming
        case .mirror: return bootImageWhenMirroring
        }
    }

    /// The stream strategy: the VM is on the destination from the snapshot on.
    private var bootImageWhenStreaming: String? {
        switch state {
        case .pending, .rolledBack: return source
        case .snapshotting:
            // With a snapshot under way the answer is QEMU's (or the destination file's) to give.
            guard intent == nil else { return nil }
            return destinationCreated ? destination : source
        case .streaming, .mirroring, .retiring, .completed, .failed: return destinationCreated ? destination : source
        case .rollingBack:
            // Once the rollback job concluded on the source, deleting the destination is the intent;
            // while a pivot may be under way nobody can tell without looking.
            switch intent {
            case .deleteDestination?: return source
            case .pivotBack?: return nil
            case nil, .createDestination?, .snapshot?, .stream?, .finalize?, .mirror?, .pivot?, .verify?, .renameSource?,
                 .deleteSource?, .quarantineSource?, .cancelCopy?, .commitBack?, .mirrorBack?:
                return destinationCreated ? destination : source
            }
        case .needsAttention: return nil
        }
    }

    /// The mirror strategy: the source is the truth until the pivot, the destination after.
    private var bootImageWhenMirroring: String? {
        switch state {
        case .pending, .rolledBack: return source
        case .needsAttention: return nil
        case .snapshotting, .streaming, .mirroring, .retiring, .completed, .failed, .rollingBack:
            switch intent {
            // A pivot (or a pivot back) asked for and not seen through: look before answering.
            case .pivot?, .pivotBack?: return nil
            case .deleteDestination?: return source
            case nil, .createDestination?, .snapshot?, .stream?, .finalize?, .mirror?, .verify?, .renameSource?, .deleteSource?,
                 .quarantineSource?, .cancelCopy?, .commitBack?, .mirrorBack?:
                return pivoted ? destination : source
            }
        }
    }
}

/// What an event row records.
public enum EventKind: String, Codable, CaseIterable, Sendable {
    /// A state change (from → to).
    case transition
    /// A side effect about to be attempted.
    case intent
    /// The result of a side effect.
    case outcome
    /// Something worth keeping that changes no state (a policy applied, a warning).
    case note
}

/// One row of the events table: the plan's timeline.
public struct EventRecord: Sendable, Equatable {
    public let id: Int64
    public let planId: Int64
    public let diskId: Int64?
    public let at: Date
    public let kind: EventKind
    public let from: String?
    public let to: String?
    public let detail: String

    public init(id: Int64, planId: Int64, diskId: Int64?, at: Date, kind: EventKind, from: String?, to: String?, detail: String) {
        self.id = id
        self.planId = planId
        self.diskId = diskId
        self.at = at
        self.kind = kind
        self.from = from
        self.to = to
        self.detail = detail
    }
}

/// An event to append together with a write.
public struct NewEvent: Sendable, Equatable {
    public let kind: EventKind
    public let from: String?
    public let to: String?
    public let detail: String

    public init(kind: EventKind, from: String? = nil, to: String? = nil, detail: String) {
        self.kind = kind
        self.from = from
        self.to = to
        self.detail = detail
    }
}

/// A plan about to be recorded.
public struct NewPlan: Sendable {
    public struct Disk: Sendable {
        public var vmName: String
        /// `VMAddress.stored`.
        public var vmAddress: String
        public var device: String
        public var destination: String
        public var source: String?
        public var sourceFormat: String?
        public var qmpDevice: String?
        public var strategy: CopyStrategy
        public var destinationFormat: DestinationFormat
        /// The bytes allocated in the source chain, as preflight found them.
        public var allocatedBytes: Int64?

        public init(vmName: String, vmAddress: String, device: String, destination: String,
                    source: String? = nil, sourceFormat: String? = nil, qmpDevice: String? = nil,
                    strategy: CopyStrategy = .stream, destinationFormat: DestinationFormat = .qcow2,
                    allocatedBytes: Int64? = nil) {
            self.allocatedBytes = allocatedBytes
            self.strategy = strategy
            self.destinationFormat = destinationFormat
            self.vmName = vmName
            self.vmAddress = vmAddress
            self.device = device
            self.destination = destination
            self.source = source
            self.sourceFormat = sourceFormat
            self.qmpDevice = qmpDevice
        }

        /// `disk` of `vm` as the plan names it, copied per `strategy`, its source not known
        /// yet (a plan recorded detached, or refused).
        public init(vm: Plan.VM, disk: Plan.Disk, strategy: CopyStrategy) {
            self.init(vmName: vm.name, vmAddress: vm.address.stored, device: disk.device, destination: disk.destination,
                      strategy: strategy, destinationFormat: disk.resolvedFormat)
        }
    }

    public var name: String?
    public var policyReference: String?
    public var policy: Policy
    public var state: PlanState
    public var error: String?
    public var disks: [Disk]
    /// Fleet store: the host whose agent drives the plan (nil: a single-host store).
    public var host: String?

    public init(name: String?, policyReference: String?, policy: Policy, state: PlanState, error: String? = nil, disks: [Disk],
                host: String? = nil) {
        self.host = host
        self.name = name
        self.policyReference = policyReference
        self.policy = policy
        self.state = state
        self.error = error
        self.disks = disks
    }
}
