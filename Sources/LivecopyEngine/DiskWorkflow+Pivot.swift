// The mirror strategy's pivot for one disk (docs/mirror.md#the-recipe): a confirmed flush
// of the destination, `block-job-complete`, a second confirmed flush while the job waits
// in `pending` (the guest's I/O held), then `job-finalize`.

import Foundation
import LivecopyBackend
import LivecopyModel

extension DiskWorkflow {
    /// The job is READY: both images hold the same data and every guest write reaches
    /// both. The pivot, with the VM's other mirror disks when there are any
    /// (`MirrorPivots`): the destination flushed with QEMU's confirmation, then
    /// `block-job-complete` (the job drains and waits in `pending`, the guest's I/O held
    /// meanwhile), the destination flushed again with confirmation, and at once
    /// `job-finalize`, at which the device pivots. Without a confirmation nothing pivots:
    /// the VM stays on its source and the disk fails, for recover or run to try again.
    func pivot(_ jobId: String) async throws {
        if let pivots {
            try await pivots.pivot(self, jobId: jobId)
            return
        }
        try await preparePivot(jobId)
        let completed = try await completeForPivot(jobId)
        try await flushWhilePending(jobId)
        try await finalizePivot(jobId, completedAt: completed)
    }

    /// Re-attached to a job already completed (livecopy died inside the pivot's window):
    /// flushed with confirmation, then finalized at once.
    func finishPivot(_ jobId: String) async throws {
        if disk.intent != .pivot {
            try await ledger.intend(.pivot, "flush \(disk.destination), then finalize job \(jobId), completed by an earlier run")
        }
        try await flushWhilePending(jobId)
        try await finalizePivot(jobId, completedAt: nil)
    }

    /// The pivot's intent, then the flush of the destination that QEMU must confirm.
    func preparePivot(_ jobId: String) async throws {
        if disk.intent != .pivot {
            try await ledger.intend(.pivot, "flush \(disk.destination), then complete and finalize job \(jobId): the VM moves onto \(disk.destination)")
        }
        if let problem = try await session.flush(nodeName: disk.destinationNodeName).problem {
            try await ledger.outcome("refused: flush \(problem)")
            throw FlushNotConfirmed(
                description: "the flush of \(disk.destination) before the pivot \(problem); job \(jobId) was not completed and the VM stays on \(disk.source ?? "the source"), which holds every write; livecopy recover or run tries again")
        }
        if tracksGuestWrites {
            // At READY every guest write reaches both images, and the mirror copies nothing
            // else any more: a bitmap on the destination added now records exactly the
            // guest's later writes (one added before the job would count the copy's own).
            try await session.addDirtyBitmap(nodeName: disk.destinationNodeName, name: disk.dirtyBitmapName)
        }
    }

    /// `block-job-complete`, then the wait for `pending`. Returns when it was sent.
    func completeForPivot(_ jobId: String) async throws -> ContinuousClock.Instant {
        let events = session.jobEvents()
        let sent = ContinuousClock.now
        try await session.complete(jobId: jobId)
        try await waitUntilPending(jobId, events: events)
        // Inside the window: the job waits in `pending`, the guest's I/O held, until
        // finalized (by this run, or by recover re-attaching).
        CrashPoint.reach("sent:pivot-complete")
        return sent
    }

    /// The second confirmed flush, in `pending`: the job's last pass copied into the
    /// destination whatever the guest wrote since the first flush, and a guest's flush
    /// reaches only the source before the pivot (QEMU's mirror filter passes flushes to the
    /// source alone; seen with strace on QEMU 7.2), so without this a write the guest saw
    /// as durable could be in the page cache only when the destination becomes the truth.
    /// The guest's I/O is held meanwhile, so this covers every write before the pivot. If
    /// the flush is not confirmed, the job is cancelled (a pending mirror then ends
    /// without pivoting, releasing the guest's I/O): the VM stays on its source.
    func flushWhilePending(_ jobId: String) async throws {
        guard let problem = try await session.flush(nodeName: disk.destinationNodeName).problem else { return }
        try await cancelPivot(jobId, because: "the flush of \(disk.destination) before the pivot \(problem)")
    }

    /// Cancels a completed job waiting in `pending` instead of finalizing it: the mirror
    /// ends without pivoting, the guest's I/O is released, QEMU lets go of the destination,
    /// and the VM stays on its source. Records why and throws `FlushNotConfirmed` (the
    /// disk fails, without rolling back: recover or run mirrors again).
    func cancelPivot(_ jobId: String, because reason: String) async throws -> Never {
        try? await session.cancel(jobId: jobId, force: true)
        _ = try? await watch(jobId: jobId, ready: nil)
        try? await session.closeImage(nodeName: disk.destinationNodeName)
        try await ledger.outcome("refused: \(reason); job \(jobId) cancelled, nothing pivoted")
        throw FlushNotConfirmed(
            description: "\(reason); job \(jobId) was cancelled and the VM stays on \(disk.source ?? "the source"), which holds every write; livecopy recover or run mirrors again")
    }

    /// `job-finalize`: the device pivots. Notes how long the guest's I/O was held since
    /// `completedAt` (the completion).
    func finalizePivot(_ jobId: String, completedAt: ContinuousClock.Instant?) async throws {
        try await session.finalize(jobId: jobId)
        ledger.sent()
        let held = completedAt.map { " (guest I/O held for \((ContinuousClock.now - $0).wholeMilliseconds) ms since block-job-complete)" } ?? ""
        try await ledger.note("job \(jobId) completed and finalized\(held)")
    }

    /// Waits for job `jobId` to reach `pending` after `block-job-complete`: its status
    /// event, or (a safety net) the job list, read every 20 ms.
    private func waitUntilPending(_ jobId: String, events: AsyncStream<JobEvent>) async throws {
        let session = self.session
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await event in events {
                    if case .statusChanged(let id, let status) = event, id == jobId, status == .pending || status == .concluded {
                        return
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    guard let job = try await session.jobs().first(where: { $0.id == jobId }) else { return }
                    switch job.status {
                    case .pending, .concluded, .aborting, .null: return
                    case .undefined, .created, .running, .paused, .ready, .standby, .waiting, .unrecognized:
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }
}

extension Duration {
    /// Whole milliseconds (for the pivot's window in the timeline).
    var wholeMilliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
