// How a host's bandwidth budget is split among the copy jobs running on it.

/// Splits a bandwidth budget among copy jobs, each wanting its own speed (its plan's
/// `speed` or the operator's `livecopy throttle`; 0 = as fast as it can): a job wanting
/// less than an equal share gets what it wants, and what it leaves goes to the others
/// (water-filling). The shares never sum to more than the budget, and none is 0, which
/// QEMU would read as unlimited.
public enum BandwidthShares {
    /// Each job's speed in bytes per second. `budget` nil: every job gets what it wants.
    public static func split<Key: Hashable>(_ budget: Int64?, among wanted: [Key: Int64]) -> [Key: Int64] {
        guard let budget else { return wanted }
        // Most modest first: 0 (no limit of its own) wants the most.
        let ordered = wanted.sorted { demand($0.value) < demand($1.value) }
        var left = budget
        var shares: [Key: Int64] = [:]
        for (index, job) in ordered.enumerated() {
            let equal = left / Int64(ordered.count - index)
            let share = max(1, min(demand(job.value), equal))
            shares[job.key] = share
            left -= share
        }
        return shares
    }

    /// What a job wants as a number to compare: 0 means no limit of its own.
    private static func demand(_ speed: Int64) -> Int64 {
        speed == 0 ? Int64.max : speed
    }
}
