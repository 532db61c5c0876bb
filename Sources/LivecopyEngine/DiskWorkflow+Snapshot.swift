// The snapshot step of one disk: readying it for its VM's switch (`VMSnapshot`), and
// reconciling a switch interrupted by a crash.

import CSystemExtras
import Foundation
import LivecopyBackend
import LivecopyModel

extension DiskWorkflow {
    /// Readies this disk for its VM's snapshot transaction and returns the device entry to
    /// snapshot, or nil when the disk takes no part (already switched, or not this step's
    /// business). A disk `pending` is checked and its destination created; one
    /// `snapshotting` after an interruption is reconciled first (did the snapshot happen?);
    /// one `failed` or `needs_attention` while still on its source is resumed.
    func prepareSnapshot() async throws -> VMDisk? {
        switch disk.state {
        case .pending:
            if disk.source == nil { try await discoverSource() }
            let entry = try await locateDevice()
            guard let active = entry.medium?.file, active == disk.source else {
                throw NeedsAttention(
                    description: "VM '\(disk.vmName)' device '\(disk.device)' is on \(entry.medium?.file ?? "no image"), not on the recorded source \(disk.source ?? "?")")
            }
            try DestinationCheck.refuseExisting(disk.destination)
            try await ledger.transition(to: .snapshotting, "snapshot \(disk.source ?? "?") → \(disk.destination)")
            try await createDestination(entry)
            return entry
        case .failed, .needsAttention:
            // Only a disk still on its source takes part; `run` resumes the others.
            let resumption = Resumption.decide(disk, try await DiskSighting.look(at: disk, in: session))
            guard resumption == .snapshotAgain else { return nil }
            try await ledger.transition(to: resumption.nextState, resumption.summary) { $0.error = nil }
            return try await reconcileSnapshot()
        case .snapshotting:
            return try await reconcileSnapshot()
        case .streaming, .mirroring, .retiring, .rollingBack, .completed, .rolledBack:
            return nil
        }
    }

    /// The snapshot request for this disk: its destination file (made by livecopy, never
    /// by the hypervisor) on top of the device's active image.
    /// With `verify`, a dirty bitmap joins the switch's transaction on the overlay: it
    /// records the guest's writes from the switch on, and `block-stream`'s copy-on-read
    /// writes do not mark it (checked on QEMU 7.2, `DirtyBitmapFacts`).
    func snapshotRequest(_ entry: VMDisk) throws -> OverlayRequest {
        OverlayRequest(disk: try target(entry), overlayFile: disk.destination, overlayNodeName: disk.destinationNodeName,
                       dirtyBitmap: tracksGuestWrites ? disk.dirtyBitmapName : nil)
    }

    /// Whether this disk's destination gets a dirty bitmap: the policy verifies data and
    /// the backend can (preflight refuses a plan otherwise; a plan resumed by a backend
    /// that cannot is verified by `on_unverifiable`).
    var tracksGuestWrites: Bool {
        switch policy.verify {
        case .none: return false
        case .sample, .full: return session.capabilities.contains(.dirtyTracking)
        }
    }

    /// Marks the end of the snapshot command (for crash tests).
    func snapshotSent() { ledger.sent() }

    /// QEMU accepted the snapshot: records what it shows, and moves on to streaming.
    func snapshotTaken() async throws {
        let after = try await locateDevice()
        guard after.medium?.file == disk.destination else {
            throw NeedsAttention(description: "snapshot reported success but the VM is on \(after.medium?.file ?? "no image")")
        }
        try await ledger.outcome("the VM now writes into \(disk.destination)") { $0.qmpDevice = try? deviceName(after) }
        try await ledger.transition(to: .streaming, "destination overlay active, backing \(disk.source ?? "?")")
    }

    /// The snapshot was refused (by QEMU, or because another disk of the VM could not
    /// take part): if the VM is nevertheless on the destination go on; otherwise remove
    /// the file livecopy made, and fail, resumable.
    func snapshotNotTaken(_ reason: String) async throws {
        let entry = try await locateDevice()
        if entry.medium?.file == disk.destination {
            try await ledger.outcome("the VM is on \(disk.destination) despite the error")
            try await ledger.transition(to: .streaming, "destination overlay active")
            return
        }
        try await removeDestinationIfOurs()
        try await ledger.outcome("failed: \(reason)") { $0.destinationCreated = false }
        try await ledger.transition(to: .failed, reason) { $0.error = reason }
    }

