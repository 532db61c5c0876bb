// Operator requests (throttle, pause, resume) applied to a running plan's copy jobs
// (streams, or mirrors).

import Foundation
import LivecopyModel
import LivecopyBackend

extension Engine {
    /// Applies the plan's open operator requests, oldest first, to its copy jobs in
    /// QEMU (over the sessions already open), and records each outcome.
    func applyOperatorRequests(planId: Int64) async {
        guard let requests = try? store.openControlRequests(planId: planId), !requests.isEmpty else { return }
        for request in requests {
            let (ok, outcome) = await apply(request.action, planId: planId)
            do {
                try await store.finishControlRequest(id: request.id, planId: planId, ok: ok, outcome: outcome, at: Date())
            } catch {
                observer.note(nil, "plan \(planId): cannot record the outcome of request \(request.id): \(describe(error))")
                return
            }
            observer.note(nil, "plan \(planId): \(outcome)")
        }
    }

    /// Sends `action` to every copy job (stream or mirror) of the plan that QEMU still runs.
    private func apply(_ action: OperatorAction, planId: Int64) async -> (ok: Bool, outcome: String) {
        let disks: [DiskRecord]
        do {
            disks = try store.disks(ofPlan: planId)
        } catch {
            return (false, "\(action): cannot read the plan's disks (\(describe(error)))")
        }
        var applied: [String] = []
        var failures: [String] = []
        let addresses = Set(disks.filter { !$0.state.isFinal }.map(\.vmAddress)).sorted()
        for address in addresses {
            guard let session = await sessions.existing(for: address) else { continue }
            let ids = Set(disks.filter { $0.vmAddress == address }.map(\.copyJobId))
            let jobs: [CopyJob]
            do {
                jobs = try await session.jobs().filter { ids.contains($0.id) && $0.status.acceptsControls }
            } catch {
                failures.append("\(VMAddress.describe(stored: address)): \(describe(error))")
                continue
            }
            for job in jobs.sorted(by: { $0.id < $1.id }) {
                if let needed = action.neededCapability, !session.capabilities.contains(needed) {
                    failures.append("job \(job.id): this VM's hypervisor backend cannot \(needed.rawValue)")
                    continue
                }
                do {
                    switch action {
                    case .throttle(let speed):
                        let disk = disks.first { $0.copyJobId == job.id }
                        var cap: Int64?
                        if let disk { cap = await admission?.speedCap(diskId: disk.id) }
                        let allowed = LivecopyEngine.speed(speed, cappedAt: cap)
                        if let budget = hostLimits?.budget, let disk, await budget.holds(diskId: disk.id) {
                            // Under serve's host budget: the job's own speed, within its share.
                            await budget.change(diskId: disk.id, wanted: speed)
                            applied.append("job \(job.id) speed \(OperatorAction.speedText(speed)) within the host's bandwidth budget")
                        } else if allowed != speed {
                            // A fleet target's bandwidth share caps the operator's speed.
                            try await session.setSpeed(jobId: job.id, speed: allowed)
                            applied.append("job \(job.id) speed \(OperatorAction.speedText(allowed)) (its storage target's share, below \(OperatorAction.speedText(speed)))")
                        } else {
                            try await session.setSpeed(jobId: job.id, speed: speed)
                            applied.append("job \(job.id) speed \(OperatorAction.speedText(speed))")
                        }
                    case .pause:
                        if job.status != .paused { try await session.pause(jobId: job.id) }
                        applied.append("job \(job.id) paused")
                    case .resume:
                        if job.status == .paused { try await session.resume(jobId: job.id) }
                        applied.append("job \(job.id) resumed")
                    }
                } catch {
                    failures.append("job \(job.id): \(describe(error))")
                }
            }
        }
        var outcome = "\(action): "
        if applied.isEmpty && failures.isEmpty {
            outcome += "no copy job runs now; recorded for the jobs the plan starts later"
        } else {
            outcome += (applied + failures.map { "failed on \($0)" }).joined(separator: "; ")
        }
        return (failures.isEmpty, outcome)
    }
}

extension OperatorAction {
    /// What the VM's backend must be able to do for this action.
    var neededCapability: BackendCapability? {
        switch self {
        case .throttle: return .throttleJobs
        case .pause, .resume: return .pauseJobs
        }
    }
}
