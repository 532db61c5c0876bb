// A fleet agent's copy slots: taken from the shared store (`FleetStore.takeCopySlot`), which
// holds the per-host and per-target limits of every agent together.

import Foundation
import LivecopyModel
import Synchronization

/// The turns to copy of one agent's disks, under the limits kept in the fleet store.
///
/// A disk asks the store for a slot; while its host or its storage target is full it stays
/// `pending`, with the reason noted once in its timeline (again whenever the reason
/// changes), and asks again every `pollInterval`. Its job's speed is capped at the target's
/// bandwidth share. A slot is given back when the disk's drive ends with no job left
/// running: a halted agent's disks keep theirs (QEMU's jobs run on), and the agent that
/// resumes them gets the same slots again.
public final class FleetAdmission: CopyAdmission {
    let store: any FleetStore
    let host: String
    let pollInterval: Duration
    /// The caps of the disks admitted now, by disk id.
    private let caps = Mutex<[Int64: Int64]>([:])

    public init(store: any FleetStore, host: String, pollInterval: Duration = .milliseconds(500)) {
        self.store = store
        self.host = host
        self.pollInterval = pollInterval
    }

    public func admit(_ disk: DiskRecord, note: @escaping @Sendable (String) async -> Void) async -> CopySlotDecision? {
        let request = CopySlotRequest(diskId: disk.id, planId: disk.planId, host: host, destination: disk.destination)
        var lastReason: String?
        while !Task.isCancelled {
            let decision: CopySlotDecision
            do {
                decision = try await store.takeCopySlot(request, at: Date())
            } catch {
                // The store retries a lost connection itself; anything else is worth a line, then a retry.
                let reason = "cannot take a copy slot: \(describe(error))"
                if reason != lastReason { await note(reason) }
                lastReason = reason
                try? await Task.sleep(for: pollInterval * 4)
                continue
            }
            switch decision {
            case .granted(let cap):
                caps.withLock { $0[disk.id] = cap }
                return decision
            case .waiting(let reason):
                if reason != lastReason { await note("waiting for a copy slot: \(reason)") }
                lastReason = reason
                try? await Task.sleep(for: pollInterval)
            }
        }
        return nil
    }

    public func release(_ disk: DiskRecord) async {
        caps.withLock { _ = $0.removeValue(forKey: disk.id) }
        // Read again: the drive moved the disk since `disk` was read.
        let current = (try? store.disk(id: disk.id)) ?? nil
        guard let current, !Self.mayHaveJob(current.state) else { return }
        try? await store.releaseCopySlot(diskId: disk.id, at: Date())
    }

    public func speedCap(diskId: Int64) async -> Int64? {
        caps.withLock { $0[diskId] }
    }

    /// Whether a disk in `state` may have a copy (or rollback) job running in QEMU, so
    /// that its slot must stay taken.
    static func mayHaveJob(_ state: DiskState) -> Bool {
        switch state {
        case .snapshotting, .streaming, .mirroring, .retiring, .rollingBack: return true
        case .pending, .completed, .failed, .rolledBack, .needsAttention: return false
        }
    }
}
