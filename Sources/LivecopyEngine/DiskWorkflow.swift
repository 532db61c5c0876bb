import CSystemExtras
import Foundation
import LivecopyModel
import LivecopyBackend

/// A disk whose VM shows something livecopy must not guess about.
struct NeedsAttention: Error, CustomStringConvertible {
    let description: String
}

/// Drives one disk through the recipe: snapshot, stream, verify, retire; or back out
/// through rollback. Each step first reconciles with what QEMU and the files say, so
/// the same code resumes a disk after any interruption.
final class DiskWorkflow: Sendable {
    let ledger: DiskLedger
    let session: any VMSession
    let policy: Policy
    let inspector: any ImageInspector
    let creator: any DestinationCreator
    /// The operator's settings for the plan (`livecopy throttle`, `pause`), read when a job starts.
    let controls: @Sendable () -> PlanControls
    /// Where a mirror disk's pivot meets the VM's other mirror disks (nil: it pivots alone).
    let pivots: MirrorPivots?
    /// `serve`'s host bandwidth budget, which sets the copy job's speed (nil: the plan's own).
    let budget: BandwidthBudget?

    init(ledger: DiskLedger, session: any VMSession, policy: Policy, inspector: any ImageInspector,
         creator: any DestinationCreator, controls: @escaping @Sendable () -> PlanControls = { PlanControls() },
         pivots: MirrorPivots? = nil, budget: BandwidthBudget? = nil) {
        self.pivots = pivots
        self.budget = budget
        self.ledger = ledger
        self.session = session
        self.policy = policy
        self.inspector = inspector
        self.creator = creator
        self.controls = controls
    }

    var disk: DiskRecord { ledger.disk }

    /// The disk's state as last persisted.
    var state: DiskState { ledger.disk.state }

    /// Runs the disk until it rests: completed, failed, rolled back or needing attention.
    /// A disk that starts `failed` or `needs_attention` is reconciled and resumed once,
    /// unless its VM's snapshot phase (`Engine.snapshotPhase`) settled it in this run
    /// (`settledBySnapshot`): a disk that phase just failed is not resumed again at once.
    func run(settledBySnapshot: Bool = false) async throws {
        // A disk the VM's snapshot just failed is not resumed again in the same run.
        if !settledBySnapshot && (disk.state == .failed || disk.state == .needsAttention) {
            do {
                try await resumeFailed()
            } catch let error as NeedsAttention {
                if disk.state == .needsAttention {
                    try await ledger.note("still needs attention: \(error.description)")
                } else {
                    try await ledger.transition(to: .needsAttention, error.description) { $0.error = error.description }
                }
            }
        }
        while true {
            if Task.isCancelled { return }
            do {
                // A hook the last step called for (the engine ran one left by a crash
                // already) tells the VM's manager where the disk stands, before it goes on.
                try await runPendingHook()
                switch disk.state {
                case .pending where disk.strategy == .mirror: try await beginMirror()
                case .pending, .snapshotting:
                    // Not switched by the VM's snapshot (or resumed since): a snapshot of its own.
                    try await VMSnapshot(vmName: disk.vmName, members: [self]).run()
                case .streaming: try await stream()
                case .mirroring: try await mirror()
                case .retiring: try await retire()
                case .rollingBack: try await rollback()
                case .completed, .failed, .rolledBack, .needsAttention: return
                }
            } catch {
                guard try await settle(error) else { return }
            }
        }
    }

    /// Records what `error` means for the disk: attention needed, a failure, or nothing
    /// (a cancelled plan; a rollback interrupted by a lost QMP session, which recover
    /// resumes). Rethrows errors that put the record itself in doubt. Returns whether
    /// the disk may go on (its new state decides how).
    func settle(_ error: Error) async throws -> Bool {
        switch error {
        case is CancellationError:
            return false  // The plan is being cancelled: the next owner of the disk reconciles.
        case let error as NeedsAttention:
            try await ledger.transition(to: .needsAttention, error.description) { $0.error = error.description }
            return true
        case is IllegalTransition, is StoreFailure:
            throw error
        case let error as StoreError where error.stopsTheEngine:
            throw error
        default:
            if Task.isCancelled { return false }
            // A lost or broken VM session says nothing about the copy: a rollback under
            // way stays under way (recover resumes it), and a stream does not roll back.
            let sessionLost = (error as? BackendError)?.isAboutTheSession == true
            if sessionLost && disk.state == .rollingBack {
                try await ledger.note("rollback interrupted (\(describe(error))); livecopy recover resumes it")
                return false
            }
            try await fail(because: describe(error), mayRollBack: !sessionLost && !(error is FlushNotConfirmed))
            return true
        }
    }

