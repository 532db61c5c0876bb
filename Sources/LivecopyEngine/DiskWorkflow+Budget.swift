// A copy job's speed: the plan's own (policy `speed` or `livecopy throttle`), or under
// `livecopy serve` its share of the host's bandwidth budget.

import LivecopyModel

extension DiskWorkflow {
    /// The speed the plan wants for its jobs: the operator's, else the policy's (0: unlimited).
    var wantedSpeed: Int64 { controls().speedOverride ?? policy.speed }

    /// Starts the copy job through `start`, at the plan's speed or, under a host budget, at
    /// the job's share (after the other jobs slowed down to make room).
    func startCopyJob(_ jobId: String, _ start: @escaping @Sendable (Int64) async throws -> Void) async throws {
        guard let budget else {
            try await start(wantedSpeed)
            return
        }
        try await budget.start(diskId: disk.id, wanted: wantedSpeed, job: budgetedJob(jobId), start)
    }

    /// A job running from before (re-attached) joins the host budget and runs at its share.
    func joinBudget(_ jobId: String) async {
        guard let budget, session.capabilities.contains(.throttleJobs) else { return }
        await budget.attach(diskId: disk.id, wanted: wantedSpeed, job: budgetedJob(jobId))
    }

    /// The job ended: its share goes to the others.
    func leaveBudget() async {
        await budget?.release(diskId: disk.id)
    }

    private func budgetedJob(_ jobId: String) -> BudgetedJob {
        let session = self.session
        let ledger = self.ledger
        return BudgetedJob(
            jobId: jobId,
            setSpeed: { speed in try await session.setSpeed(jobId: jobId, speed: speed) },
            record: { text in try? await ledger.note(text) })
    }
}
