import LivecopyModel
import PropertyBased
import Testing

/// `DiskSchedule` (the order and slots a run uses, played out for known durations) and
/// `PlanEstimate` (which rate, which basis): properties over generated schedules, and
/// tables for the mirror pivots and the bases.
@Suite struct DiskScheduleTests {
    /// Durations in whole seconds, so sums and comparisons are exact.
    static let durations = Gen.int(in: 0...100).array(of: 0...12)
    static let slotCounts = Gen.int(in: 1...6)

    /// Disks that share the host perfectly (each of `k` at 1/`k` of its lone pace) keep the
    /// host busy: the plan takes the sum of the lone copies, whatever the slots; no disk
    /// ends sooner than with no sharing, and with a pace of 1 nothing changes.
    @Test func sharingTheHostNeverShortensACopyAndKeepsTheHostBusy() async {
        await propertyCheck(count: 1_000, input: Self.durations, Self.slotCounts) { durations, slots in
            let schedule = DiskSchedule(maxParallelDisks: slots)
            let items = durations.map { DiskSchedule.Item(duration: Double($0)) }
            let alone = schedule.simulate(items)
            #expect(schedule.simulate(items) { _ in 1 } == alone)
            let shared = schedule.simulate(items) { 1 / Double($0) }
            let sum = Double(durations.reduce(0, +))
            #expect(abs((shared.map(\.end).max() ?? 0) - sum) < 1e-6, "\(durations), \(slots) slots: \(shared)")
            for (index, timing) in shared.enumerated() {
                #expect(timing.end - timing.start >= Double(durations[index]) - 1e-6)
            }
        }
    }

