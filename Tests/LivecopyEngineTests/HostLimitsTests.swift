@testable import LivecopyEngine
import LivecopyModel
import Synchronization
import Testing

/// serve's host limits without QEMU: the budget's order of changes keeps the sum of the
/// speeds jobs run at within the budget after every single change, and the slots admit
/// at most their limit, first come first served. (ServeIntegrationTests checks the same
/// against real QEMU.)
@Suite struct HostLimitsTests {
    /// The speeds "QEMU" runs each job at, changed one call at a time, and the largest sum seen.
    final class Jobs: Sendable {
        private let speeds = Mutex<[String: Int64]>([:])
        private let worst = Mutex<Int64>(0)
        var largestSum: Int64 { worst.withLock { $0 } }
        func speed(_ id: String) -> Int64? { speeds.withLock { $0[id] } }

        func set(_ id: String, _ speed: Int64?) {
            let sum = speeds.withLock { speeds -> Int64 in
                speeds[id] = speed
                return speeds.values.reduce(0) { $0 + ($1 == 0 ? Int64.max / 4 : $1) }
            }
            worst.withLock { $0 = max($0, sum) }
        }

        func job(_ id: String) -> BudgetedJob {
            BudgetedJob(jobId: id, setSpeed: { speed in self.set(id, speed) }, record: { _ in })
        }
    }

    @Test func jobsStartingAndEndingNeverExceedTheBudget() async throws {
        let jobs = Jobs()
        let budget = BandwidthBudget(total: 300)
        for id in 1...5 {
            try await budget.start(diskId: Int64(id), wanted: id == 2 ? 40 : 0, job: jobs.job("j\(id)")) { speed in
                jobs.set("j\(id)", speed)
            }
        }
        #expect(jobs.largestSum <= 300)
        #expect(jobs.speed("j2") == 40, "a job wanting less than its share gets what it wants")
        #expect(jobs.speed("j1") == 65 && jobs.speed("j5") == 65, "the others share the rest")
        jobs.set("j1", nil)  // the job ends in QEMU, then its drive leaves the budget
        await budget.release(diskId: 1)
        await budget.change(diskId: 2, wanted: 0)
        #expect(jobs.largestSum <= 300)
        #expect(jobs.speed("j2") == 75 && jobs.speed("j3") == 75)
        await budget.setTotal(100)
        #expect(jobs.speed("j3") == 25)
        #expect(jobs.largestSum <= 300)
        await budget.setTotal(nil)
        #expect(jobs.speed("j3") == 0 && jobs.speed("j2") == 0, "no budget: each job at its own speed (0: unlimited)")
    }

    @Test func anExpectedJobHoldsItsShareUntilItAttachesOrEnds() async throws {
        let jobs = Jobs()
        let budget = BandwidthBudget(total: 100)
        // Job 1 ran at 50 before a restart; job 2 re-attaches first.
        jobs.set("j1", 50)
        await budget.expect(diskIds: [1, 2])
        await budget.attach(diskId: 2, wanted: 0, job: jobs.job("j2"))
        #expect(jobs.speed("j2") == 50, "not raised into the share job 1 may still use")
        #expect(jobs.largestSum <= 100)
        await budget.release(diskId: 1)
        #expect(jobs.speed("j2") == 100)
    }

    @Test func aFailedStartGivesItsShareBack() async throws {
        let jobs = Jobs()
        let budget = BandwidthBudget(total: 100)
        try await budget.start(diskId: 1, wanted: 0, job: jobs.job("j1")) { jobs.set("j1", $0) }
        struct Refused: Error {}
        await #expect(throws: Refused.self) {
            try await budget.start(diskId: 2, wanted: 0, job: jobs.job("j2")) { _ in throw Refused() }
        }
        #expect(jobs.speed("j1") == 100)
        #expect(jobs.largestSum <= 100)
        await budget.freeze()
        await budget.release(diskId: 1)
        #expect(jobs.speed("j1") == 100, "a frozen budget changes nothing")
    }

    @Test func slotsAdmitAtMostTheirLimitInOrder() async throws {
        let slots = HostSlots(limit: 2)
        #expect(await slots.acquire())
        #expect(await slots.acquire())
        let third = Task { await slots.acquire() }
        let fourth = Task { await slots.acquire() }
        while await slots.counts.waiting < 2 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(await slots.counts.inUse == 2)
        fourth.cancel()
        #expect(await fourth.value == false, "a cancelled waiter takes no slot")
        await slots.release()
        #expect(await third.value == true)
        #expect(await slots.counts.inUse == 2)
        await slots.setLimit(nil)
        #expect(await slots.acquire(), "no limit: at once")
    }
}
