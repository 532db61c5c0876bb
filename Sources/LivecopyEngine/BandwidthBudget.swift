// The host's bandwidth budget (`livecopy serve`'s `bandwidth`), shared by every copy job
// serve runs: each job's speed set so that the speeds never sum to more than the budget.

import LivecopyModel
import Metrics

/// A running copy job as the budget sees it: how to change its speed, and how to record
/// that change in its disk's timeline.
public struct BudgetedJob: Sendable {
    public let jobId: String
    let setSpeed: @Sendable (Int64) async throws -> Void
    let record: @Sendable (String) async -> Void

    init(jobId: String, setSpeed: @escaping @Sendable (Int64) async throws -> Void, record: @escaping @Sendable (String) async -> Void) {
        self.jobId = jobId
        self.setSpeed = setSpeed
        self.record = record
    }
}

/// Splits the host's bandwidth budget among the copy jobs it runs (`BandwidthShares`),
/// re-balanced as jobs start and end and as the budget or a job's own speed changes.
///
/// One change at a time, and in an order that keeps the sum of the speeds QEMU runs the
/// jobs at within the budget at every moment: every job that must slow down does so
/// first, then the job starting starts at its share, then the jobs that may speed up do.
/// Disks whose job may still run from before a restart of `serve` are *expected*: each
/// counts as a job wanting all it can get until it re-attaches or ends, so no job is
/// raised into bandwidth they still use.
public actor BandwidthBudget {
    /// A disk's place in the budget.
    private struct Entry {
        /// Its own speed (plan policy, or `livecopy throttle`); 0: as fast as allowed.
        var wanted: Int64
        /// Its job; nil while only expected (a job from before a restart, not attached yet).
        var job: BudgetedJob?
        /// The speed its job runs at as livecopy last set it; nil: not known.
        var applied: Int64?
    }

    /// nil: no budget (every job runs at its own speed).
    private var total: Int64?
    private var entries: [Int64: Entry] = [:]
    /// Set when serve stops: jobs left running keep their speeds, none is raised.
    private var frozen = false
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    public init(total: Int64?) {
        self.total = total
        Self.publish(total: total, allocated: 0)
    }

    private func publish() {
        Self.publish(total: total, allocated: entries.values.compactMap(\.applied).reduce(0, +))
    }

    /// The budget and the speeds given out, as metrics.
    private static func publish(total: Int64?, allocated: Int64) {
        Gauge(label: MetricName.hostBandwidthBudget).record(total ?? 0)
        Gauge(label: MetricName.hostBandwidthAllocated).record(allocated)
    }

    /// Disks whose jobs may run from before a restart, counted until each re-attaches or ends.
    public func expect(diskIds: [Int64]) {
        for id in diskIds where entries[id] == nil {
            entries[id] = Entry(wanted: 0, job: nil, applied: nil)
        }
    }

    /// Starts a job within the budget: the others slow down first, then `start` runs with
    /// this job's share, then the others may speed up. If `start` throws, the job leaves
    /// the budget again.
    public func start(diskId: Int64, wanted: Int64, job: BudgetedJob,
                      _ start: @Sendable (Int64) async throws -> Void) async throws {
        await lock()
        entries[diskId] = Entry(wanted: wanted, job: job, applied: nil)
        let shares = currentShares()
        await lower(to: shares, except: diskId)
        do {
            try await start(shares[diskId] ?? wanted)
        } catch {
            entries[diskId] = nil
            await raise(to: currentShares())
            unlock()
            throw error
        }
        entries[diskId]?.applied = shares[diskId] ?? wanted
        await raise(to: shares)
        unlock()
    }

    /// A job already running (re-attached after a restart) joins: set to its share, in
    /// the same order as a start.
    public func attach(diskId: Int64, wanted: Int64, job: BudgetedJob) async {
        await serialized {
            entries[diskId] = Entry(wanted: wanted, job: job, applied: nil)
            await rebalance()
        }
    }

    /// The job's own speed changed (`livecopy throttle`).
    public func change(diskId: Int64, wanted: Int64) async {
        await serialized {
            guard entries[diskId] != nil else { return }
            entries[diskId]?.wanted = wanted
            await rebalance()
        }
    }

    /// The disk's job ended (or its drive stopped): the others may take its share.
    public func release(diskId: Int64) async {
        await serialized {
            guard let entry = entries.removeValue(forKey: diskId) else { return }
            if let job = entry.job, !frozen, total != nil {
                await job.record("job \(job.jobId) left the host's bandwidth budget")
            }
            await rebalance()
        }
    }

    /// Whether the disk's job is in the budget (started or attached).
    public func holds(diskId: Int64) -> Bool {
        entries[diskId]?.job != nil
    }

    /// A new budget (SIGHUP); nil: none.
    public func setTotal(_ newTotal: Int64?) async {
        await serialized {
            total = newTotal
            await rebalance()
        }
    }

    /// Serve is stopping: the jobs it leaves running keep their speeds; nothing changes
    /// any more.
    public func freeze() async {
        await serialized { frozen = true }
    }

    // MARK: - Changing speeds

    private func currentShares() -> [Int64: Int64] {
        BandwidthShares.split(total, among: entries.mapValues(\.wanted))
    }

    private func rebalance() async {
        let shares = currentShares()
        await lower(to: shares, except: nil)
        await raise(to: shares)
    }

    /// Sets every job that must go slower than it runs (or whose speed is unknown).
    private func lower(to shares: [Int64: Int64], except skipped: Int64?) async {
        for (id, share) in shares.sorted(by: { $0.key < $1.key }) where id != skipped {
            guard let entry = entries[id], entry.job != nil else { continue }
            if let applied = entry.applied, !Self.isFaster(applied, than: share) { continue }
            await set(id, to: share)
        }
    }

    /// Sets every job that may go faster than it runs.
    private func raise(to shares: [Int64: Int64]) async {
        for (id, share) in shares.sorted(by: { $0.key < $1.key }) {
            guard let entry = entries[id], entry.job != nil, let applied = entry.applied,
                  Self.isFaster(share, than: applied) else { continue }
            await set(id, to: share)
        }
    }

    /// Whether speed `a` is faster than `b` (0 is unlimited, the fastest).
    static func isFaster(_ a: Int64, than b: Int64) -> Bool {
        if a == b { return false }
        if a == 0 { return true }
        return b != 0 && a > b
    }

    private func set(_ id: Int64, to speed: Int64) async {
        guard !frozen, let job = entries[id]?.job else { return }
        do {
            try await job.setSpeed(speed)
            entries[id]?.applied = speed
            let share = total.map { "its share of the host's \(ByteSize.format($0))/s budget over \(entries.count) jobs" }
                ?? "no host budget"
            await job.record("job \(job.jobId): speed \(speed) bytes/s (\(OperatorAction.speedText(speed)), \(share))")
        } catch {
            // The job ended meanwhile (its drive releases it) or QEMU refused: its speed
            // is not known any more, so it is set again at the next change.
            entries[id]?.applied = nil
            await job.record("job \(job.jobId): speed \(OperatorAction.speedText(speed)) not set: \(describe(error))")
        }
    }

    // MARK: - One change at a time

    private func serialized(_ body: () async -> Void) async {
        await lock()
        await body()
        unlock()
    }

    private func lock() async {
        while busy {
            await withCheckedContinuation { waiting.append($0) }
        }
        busy = true
    }

    private func unlock() {
        publish()
        busy = false
        if !waiting.isEmpty { waiting.removeFirst().resume() }
    }
}