    @Test func streamDisksRunInOrderAtMostSlotsAtOnceEachAsSoonAsASlotFrees() async {
        await propertyCheck(count: 2_000, input: Self.durations, Self.slotCounts) { durations, slots in
            let schedule = DiskSchedule(maxParallelDisks: slots)
            let timings = schedule.simulate(durations.map { DiskSchedule.Item(duration: Double($0)) })
            #expect(timings.count == durations.count)
            for (index, timing) in timings.enumerated() {
                #expect(timing.end - timing.start == Double(durations[index]), "a disk ends when its copy does")
                #expect(timing.firstWave == (index < slots))
                if index < slots {
                    #expect(timing.start == 0, "the first wave starts at once")
                } else {
                    // List scheduling in order: disk i starts at the (i - slots + 1)-th end among the disks before it.
                    let earlierEnds = timings[..<index].map(\.end).sorted()
                    #expect(timing.start == earlierEnds[index - slots], "disk \(index) of \(durations), \(slots) slots")
                }
                if index > 0 { #expect(timing.start >= timings[index - 1].start, "disks start in run order") }
            }
            // Never more than `slots` at once: count at every start.
            for timing in timings {
                let running = timings.filter { $0.start <= timing.start && timing.start < $0.end }.count
                #expect(running <= slots)
            }
            // Graham's bounds for list scheduling.
            let total = timings.map(\.end).max() ?? 0
            let sum = Double(durations.reduce(0, +))
            let longest = Double(durations.max() ?? 0)
            #expect(total >= max(longest, sum / Double(slots)))
            #expect(total <= sum / Double(slots) + longest)
        }
    }

    @Test func oneSlotRunsTheDisksBackToBack() {
        let timings = DiskSchedule(maxParallelDisks: 1).simulate([3, 1, 2].map { DiskSchedule.Item(duration: $0) })
        #expect(timings.map(\.start) == [0, 3, 4])
        #expect(timings.map(\.end) == [3, 4, 6])
        #expect(timings.map(\.firstWave) == [true, false, false])
    }

    @Test func twoSlotsFillTheFirstFreedSlot() {
        // 40, 10, 30, 20 s on 2 slots: the third starts when the second ends (10), the
        // fourth when the third does (40, with the first).
        let timings = DiskSchedule(maxParallelDisks: 2).simulate([40, 10, 30, 20].map { DiskSchedule.Item(duration: $0) })
        #expect(timings.map(\.start) == [0, 0, 10, 40])
        #expect(timings.map(\.end) == [40, 10, 40, 60])
    }

    @Test func aMirrorDiskReadyHoldsItsSlotUntilTheOtherDisksOfItsVMAreReady() {
        let items = [DiskSchedule.Item(duration: 10, pivotGroup: "vm1"), DiskSchedule.Item(duration: 2, pivotGroup: "vm1"),
                     DiskSchedule.Item(duration: 5)]
        let timings = DiskSchedule(maxParallelDisks: 2).simulate(items)
        #expect(timings.map(\.end) == [10, 10, 15], "the second pivots with the first; the third waits for a slot")
        #expect(timings[2].start == 10)
        // After the patience, the ready disk pivots alone.
        let impatient = DiskSchedule(maxParallelDisks: 2, pivotPatience: 5).simulate(items)
        #expect(impatient.map(\.end) == [10, 7, 12])
    }

    @Test func aMirrorDiskDoesNotWaitForADiskOfItsVMNotStartedYet() {
        let items = [DiskSchedule.Item(duration: 3, pivotGroup: "vm1"), DiskSchedule.Item(duration: 3, pivotGroup: "vm1")]
        let timings = DiskSchedule(maxParallelDisks: 1).simulate(items)
        #expect(timings.map(\.start) == [0, 3])
        #expect(timings.map(\.end) == [3, 6])
        // Other VMs' mirror disks are not waited for either.
        let twoVMs = DiskSchedule(maxParallelDisks: 2).simulate([DiskSchedule.Item(duration: 1, pivotGroup: "a"),
                                                                  DiskSchedule.Item(duration: 9, pivotGroup: "b")])
        #expect(twoVMs.map(\.end) == [1, 9])
    }

    @Test func mirrorSchedulesKeepTheirBounds() async {
        let groups = Gen.element(of: ["a", "b", "c"]).array(of: 12)
        await propertyCheck(count: 1_000, input: Self.durations, Self.slotCounts, groups) { durations, slots, names in
            let items = durations.enumerated().map { DiskSchedule.Item(duration: Double($1), pivotGroup: names[$0]) }
            let timings = DiskSchedule(maxParallelDisks: slots).simulate(items)
            for (index, timing) in timings.enumerated() {
                #expect(timing.end - timing.start >= Double(durations[index]), "no disk ends before its copy")
                let running = timings.filter { $0.start <= timing.start && timing.start < $0.end }.count
                #expect(running <= slots)
            }
        }
    }

    @Test func oddDurationsCountAsNothingAndSlotsAreAtLeastOne() {
        let schedule = DiskSchedule(maxParallelDisks: 0)
        #expect(schedule.slots == 1)
        let timings = schedule.simulate([-5, .nan, .infinity, 2].map { DiskSchedule.Item(duration: $0) })
        #expect(timings.map(\.end) == [0, 0, 0, 2])
        #expect(DiskSchedule(maxParallelDisks: 3).simulate([]).isEmpty)
    }

    @Test func theRunOrderIsTheRecordOrderOfTheDisksNotFinal() {
        func disk(_ id: Int64, _ state: DiskState) -> DiskRecord {
            DiskRecord(id: id, planId: 1, vmName: "vm", vmAddress: "/q", device: "d\(id)", destination: "/d\(id)", source: nil,
                       sourceFormat: nil, qmpDevice: nil, state: state, bytesDone: 0, bytesTotal: 0, error: nil, intent: nil,
                       destinationCreated: false, updatedAt: .distantPast)
        }
        let order = DiskSchedule.runOrder([disk(3, .pending), disk(1, .completed), disk(2, .failed), disk(4, .rolledBack),
                                           disk(5, .streaming)])
        #expect(order.map(\.id) == [2, 3, 5])
    }
}

/// Which rate `PlanEstimate` uses, and the durations it gives.
@Suite struct PlanEstimateTests {
    static let mib: Int64 = 1 << 20
    static let history = HistoryRate(strategy: .stream, bytesPerSecond: 64 * 1_048_576, copies: 7)

    static func estimate(speed: Int64, history: HistoryRate?, bytes: [Int64] = [64 << 20, 32 << 20, 96 << 20],
                         slots: Int = 2, overhead: Double = 0) -> PlanEstimate {
        PlanEstimate(allocatedBytes: bytes, pivotGroups: bytes.map { _ in nil }, speed: speed, history: history,
                     schedule: DiskSchedule(maxParallelDisks: slots), perDiskOverhead: overhead)
    }

