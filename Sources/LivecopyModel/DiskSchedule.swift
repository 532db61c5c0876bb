// The order in which a plan's disks are copied and, given how long each copy takes, when
// each would start and end: `DiskSchedule`, shared by the engine (which runs the disks)
// and `validate` (which estimates the plan's duration).

/// How a plan's disks share its `max_parallel_disks` slots.
///
/// A run starts the disks that are not final in the order they were recorded (the plan's
/// order), at most `slots` at once; each further disk starts the moment any running one
/// ends. A mirror disk whose copy is READY keeps its slot until it pivots, and it pivots
/// together with the other mirror disks of its VM that are still copying (a disk not
/// started yet is not waited for), or without them after `pivotPatience` seconds
/// (`MirrorPivots`). `simulate` plays that out for known copy durations.
///
/// Pure: no clock, no I/O.
public struct DiskSchedule: Sendable, Equatable {
    /// How long a mirror disk READY waits for the other mirror disks of its VM before it
    /// pivots without them, in seconds (the engine's `MirrorPivots` default).
    public static let defaultPivotPatience: Double = 60

    /// How many disks are copied at once: `max_parallel_disks`, at least 1.
    public let slots: Int
    /// See `defaultPivotPatience`.
    public let pivotPatience: Double

    public init(maxParallelDisks: Int, pivotPatience: Double = DiskSchedule.defaultPivotPatience) {
        self.slots = max(1, maxParallelDisks)
        self.pivotPatience = max(0, pivotPatience)
    }

    /// The disks a run drives, in the order it starts them: those not settled (a final
    /// disk only for a hook left pending by a crash, which needs no slot for long), in the
    /// order they were recorded.
    public static func runOrder(_ disks: [DiskRecord]) -> [DiskRecord] {
        disks.sorted { $0.id < $1.id }.filter { !$0.isSettled }
    }

    /// One disk to schedule: how long its copy runs, and the pivot group it belongs to.
    public struct Item: Sendable, Equatable {
        /// Seconds from the disk's start until its copy is done (a mirror: READY).
        public let duration: Double
        /// Mirror disks of one VM share a group (they pivot together); nil for a disk that
        /// ends alone (the stream strategy).
        public let pivotGroup: String?

        public init(duration: Double, pivotGroup: String? = nil) {
            self.duration = duration
            self.pivotGroup = pivotGroup
        }
    }

    /// When one disk starts and ends, in seconds from the plan's start.
    public struct Timing: Sendable, Equatable {
        public let start: Double
        public let end: Double
        /// Started at once, with the plan (the first `slots` disks).
        public let firstWave: Bool

        public init(start: Double, end: Double, firstWave: Bool) {
            self.start = start
            self.end = end
            self.firstWave = firstWave
        }
    }

    /// When each of `items` (in run order) starts and ends. A negative or non-finite
    /// duration counts as 0.
    ///
    /// `pace(k)` is how fast each copying disk progresses while `k` copy at once, as a
    /// share of its lone pace (1: copies do not slow each other; 0.5: each takes twice as
    /// long): an item's `duration` is its copy alone. A value outside (0, 1] counts as 1.
    public func simulate(_ items: [Item], pace: (Int) -> Double = { _ in 1 }) -> [Timing] {
        var starts = [Double](repeating: 0, count: items.count)
        var ends = [Double](repeating: 0, count: items.count)
        var firstWave = [Bool](repeating: false, count: items.count)
        var next = 0
        var now = 0.0
        var initialFill = true
        /// Disks copying, by index, with the seconds of lone copying each has left.
        var copying: [Int: Double] = [:]
        func share(_ k: Int) -> Double {
            let value = pace(k)
            return value.isFinite && value > 0 && value <= 1 ? value : 1
        }
        /// Mirror disks READY, holding their slots, by pivot group: since when the first
        /// of them waits, and which they are.
        var waiting: [String: (since: Double, members: [Int])] = [:]

        while true {
            while next < items.count, copying.count + waiting.values.reduce(0, { $0 + $1.members.count }) < slots {
                let duration = items[next].duration
                starts[next] = now
                firstWave[next] = initialFill
                copying[next] = duration.isFinite ? max(0, duration) : 0
                next += 1
            }
            initialFill = false
            if copying.isEmpty && waiting.isEmpty { break }

            let speed = share(copying.count)
            var event = copying.values.min().map { now + $0 / speed } ?? .infinity
            for group in waiting.values { event = min(event, group.since + pivotPatience) }
            let elapsed = event - now
            now = event
            for index in copying.keys { copying[index]! -= elapsed * speed }

            // A copy whose remainder is a rounding error has ended.
            for index in copying.keys.sorted() where copying[index]! <= 1e-9 {
                copying[index] = nil
                if let group = items[index].pivotGroup {
                    waiting[group, default: (since: now, members: [])].members.append(index)
                } else {
                    ends[index] = now
                }
            }
            for group in waiting.keys.sorted() {
                guard let ready = waiting[group] else { continue }
                let othersCopying = copying.keys.contains { items[$0].pivotGroup == group }
                guard !othersCopying || now >= ready.since + pivotPatience else { continue }
                for member in ready.members { ends[member] = now }
                waiting[group] = nil
            }
        }
        return items.indices.map { Timing(start: starts[$0], end: ends[$0], firstWave: firstWave[$0]) }
    }
}
