// The rollback of one disk: cancel the stream, commit or mirror back, pivot, delete the
// destination after the checks.

import CSystemExtras
import Foundation
import LivecopyBackend
import LivecopyModel

extension DiskWorkflow {
    /// Commits the destination back into the source, pivots the VM to the source, and
    /// deletes the destination if livecopy created it. Re-entrant: each step first
    /// looks at QEMU's jobs and the VM's active image.
    func rollback() async throws {
        let copyJobId = disk.copyJobId
        if let copy = try await job(copyJobId) {
            if copy.status != .concluded {
                try await ledger.intend(.cancelCopy, "job \(copyJobId)")
                try await session.cancel(jobId: copyJobId, force: true)
                ledger.sent()
            }
            _ = try await watch(jobId: copyJobId, ready: nil)
            try await ledger.outcome("copy job \(copyJobId) ended and dismissed")
        }
        let commitId = disk.commitJobId
        if try await job(commitId) == nil {
            let entry = try await locateDevice()
            if entry.medium?.file == disk.source {
                // Either the pivot is done (the intent to delete says so, or nothing was
                // ever written to the destination) or the VM was restarted on its source.
                switch disk.intent {
                case .deleteDestination?:
                    break  // the rollback job concluded on the source: the pivot is done
                case .pivotBack?:
                    try await refuseAmbiguousPivot()
                case nil, .createDestination?, .snapshot?, .stream?, .finalize?, .mirror?, .pivot?, .verify?, .renameSource?,
                     .deleteSource?, .quarantineSource?, .cancelCopy?, .commitBack?, .mirrorBack?:
                    switch disk.strategy {
                    case .stream:
                        try await refuseSplitBrain(activeImage: disk.source ?? "the source")
                    case .mirror:
                        // Before the pivot the destination is a partial copy; after it (or
                        // with one under way) it may hold writes the source lacks.
                        try await refuseLostPivot()
                    }
                }
                try await finishRollback()
                return
            }
            guard entry.medium?.file == disk.destination, let source = disk.source else {
                throw NeedsAttention(description: "rollback: the VM is on \(entry.medium?.file ?? "no image"), neither the source nor the destination")
            }
            if entry.medium?.backingFile == source {
                try await ledger.intend(.commitBack, "job \(commitId): \(disk.destination) into \(source)")
                // The source at the bottom of the chain is QEMU's default base; named only
                // when it has a chain of its own below it.
                let sourceIsBottom = entry.medium?.image.backingImage?.backingImage == nil
                try await session.startCommit(disk: try deviceName(entry), jobId: commitId,
                                              baseFile: sourceIsBottom ? nil : source, speed: 0)
                ledger.sent()
                try await ledger.outcome("commit job started")
            } else {
                // The stream already finished: the destination stands alone. Mirror it back
                // into the source file, which still holds the old data and its own chain.
                guard FileManager.default.fileExists(atPath: source), let format = disk.sourceFormat else {
                    throw NeedsAttention(description: "rollback: \(disk.destination) stands alone and the source \(source) is gone; \(disk.destination) holds all data")
                }
                try await ledger.intend(.mirrorBack, "job \(commitId): \(disk.destination) back into \(source)")
                try await session.startMirror(disk: try deviceName(entry), jobId: commitId, target: source, format: format)
                ledger.sent()
                try await ledger.outcome("mirror job started")
            }
        }
        let session = self.session
        let ledger = self.ledger
        let disk = self.disk
        var callbacks = JobWatcher.Callbacks()
        callbacks.ready = {
            try await ledger.intend(.pivotBack, "pivot to the source")
            do {
                try await session.complete(jobId: commitId)
            } catch let error as BackendError where error.isRefusal {
                // Already completing (asked before a crash): the job's conclusion tells.
                try await ledger.note("block-job-complete: \(error.reason)")
            }
            ledger.sent()
        }
        callbacks.concluded = { error in
            // Persist what the conclusion proves before job-dismiss erases it from QEMU.
            guard error == nil else { return }
            let devices = try await session.disks()
            let active = devices.entry(for: disk)?.medium?.file
            if active == disk.source {
                try await ledger.outcome("the VM is on the source with every write", next: .deleteDestination)
            }
        }
        let error = try await watch(jobId: commitId, callbacks: callbacks)
        if let error { throw NeedsAttention(description: "rollback job \(commitId) failed: \(error); \(disk.destination) still holds the newest writes") }
        let entry = try await locateDevice()
        guard entry.medium?.file == disk.source else {
            throw NeedsAttention(description: "after the rollback the VM is on \(entry.medium?.file ?? "no image"), not on the source")
        }
        try await finishRollback()
    }

    /// The VM is on its source with every write: delete the destination if ours, once
    /// QEMU and the kernel say nothing uses it.
    func finishRollback() async throws {
        if disk.strategy == .mirror {
            // The mirror's destination may still be open in QEMU (a cancelled mirror).
            try? await session.closeImage(nodeName: disk.destinationNodeName)
        }
        if disk.destinationCreated {
            if disk.intent != .deleteDestination { try await ledger.intend(.deleteDestination, disk.destination) }
            let source = disk.source ?? "the source"
            if let entry = try await session.disks().entry(for: disk), entry.medium?.file != disk.source {
                throw NeedsAttention(
                    description: "rollback: VM '\(disk.vmName)' device '\(disk.device)' runs on \(entry.medium?.file ?? "no image"), not on \(source); \(disk.destination) was not deleted")
            }
            try await deleteOwnFile(disk.destination, because: "rolled back onto \(source)")
            ledger.sent()
            try await ledger.outcome("destination deleted") { $0.destinationCreated = false }
        }
        try await updateManagerRecord()
        try await ledger.transition(to: .rolledBack, "the VM is back on \(disk.source ?? "the source") with every write")
    }

    /// A pivot back to the source was requested, then QEMU went away before its job
    /// concluded; the VM now runs on the source. If the images differ, nobody can tell
    /// whether the source got every write: touch nothing.
    func refuseAmbiguousPivot() async throws {
        var info = stat()
        guard disk.destinationCreated, lstat(disk.destination, &info) == 0, let source = disk.source else { return }
        guard !(await inspector.sourceMatchesDestination(disk)) else { return }
        throw NeedsAttention(
            description: "a pivot back to \(source) was requested just before QEMU stopped, and the VM now runs on \(source), which differs from \(disk.destination): livecopy cannot tell which holds the newest writes and touched neither; \(Self.ambiguousPivotAdvice(source: source, destination: disk.destination))")
    }

    /// What the operator does when nobody can tell whether a pivot back to the source
    /// happened: never delete the source, which the destination may still need.
    static func ambiguousPivotAdvice(source: String, destination: String) -> String {
        "compare them; if \(destination) holds the newest data, start the VM on it and run livecopy recover (the rollback starts again from there); if \(source) does, delete \(destination) yourself, then run livecopy recover. Never delete \(source): \(destination) may still need it as its backing file"
    }
}
