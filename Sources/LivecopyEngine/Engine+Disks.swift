// Driving a plan's disks: at most `max_parallel_disks` at a time, each through its own
// `DiskWorkflow`; on a forward run each VM's snapshot phase first, for all its disks at once.

import Foundation
import LivecopyModel
import LivecopyBackend

extension Engine {
    /// Runs `step` for every disk of the plan that is not final, in `DiskSchedule`'s order
    /// and at most its `slots` (`max_parallel_disks`) at a time, each next disk as soon as
    /// any running one ends (what `validate`'s estimate simulates). Returns the first
    /// error that puts a record in doubt.
    /// `snapshots` (forward runs): before a disk's step, its VM's snapshot phase runs,
    /// once per VM, so the disks of each VM switch together; `step` learns whether that
    /// phase settled the disk.
    func driveDisks(planId: Int64, policy: Policy, snapshots: VMSnapshotBarrier?,
                    _ step: @escaping @Sendable (DiskWorkflow, _ settledBySnapshot: Bool) async throws -> Void) async -> Error? {
        let disks: [DiskRecord]
        do {
            disks = DiskSchedule.runOrder(try store.disks(ofPlan: planId))
        } catch {
            return error
        }
        // Forward runs: each VM's mirror disks pivot together.
        let pivots = snapshots == nil ? nil : MirrorPivots(planDisks: disks)
        let slots = DiskSchedule(maxParallelDisks: policy.maxParallelDisks).slots
        var firstError: Error?
        await withTaskGroup(of: Error?.self) { group in
            var running = 0
            for disk in disks {
                if running == slots {
                    if let error = await group.next() ?? nil { firstError = firstError ?? error }
                    running -= 1
                }
                group.addTask { await self.drive(disk, policy: policy, snapshots: snapshots, pivots: pivots, step) }
                running += 1
            }
            for await error in group where error != nil { firstError = firstError ?? error }
        }
        return firstError
    }

    /// Drives one disk; returns an error only when the record itself is in doubt. A VM
    /// that cannot be reached leaves the disk's state as it is (the plan is interrupted).
    private func drive(_ recorded: DiskRecord, policy: Policy, snapshots: VMSnapshotBarrier?, pivots: MirrorPivots?,
                       _ step: (DiskWorkflow, Bool) async throws -> Void) async -> Error? {
        let ledger = DiskLedger(disk: recorded, store: store, observer: observer, hooks: policy.hooks)
        do {
            // Another disk's step (its VM's snapshot) may have moved this one since the plan was read.
            try ledger.reload()
            // A hook left pending by a crash needs no VM: the manager learns where the disk
            // is even while the VM is down (a final disk comes here only for that).
            try await HookCall(ledger: ledger).runPending()
            let disk = ledger.disk
            if disk.state.isFinal { return nil }
            // Under `serve` or a fleet agent: a turn to copy, held until this disk's drive ends.
            guard let admission else { return await drive(ledger, policy: policy, snapshots: snapshots, pivots: pivots, step) }
            guard case .granted(let speedCap)? = await admission.admit(disk, note: { text in try? await ledger.note(text) }) else {
                return nil
            }
            let error = await drive(ledger, policy: policy, snapshots: snapshots, pivots: pivots, speedCap: speedCap, step)
            await admission.release(disk)
            return error
        } catch is CancellationError {
            return nil
        } catch {
            return error
        }
    }

    /// Connects to the disk's VM and runs its step (after its VM's snapshot phase).
    /// `speedCap`: the most its copy job may run at (a fleet target's bandwidth share).
    private func drive(_ ledger: DiskLedger, policy: Policy, snapshots: VMSnapshotBarrier?, pivots: MirrorPivots?,
                       speedCap: Int64? = nil, _ step: (DiskWorkflow, Bool) async throws -> Void) async -> Error? {
        do {
            let disk = ledger.disk
            do {
                try sessions.hypervisor.checkAddress(disk.vmAddress, allowShared: policy.allowSharedSocket)
            } catch {
                // Checked again at every run: the address may have changed since the plan was checked.
                try await ledger.note("VM '\(disk.vmName)': \(describe(error)); not connecting")
                return nil
            }
            let session: any VMSession
            do {
                session = try await sessions.session(for: disk.vmAddress, commandTimeout: commandTimeout)
            } catch {
                if Task.isCancelled { return nil }
                let boot = disk.bootImage.map { "; start it on \($0)" } ?? ""
                try await ledger.note("VM '\(disk.vmName)' is unreachable (\(describe(error)))\(boot), then run livecopy recover")
                return nil
            }
            var settledBySnapshot = false
            if let snapshots, disk.strategy == .stream {
                // The phase settles each member's record itself; it throws only when a
                // record is in doubt. Either way this disk's record is read again after it.
                let phase: Result<Set<Int64>, Error>
                do {
                    phase = .success(try await snapshots.join(disk.vmAddress) {
                        try await self.snapshotPhase(of: disk, session: session, policy: policy)
                    })
                } catch {
                    phase = .failure(error)
                }
                try ledger.reload()
                settledBySnapshot = try phase.get().contains(disk.id)
            }
            try await step(workflow(ledger, session: session, policy: policy, pivots: pivots, speedCap: speedCap), settledBySnapshot)
            return nil
        } catch is CancellationError {
            return nil
        } catch {
            return error
        }
    }

    /// A disk's workflow over `session`, retrying QEMU's transient refusals per policy.
    private func workflow(_ ledger: DiskLedger, session: any VMSession, policy: Policy, pivots: MirrorPivots? = nil,
                          speedCap: Int64? = nil) -> DiskWorkflow {
        let store = self.store
        let planId = ledger.disk.planId
        let policySpeed = policy.speed
        let controls: @Sendable () -> PlanControls = {
            ((try? store.controls(ofPlan: planId)) ?? PlanControls()).capped(at: speedCap, policySpeed: policySpeed)
        }
        let retrying = RetryingVMSession(session, policy: policy) { message in try? await ledger.note(message) }
        return DiskWorkflow(ledger: ledger, session: retrying, policy: policy, inspector: inspector, creator: creator,
                            controls: controls, pivots: pivots, budget: hostLimits?.budget)
    }

    /// The snapshot phase of `disk`'s VM: every disk of the plan on that VM switches in
    /// one transaction (`VMSnapshot`). Returns the ids of the disks it settled.
    func snapshotPhase(of disk: DiskRecord, session: any VMSession, policy: Policy) async throws -> Set<Int64> {
        let members = try store.disks(ofPlan: disk.planId)
            .filter { $0.vmAddress == disk.vmAddress && !$0.state.isFinal && $0.strategy == .stream }
            .map { workflow(DiskLedger(disk: $0, store: store, observer: observer, hooks: policy.hooks), session: session, policy: policy) }
        return try await VMSnapshot(vmName: disk.vmName, members: members).run()
    }
}
