// `ProgressDeltas`: from a copy job's successive offsets, the bytes each report adds and
// the rate between two reports.

/// Turns a disk's successive progress reports into increments of a counter that never
/// goes down. A job's offset only grows, so an offset below the last one is a new job (one
/// restarted after a crash, or started again when a failed disk resumes): its whole offset
/// is new work. The first report seen counts its whole offset too: the counter ends at the
/// bytes the job advanced, whoever watched it before.
public struct ProgressDeltas: Sendable {
    /// What one report adds.
    public struct Step: Sendable, Equatable {
        /// Bytes to add to the counter (never negative).
        public let copied: Int64
        /// Bytes per second since the previous report of the same job; nil for the first
        /// report of a job, or when no time passed.
        public let bytesPerSecond: Double?

        public init(copied: Int64, bytesPerSecond: Double?) {
            self.copied = copied
            self.bytesPerSecond = bytesPerSecond
        }
    }

    private var last: (done: Int64, at: Duration)?

    public init() {}

    /// The step from the previous report to this one: `done` bytes at `at` (time since a
    /// fixed origin, on a monotonic clock).
    public mutating func advance(done: Int64, at: Duration) -> Step {
        let done = max(done, 0)
        guard let last, done >= last.done else {
            self.last = (done, at)
            return Step(copied: done, bytesPerSecond: nil)
        }
        let copied = done - last.done
        let interval = at - last.at
        guard interval > .zero else {
            self.last = (done, last.at)
            return Step(copied: copied, bytesPerSecond: nil)
        }
        self.last = (done, at)
        let seconds = Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18
        return Step(copied: copied, bytesPerSecond: Double(copied) / seconds)
    }
}
