import Foundation
import LivecopyModel
import LivecopyBackend

/// The snapshot step for the disks of one VM: every member that still has to switch is
/// readied (checked, its destination created), then all switch in **one** 
/// transaction, so the VM's disks move to their destinations together as one
/// crash-consistent set, or none does.
///
/// If any member cannot be readied, or QEMU refuses the transaction (after the
/// retries of transient errors the session does itself), nothing switched: each member
/// removes the file livecopy made and ends `failed` with the reason, resumable by
/// `livecopy recover`, which snapshots the set again.
struct VMSnapshot {
    let vmName: String
    /// Workflows of the VM's disks (one QMP session), in plan order.
    let members: [DiskWorkflow]

    /// Runs the step; member failures are settled into the members' records. Returns the
    /// ids of the disks it acted on (their outcome for this run is settled). Throws only
    /// errors that put a record in doubt.
    @discardableResult
    func run() async throws -> Set<Int64> {
        var ready: [(member: DiskWorkflow, request: OverlayRequest)] = []
        var acted = Set<Int64>()
        var refusal: String?
        for member in members {
            let before = member.state
            do {
                guard let entry = try await member.prepareSnapshot() else {
                    if member.state != before { acted.insert(member.ledger.disk.id) }
                    continue
                }
                acted.insert(member.ledger.disk.id)
                ready.append((member, try member.snapshotRequest(entry)))
            } catch {
                acted.insert(member.ledger.disk.id)
                refusal = "\(member.ledger.disk.device): \(describe(error))"
                _ = try await member.settle(error)
                break
            }
        }
        if let refusal {
            // Nothing is sent: every other member still to switch stays on its source.
            for member in members where member.state == .pending || member.state == .snapshotting {
                acted.insert(member.ledger.disk.id)
                try await settling(member) {
                    try await member.snapshotNotTaken(
                        "not snapshotted: another disk of VM '\(vmName)' could not take part (\(refusal)); a VM's disks switch together or not at all")
                }
            }
            return acted
        }
        guard !ready.isEmpty else { return acted }
        guard let session = ready.first?.member.session else { return acted }
        do {
            try await session.switchToOverlays(ready.map(\.request))
        } catch let error as BackendError where error.isRefusal {
            let reason = ready.count == 1
                ? error.description
                : "snapshot transaction of \(ready.count) disks of VM '\(vmName)' failed, none switched: \(error.description)"
            for (member, _) in ready {
                try await settling(member) { try await member.snapshotNotTaken(reason) }
            }
            return acted
        } catch {
            // No answer, or the session broke: whether QEMU switched is unknown until the
            // VM is asked again; each member fails with the intent kept, and recover
            // reconciles it from what QEMU shows.
            for (member, _) in ready { _ = try await member.settle(error) }
            return acted
        }
        for (member, _) in ready { member.snapshotSent() }
        for (member, _) in ready {
            try await settling(member) { try await member.snapshotTaken() }
        }
        return acted
    }

    /// Runs one member's step, settling its error into its record.
    private func settling(_ member: DiskWorkflow, _ step: () async throws -> Void) async throws {
        do {
            try await step()
        } catch {
            _ = try await member.settle(error)
        }
    }
}

/// Runs each VM's snapshot phase once per engine run, when the first of its disks comes
/// up to be driven; the VM's other disks wait for it, then read their records again.
actor VMSnapshotBarrier {
    private var steps: [String: Task<Set<Int64>, Error>] = [:]

    /// Waits for the step of the VM at `address` (stored form), starting it with `step`
    /// if none has started; returns the ids of the disks the step acted on.
    func join(_ address: String, _ step: @escaping @Sendable () async throws -> Set<Int64>) async throws -> Set<Int64> {
        if let running = steps[address] { return try await running.value }
        let started = Task { try await step() }
        steps[address] = started
        return try await started.value
    }
}