    /// A plan recorded with `submit --detach` learns its source now, with the same checks
    /// as preflight at submission, and the bytes its copy will copy (as preflight records them).
    func discoverSource() async throws {
        let devices = try await session.disks()
        let found = try Preflight.check(
            Plan.Disk(device: disk.device, destination: disk.destination, format: disk.destinationFormat), vmName: disk.vmName, vmAddress: disk.vmAddress,
            in: devices, name: "VM '\(disk.vmName)' disk '\(disk.device)'", policy: policy)
        var allocated: Int64?
        if let image = devices.first(where: { $0.medium?.image.filename == found.source })?.medium?.image {
            allocated = await Preflight.allocation(of: image, inspector: inspector).0
        }
        try await ledger.outcome("source discovered: \(found.source ?? "?") (\(found.sourceFormat ?? "?"))") {
            $0.source = found.source
            $0.sourceFormat = found.sourceFormat
            $0.qmpDevice = found.qmpDevice
            $0.allocatedBytes = allocated
        }
    }

    /// Makes the destination file, exclusively, with the source as its backing file and the
    /// source's format recorded. The file counts as livecopy's (`destinationCreated`) only
    /// once the exclusive create succeeded: a crash before that outcome is written leaves a
    /// file that no later step deletes.
    func createDestination(_ entry: VMDisk) async throws {
        guard let image = entry.medium?.image, let source = disk.source, image.filename == source else {
            throw NeedsAttention(description: "device '\(disk.device)' is not on the recorded source \(disk.source ?? "?")")
        }
        try await ledger.intend(.createDestination, "\(disk.destination): qcow2 of \(image.virtualSize) bytes, backing \(source) (\(image.format))") {
            $0.destinationCreated = false
        }
        do {
            try creator.createOverlay(at: disk.destination, backing: source, backingFormat: image.format, virtualSize: image.virtualSize)
        } catch {
            try await ledger.outcome("refused: \(describe(error))")
            throw error
        }
        ledger.sent()
        // The intent to snapshot goes in the same write: the record never shows the new file
        // as livecopy's with nothing under way (which would name it as the image to boot).
        try await ledger.outcome("created \(disk.destination) (mode 0600, backing \(source), backing format \(image.format))",
                           next: .snapshot) { $0.destinationCreated = true }
    }

    /// After an interruption in `snapshotting`: did the snapshot happen? If so, go on to
    /// streaming (nil); if not, make the destination again and return the entry to snapshot.
    func reconcileSnapshot() async throws -> VMDisk? {
        let entry = try await locateDevice()
        switch entry.medium?.file {
        case disk.destination?:
            try await ledger.outcome("the snapshot had happened: the VM is on \(disk.destination)") {
                $0.qmpDevice = try? deviceName(entry)
            }
            try await ledger.transition(to: .streaming, "destination overlay active")
            return nil
        case disk.source?:
            try await refuseSplitBrain(activeImage: disk.source ?? "")
            try await removeDestinationIfOurs()
            var info = stat()
            if !disk.destinationCreated, disk.intent == .createDestination, lstat(disk.destination, &info) == 0 {
                throw NeedsAttention(
                    description: "livecopy was interrupted while creating \(disk.destination) and cannot prove the file there is its own, so it left it; delete it if nothing else uses it, then run livecopy recover")
            }
            try await ledger.outcome("the snapshot had not happened; retrying") { $0.destinationCreated = false }
            try DestinationCheck.refuseExisting(disk.destination)
            try await createDestination(entry)
            return entry
        default:
            throw NeedsAttention(
                description: "VM '\(disk.vmName)' device '\(disk.device)' is on \(entry.medium?.file ?? "no image"), neither the source nor the destination")
        }
    }

    /// The VM runs on the source; if the destination exists with writes of its own, they
    /// are newer than the source (a VM restarted on the wrong image): touch nothing.
    func refuseSplitBrain(activeImage: String) async throws {
        var info = stat()
        guard disk.destinationCreated, lstat(disk.destination, &info) == 0 else { return }
        let holdsWrites: Bool
        do {
            holdsWrites = try await inspector.hasOwnData(disk.destination)
        } catch {
            throw NeedsAttention(description: "the VM runs on \(activeImage) and \(disk.destination) exists but cannot be inspected (\(describe(error))); touching neither")
        }
        if holdsWrites {
            throw NeedsAttention(
                description: "split brain: the VM runs on \(activeImage) but \(disk.destination) holds newer guest writes; neither image was touched. Stop the VM and start it on \(disk.destination) (never on \(disk.source ?? "the source")), then run livecopy recover; or, if the writes in \(disk.destination) must be discarded, delete it yourself")
        }
    }

    /// Deletes the destination only if livecopy created it and, as QEMU and the kernel say
    /// right now, nothing uses it.
    func removeDestinationIfOurs() async throws {
        guard disk.destinationCreated else { return }
        try await deleteOwnFile(disk.destination, because: "the snapshot onto it did not happen")
    }
}