    /// Turns a disk that is not final toward `rolled_back`: pending disks are simply
    /// dropped; disks already retiring finish (their source may be gone); the others
    /// roll back, each step of which first checks that it is safe.
    func beginRollback(_ reason: String) async throws {
        switch disk.state {
        case .pending:
            try await ledger.transition(to: .rolledBack, "\(reason): nothing had been done")
        case .snapshotting, .streaming, .mirroring, .failed:
            try await ledger.transition(to: .rollingBack, reason)
        case .needsAttention:
            // Rolling back re-checks everything first and stops again if still unsafe.
            try await ledger.transition(to: .rollingBack, "\(reason); checking again what stopped it")
        case .retiring, .completed, .rollingBack, .rolledBack:
            return
        }
    }

    /// Moves to `failed`, or to `rolling_back` when the policy says so and the copy
    /// itself failed (not merely the QMP session, nor the flush before finalizing) with the
    /// VM on the destination.
    func fail(because reason: String, mayRollBack: Bool) async throws {
        switch disk.state {
        case .streaming where policy.onFailure == .rollback && mayRollBack,
             .mirroring where policy.onFailure == .rollback && mayRollBack:
            try await ledger.transition(to: .rollingBack, "copy failed, on_failure: rollback: \(reason)") { $0.error = reason }
        case .pending, .snapshotting, .streaming, .mirroring, .retiring, .rollingBack:
            try await ledger.transition(to: .failed, reason) { $0.error = reason }
        case .failed, .completed, .rolledBack, .needsAttention:
            throw StoreFailure(reason)
        }
    }

    // MARK: - Where the VM is

    /// The disk's entry in `query-block`.
    func locateDevice() async throws -> VMDisk {
        if let found = try await session.disks().entry(for: disk) { return found }
        throw NeedsAttention(description: "device '\(disk.device)' is no longer in VM '\(disk.vmName)'")
    }

    /// How block commands name this disk's active layer right now.
    func target(_ entry: VMDisk) throws -> DiskTarget {
        if !entry.device.isEmpty { return .device(entry.device) }
        guard let node = entry.medium?.nodeName else {
            throw NeedsAttention(description: "device '\(disk.device)' has no medium")
        }
        return .node(node)
    }

    func deviceName(_ entry: VMDisk) throws -> String {
        switch try target(entry) {
        case .device(let name), .node(let name): return name
        }
    }

    func job(_ id: String) async throws -> CopyJob? {
        try await session.jobs().first(where: { $0.id == id })
    }

    // MARK: - Failed disks

    /// Picks up a failed disk, or one that needed attention, where reality says it is.
    func resumeFailed() async throws {
        let seen = try await DiskSighting.look(at: disk, in: session)
        let resumption = Resumption.decide(disk, seen)
        switch resumption {
        case .rollBack:
            try await ledger.transition(to: resumption.nextState, resumption.summary)
        case .retireAgain, .verifyAlone, .streamAgain, .snapshotAgain, .mirrorAgain:
            try await ledger.transition(to: resumption.nextState, resumption.summary) { $0.error = nil }
        case .attention:
            guard seen.device != nil else {
                throw NeedsAttention(description: "device '\(disk.device)' is no longer in VM '\(disk.vmName)'")
            }
            throw NeedsAttention(description: "VM is on \(seen.activeImage ?? "no image"), neither source nor destination")
        }
    }
}

/// An error that must stop the engine rather than fail a disk (the record itself is in doubt).
/// The engine's own error, raised when what the store returned makes no sense (a disk gone,
/// a final disk asked to fail); `StoreError` is what the store itself throws.
struct StoreFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension StoreError {
    /// Whether `DiskWorkflow.settle` rethrows it, stopping the engine: a lost compare-and-set
    /// puts the record in doubt. The other kinds fail the disk as any other error does.
    var stopsTheEngine: Bool {
        switch kind {
        case .conflict: return true
        case .database, .leaseHeld, .claimed: return false
        }
    }
}
