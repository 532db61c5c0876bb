// The mirror strategy's pivots of one VM's disks, made together (docs/mirror.md#several-disks).

import Foundation
import LivecopyBackend
import LivecopyModel

/// Brings the pivots of a VM's mirror disks as close together as QEMU allows. QEMU 7.2
/// has no transaction for `block-job-complete` or `job-finalize`, so the closest is:
/// every disk READY, every destination flushed (with QEMU's confirmation; if any is not,
/// none pivots), every job completed, every destination flushed again while its job
/// waits in `pending` (if any is not confirmed, every job is cancelled), then every job
/// finalized, back to back.
///
/// A disk whose job is READY waits here for the plan's other mirror disks of the same VM
/// whose jobs QEMU lists and that have not concluded; the one that finds the group whole
/// pivots it, each member's steps recorded in its own ledger. A disk whose job is not
/// listed yet (not started, for `max_parallel_disks`) is not waited for. After
/// `patience`, the disks that are ready pivot without the others (a note says so).
actor MirrorPivots {
    /// Each VM's mirror disks in the plan (by stored address).
    private let planDisks: [String: Set<Int64>]
    private let patience: Double
    private var ready: [String: [Int64: DiskWorkflow]] = [:]
    private var firstReady: [String: Date] = [:]
    private var outcomes: [Int64: Result<Void, Error>] = [:]

    init(planDisks: [DiskRecord], patience: Double = DiskSchedule.defaultPivotPatience) {
        var byVM: [String: Set<Int64>] = [:]
        for disk in planDisks where disk.strategy == .mirror { byVM[disk.vmAddress, default: []].insert(disk.id) }
        self.planDisks = byVM
        self.patience = patience
    }

    /// `member`'s job is READY: returns once its pivot was carried out, by itself or by the
    /// member that found the group whole; throws the member's own error.
    nonisolated func pivot(_ member: DiskWorkflow, jobId: String) async throws {
        let disk = member.disk
        await arrive(member)
        while true {
            if let outcome = await takeOutcome(disk.id) { return try outcome.get() }
            let listed = try await member.session.jobs()
            let active = Set(listed.compactMap { job -> Int64? in
                switch job.status {
                case .concluded, .aborting, .null: return nil
                case .undefined, .created, .running, .paused, .ready, .standby, .waiting, .pending, .unrecognized:
                    return job.id.hasPrefix("livecopy-mirror-") ? Int64(job.id.dropFirst("livecopy-mirror-".count)) : nil
                }
            })
            if let group = await claim(disk.vmAddress, expected: active) {
                let results = await MirrorPivotGroup(members: group).run()
                await record(results)
                continue
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    private func arrive(_ member: DiskWorkflow) {
        let address = member.disk.vmAddress
        ready[address, default: [:]][member.disk.id] = member
        if firstReady[address] == nil { firstReady[address] = Date() }
    }

    /// The group to pivot now, taken off the waiting list; nil while a member the group
    /// expects (the plan's disk on this VM with an active job) is not ready yet.
    private func claim(_ address: String, expected active: Set<Int64>) -> [DiskWorkflow]? {
        guard let waiting = ready[address], !waiting.isEmpty else { return nil }
        let expected = (planDisks[address] ?? []).intersection(active)
        let missing = expected.subtracting(waiting.keys)
        let waited = Date().timeIntervalSince(firstReady[address] ?? Date())
        guard missing.isEmpty || waited >= patience else { return nil }
        ready[address] = nil
        firstReady[address] = nil
        return waiting.keys.sorted().compactMap { waiting[$0] }
    }

    private func record(_ results: [Int64: Result<Void, Error>]) {
        for (id, result) in results { outcomes[id] = result }
    }

    private func takeOutcome(_ id: Int64) -> Result<Void, Error>? {
        outcomes.removeValue(forKey: id)
    }
}

/// One group's pivot: every member's intent and confirmed flush first; then every
/// completion; every flush in `pending`; then every finalize. Returns each member's result.
struct MirrorPivotGroup {
    let members: [DiskWorkflow]

    func run() async -> [Int64: Result<Void, Error>] {
        var results: [Int64: Result<Void, Error>] = [:]
        if members.count > 1 {
            let names = members.map { $0.disk.device }.joined(separator: ", ")
            for member in members { try? await member.ledger.note("pivoting together with the VM's other disks: \(names)") }
        }
        // 1. Intents and confirmed flushes: a destination not proven on disk stops the group.
        var refusal: String?
        for member in members {
            do {
                try await member.preparePivot(member.disk.mirrorJobId)
            } catch {
                results[member.disk.id] = .failure(error)
                refusal = refusal ?? "\(member.disk.device): \(describe(error))"
            }
        }
        if let refusal {
            for member in members where results[member.disk.id] == nil {
                let error = DiskWorkflow.FlushNotConfirmed(
                    description: "not pivoted: another disk of VM '\(member.disk.vmName)' could not be flushed (\(refusal)); the VM's disks pivot together, and the VM stays on its sources")
                try? await member.ledger.outcome("refused: \(error.description)")
                results[member.disk.id] = .failure(error)
            }
            return results
        }
        // 2. Every job completed (each then drains and waits in `pending`, its guest I/O
        // held), 3. every destination flushed again with confirmation (if one is not,
        // every completed job is cancelled: nothing pivots), 4. every job finalized: the
        // pivots, back to back.
        var completing: [(DiskWorkflow, ContinuousClock.Instant)] = []
        for member in members {
            do {
                completing.append((member, try await member.completeForPivot(member.disk.mirrorJobId)))
            } catch {
                results[member.disk.id] = .failure(error)
            }
        }
        var unflushed: String?
        for (member, _) in completing {
            do {
                try await member.flushWhilePending(member.disk.mirrorJobId)
            } catch {
                results[member.disk.id] = .failure(error)
                unflushed = unflushed ?? "\(member.disk.device): \(describe(error))"
            }
        }
        if let unflushed {
            for (member, _) in completing where results[member.disk.id] == nil {
                do {
                    try await member.cancelPivot(
                        member.disk.mirrorJobId,
                        because: "not pivoted: another disk of VM '\(member.disk.vmName)' could not be flushed (\(unflushed)); the VM's disks pivot together")
                } catch {
                    results[member.disk.id] = .failure(error)
                }
            }
            return results
        }
        for (member, completedAt) in completing {
            do {
                try await member.finalizePivot(member.disk.mirrorJobId, completedAt: completedAt)
                results[member.disk.id] = .success(())
            } catch {
                results[member.disk.id] = .failure(error)
            }
        }
        return results
    }
}
