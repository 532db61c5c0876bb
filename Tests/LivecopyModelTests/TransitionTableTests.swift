import LivecopyModel
import Testing

/// The transition table, checked pair by pair against an independent list.
struct TransitionTableTests {
    /// Every allowed disk transition, written out by hand; every other pair is forbidden.
    static let allowedDiskPairs: Set<String> = [
        "pending→snapshotting", "pending→mirroring", "pending→failed", "pending→rolled_back", "pending→needs_attention",
        "snapshotting→streaming", "snapshotting→failed", "snapshotting→rolling_back",
        "snapshotting→needs_attention",
        "streaming→retiring", "streaming→failed", "streaming→rolling_back", "streaming→needs_attention",
        "mirroring→retiring", "mirroring→failed", "mirroring→rolling_back", "mirroring→needs_attention",
        "retiring→completed", "retiring→failed", "retiring→needs_attention",
        "failed→snapshotting", "failed→streaming", "failed→mirroring", "failed→retiring", "failed→rolling_back",
        "failed→needs_attention",
        "rolling_back→rolled_back", "rolling_back→failed", "rolling_back→needs_attention",
        "needs_attention→snapshotting", "needs_attention→streaming", "needs_attention→mirroring",
        "needs_attention→rolling_back",
    ]

    static let allowedPlanPairs: Set<String> = [
        "pending→running", "pending→refused",
        "running→completed", "running→failed", "running→rolled_back", "running→needs_attention",
        "failed→running",
        "needs_attention→running",
    ]

    @Test func everyDiskPairIsAllowedOrForbiddenAsListed() {
        var checked = 0
        for from in DiskState.allCases {
            for to in DiskState.allCases {
                let pair = "\(from.rawValue)→\(to.rawValue)"
                #expect(from.canMove(to: to) == Self.allowedDiskPairs.contains(pair), "disk \(pair)")
                checked += 1
            }
        }
        #expect(checked == 100)
    }

    @Test func everyPlanPairIsAllowedOrForbiddenAsListed() {
        for from in PlanState.allCases {
            for to in PlanState.allCases {
                let pair = "\(from.rawValue)→\(to.rawValue)"
                #expect(from.canMove(to: to) == Self.allowedPlanPairs.contains(pair), "plan \(pair)")
            }
        }
    }

    @Test func finalStatesAreExactlyTheOnesWithoutExits() {
        #expect(Set(DiskState.allCases.filter(\.isFinal)) == [.completed, .rolledBack])
        #expect(Set(PlanState.allCases.filter(\.isFinal)) == [.completed, .rolledBack, .refused])
    }

    @Test func noStateMovesToItself() {
        for state in DiskState.allCases { #expect(!state.canMove(to: state)) }
        for state in PlanState.allCases { #expect(!state.canMove(to: state)) }
    }

    @Test func stateNamesAreTheContractStrings() {
        #expect(DiskState.allCases.map(\.rawValue) == [
            "pending", "snapshotting", "streaming", "mirroring", "retiring", "completed", "failed", "rolling_back", "rolled_back",
            "needs_attention",
        ])
        #expect(PlanState.allCases.map(\.rawValue) == [
            "pending", "running", "completed", "failed", "rolled_back", "needs_attention", "refused",
        ])
    }

    @Test(arguments: [
        ([DiskState.completed, .completed], PlanState.completed),
        ([.completed, .failed], .failed),
        ([.completed, .needsAttention, .failed], .needsAttention),
        ([.rolledBack, .rolledBack], .rolledBack),
        ([.completed, .rolledBack], .rolledBack),
        ([.streaming, .completed], .failed),
    ])
    func planOutcomeFollowsItsDisks(disks: [DiskState], expected: PlanState) {
        #expect(PlanState.outcome(of: disks) == expected)
    }
}