    @Test(arguments: [
        // speed MiB/s, history?, basis key, rate used (MiB/s)
        (32, false, "policy_speed", 32.0),
        (0, true, "history", 64.0),
        (32, true, "policy_speed", 32.0),
        (128, true, "history", 64.0),
    ])
    func theRateIsTheLowerOfTheSpeedAndTheHistory(speed: Int64, withHistory: Bool, key: String, rate: Double) throws {
        let estimate = Self.estimate(speed: speed * Self.mib, history: withHistory ? Self.history : nil)
        #expect(estimate.basis.key == key)
        #expect(estimate.bytesPerSecond == rate * 1_048_576)
        // 64 and 32 MiB first; 96 MiB starts when the 32 MiB disk ends.
        let seconds = try #require(estimate.seconds)
        #expect(seconds == (32 + 96) / rate)
    }

    @Test func theBasisIsSaidInWords() {
        #expect(Self.estimate(speed: 32 * Self.mib, history: nil).basisDescription == "policy speed 32.0 MiB/s per disk")
        let alone = "median 64.0 MiB/s per disk alone over 7 stream copies; none with others at once (disks taken not to slow each other)"
        #expect(Self.estimate(speed: 0, history: Self.history).basisDescription == "history: \(alone)")
        #expect(Self.estimate(speed: 32 * Self.mib, history: Self.history).basisDescription
            == "policy speed 32.0 MiB/s per disk (history: \(alone), faster)")
        #expect(Self.estimate(speed: 128 * Self.mib, history: Self.history).basisDescription
            == "history: \(alone) (below the policy speed 128.0 MiB/s)")
        #expect(Self.estimate(speed: 0, history: Self.shared).basisDescription
            == "history: median 64.0 MiB/s per disk alone over 3 stream copies; 96.0 MiB/s in all with several at once (median over 4 copies)")
        let onlyShared = HistoryRate(strategy: .mirror, bytesPerSecond: 96 * 1_048_576, copies: 2, aggregateBytesPerSecond: 96 * 1_048_576, sharedCopies: 2)
        #expect(Self.estimate(speed: 0, history: onlyShared).basisDescription
            == "history: no mirror copy alone (one disk alone taken to reach the whole rate); 96.0 MiB/s in all with several at once (median over 2 copies)")
    }

    /// 64 MiB/s for a disk alone, 96 MiB/s in all for several at once.
    static let shared = HistoryRate(strategy: .stream, bytesPerSecond: 64 * 1_048_576, copies: 7,
                                    aggregateBytesPerSecond: 96 * 1_048_576, sharedCopies: 4)

    @Test func disksCopyingAtOnceShareWhatTheHostMovesInAll() throws {
        // 64 and 32 MiB at once, 48 MiB/s each: the 32 MiB disk ends at 2/3 s (the 64 MiB
        // one has 32 MiB left); then 96 MiB starts, and the two go on at 48 MiB/s each until
        // the 64 MiB disk ends at 4/3 s; the 96 MiB disk, 64 MiB left, goes alone at 64 MiB/s.
        let estimate = Self.estimate(speed: 0, history: Self.shared)
        let timings = try #require(estimate.timings)
        #expect(abs(timings[1].end - 2.0 / 3) < 1e-9 && abs(timings[0].end - 4.0 / 3) < 1e-9, "\(timings)")
        #expect(abs(timings[2].start - 2.0 / 3) < 1e-9 && abs(timings[2].end - (4.0 / 3 + 1)) < 1e-9, "\(timings)")
        // A policy speed below the host's share is not slowed: 2 × 32 MiB/s fit in 96.
        let throttled = Self.estimate(speed: 32 * Self.mib, history: Self.shared)
        #expect(throttled.seconds == (32 + 96) / 32.0)
    }

    @Test func withNeitherSpeedNorHistoryThereIsNoEstimate() {
        let estimate = Self.estimate(speed: 0, history: nil)
        #expect(estimate.basis == .none)
        #expect(estimate.seconds == nil && estimate.timings == nil && estimate.bytesPerSecond == nil)
        #expect(estimate.basisDescription.hasPrefix("no estimate"))
        // A history rate of nothing is no history.
        let useless = HistoryRate(strategy: .stream, bytesPerSecond: 0, copies: 3)
        #expect(Self.estimate(speed: 0, history: useless).basis == .none)
    }

    @Test func theOverheadIsAddedToEachDisk() throws {
        let estimate = Self.estimate(speed: 32 * Self.mib, history: nil, bytes: [32 << 20, 32 << 20, 32 << 20], slots: 2, overhead: 0.5)
        #expect(try #require(estimate.seconds) == 3)
        #expect(estimate.timings?.map(\.start) == [0, 0, 1.5])
    }
}
