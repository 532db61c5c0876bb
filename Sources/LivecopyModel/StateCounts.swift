/// How many plans and disks of a database are in each state (every state, zeros included):
/// what `livecopy_plans{state}` and `livecopy_disks{state}` report.
public struct StateCounts: Sendable, Equatable {
    public var plans: [PlanState: Int]
    public var disks: [DiskState: Int]

    /// Counts with every state present; a state missing from `plans` or `disks` counts zero.
    public init(plans: [PlanState: Int] = [:], disks: [DiskState: Int] = [:]) {
        self.plans = Dictionary(uniqueKeysWithValues: PlanState.allCases.map { ($0, plans[$0] ?? 0) })
        self.disks = Dictionary(uniqueKeysWithValues: DiskState.allCases.map { ($0, disks[$0] ?? 0) })
    }
}
