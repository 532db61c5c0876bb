// A fleet agent's copy slots: taken from the shared store (`FleetStore.takeCopySlot`), which
// holds the per-host and per-target limits of every agent together.

import Foundation
import LivecopyModel
import Synchronization

/// The turns to copy of one agent's disks, under the limits kept in the fleet store.
///
/// A disk asks the store for a slot; while its host or its storage target is full it stays
/// `pending`, with the reason noted once in its timeline (again whenever the reason
/// changes). It asks again when the store says a slot that concerns it was given back or a
/// limit changed (`FleetStore.copySlotChanges`, one listener per agent), and at the latest
/// every `fallbackInterval`: a waiting disk costs the store one round trip per release on
/// its host or target, not one per tick. Its job's speed is capped at the target's
/// bandwidth share. A slot is given back when the disk's drive ends with no job left
/// running: a halted agent's disks keep theirs (QEMU's jobs run on), and the agent that
/// resumes them gets the same slots again.
public final class FleetAdmission: CopyAdmission {
    let store: any FleetStore
    let host: String
    /// How long a waiting disk waits for a change before it asks again anyway.
    let fallbackInterval: Duration
    /// The caps of the disks admitted now, by disk id.
    private let caps = Mutex<[Int64: Int64]>([:])
    private let waiters = Mutex<Waiters>(Waiters())
    private let listener = Mutex<Task<Void, Never>?>(nil)

    /// The disks waiting for a change now, each with what wakes it.
    private struct Waiters {
        var next = 0
        var waiting: [Int: (destination: String, wake: CheckedContinuation<Void, Never>)] = [:]
        /// Waiters woken before they were in place (they return at once).
        var wokenEarly: Set<Int> = []
    }

    public init(store: any FleetStore, host: String, fallbackInterval: Duration = .seconds(5)) {
        self.store = store
        self.host = host
        self.fallbackInterval = fallbackInterval
    }

    deinit {
        listener.withLock { $0?.cancel() }
    }

    public func admit(_ disk: DiskRecord, note: @escaping @Sendable (String) async -> Void) async -> CopySlotDecision? {
        startListening()
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
                try? await Task.sleep(for: fallbackInterval)
                continue
            }
            switch decision {
            case .granted(let cap):
                caps.withLock { $0[disk.id] = cap }
                return decision
            case .waiting(let reason):
                if reason != lastReason { await note("waiting for a copy slot: \(reason)") }
                lastReason = reason
                await waitForChange(destination: disk.destination)
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

    // MARK: - Waiting for a change

    /// The agent's one listener: each change wakes the waiting disks it may let fit.
    private func startListening() {
        listener.withLock { task in
            guard task == nil else { return }
            let changes = store.copySlotChanges()
            task = Task { [weak self] in
                for await change in changes {
                    guard let self else { return }
                    self.wake { destination in change.mayAdmit(host: self.host, destination: destination) }
                }
            }
        }
    }

    /// Returns when a change may let a disk copying to `destination` fit, after
    /// `fallbackInterval` at the latest, or when the task is cancelled.
    private func waitForChange(destination: String) async {
        let id = waiters.withLock { waiters in
            defer { waiters.next += 1 }
            return waiters.next
        }
        let timeout = Task { [fallbackInterval] in
            try? await Task.sleep(for: fallbackInterval)
            if !Task.isCancelled { self.wake(id: id) }
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = waiters.withLock { waiters -> Bool in
                    if waiters.wokenEarly.remove(id) != nil { return true }
                    waiters.waiting[id] = (destination, continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            self.wake(id: id)
        }
        timeout.cancel()
        waiters.withLock { _ = $0.wokenEarly.remove(id) }
    }

    /// Wakes the waiter `id`; one not in place yet returns at once when it gets there.
    private func wake(id: Int) {
        let continuation = waiters.withLock { waiters -> CheckedContinuation<Void, Never>? in
            if let entry = waiters.waiting.removeValue(forKey: id) { return entry.wake }
            waiters.wokenEarly.insert(id)
            return nil
        }
        continuation?.resume()
    }

    /// Wakes every waiter whose destination `matches`.
    private func wake(where matches: (String) -> Bool) {
        let woken = waiters.withLock { waiters in
            let ids = waiters.waiting.filter { matches($0.value.destination) }.map(\.key)
            return ids.compactMap { waiters.waiting.removeValue(forKey: $0)?.wake }
        }
        for continuation in woken { continuation.resume() }
    }
}
