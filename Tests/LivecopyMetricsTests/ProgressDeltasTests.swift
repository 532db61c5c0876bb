import LivecopyEngine
import Testing

/// The counter's increments from a job's offsets: never negative, a restarted job's offset
/// counted from zero, the rate between two reports of one job.
struct ProgressDeltasTests {
    @Test func offsetsOfOneJobAddTheirDifferences() {
        var deltas = ProgressDeltas()
        #expect(deltas.advance(done: 0, at: .seconds(0)) == .init(copied: 0, bytesPerSecond: nil))
        #expect(deltas.advance(done: 10, at: .seconds(1)) == .init(copied: 10, bytesPerSecond: 10))
        #expect(deltas.advance(done: 30, at: .seconds(3)) == .init(copied: 20, bytesPerSecond: 10))
        #expect(deltas.advance(done: 30, at: .seconds(4)) == .init(copied: 0, bytesPerSecond: 0), "a stalled job: no bytes, rate 0")
    }

    @Test func theFirstReportSeenCountsTheWholeOffset() {
        var deltas = ProgressDeltas()
        #expect(deltas.advance(done: 1000, at: .seconds(5)).copied == 1000, "a job re-attached after a crash: its offset so far")
    }

    @Test func anOffsetGoingBackwardsIsANewJobAndNeverDecreasesTheCounter() {
        var deltas = ProgressDeltas()
        var counter: Int64 = 0
        for (done, second) in [(0, 0), (40, 1), (80, 2), /* restart */ (5, 3), (25, 4), /* again */ (0, 5), (10, 6)] {
            let step = deltas.advance(done: Int64(done), at: .seconds(second))
            #expect(step.copied >= 0)
            counter += step.copied
        }
        #expect(counter == 80 + 25 + 10, "each job's advance, summed")
        #expect(deltas.advance(done: 20, at: .seconds(8)).bytesPerSecond == 5, "the rate is measured within the new job")
    }

    @Test func twoReportsAtOneInstantGiveNoRate() {
        var deltas = ProgressDeltas()
        _ = deltas.advance(done: 10, at: .seconds(1))
        #expect(deltas.advance(done: 12, at: .seconds(1)) == .init(copied: 2, bytesPerSecond: nil))
        #expect(deltas.advance(done: 12, at: .seconds(2)) == .init(copied: 0, bytesPerSecond: 0))
        _ = deltas.advance(done: -5, at: .seconds(3))  // nonsense from a backend counts as a new job at 0
        #expect(deltas.advance(done: 7, at: .seconds(4)).copied == 7)
    }
}
