import LivecopyModel

/// A `block-stream` job simulated in time: it walks a disk front to back, through
/// allocated bytes at `dataRate` (its rate limit) and over holes at `holeRate` (almost at
/// once, as QEMU skips them). Gives the job's offset at any simulated time, and the true
/// time left, to check estimates against.
struct SimulatedStream {
    /// A stretch of the disk the job crosses at one speed.
    private struct Stretch {
        let start: Int64
        let end: Int64
        let rate: Double
        /// When the job reaches `start`, in simulated seconds.
        let reachedAt: Double
    }

    let map: AllocationMap
    let diskSize: Int64
    /// Simulated seconds from offset 0 to the disk's end.
    let duration: Double
    private let stretches: [Stretch]

    init(map: AllocationMap, dataRate: Double, holeRate: Double) {
        self.map = map
        diskSize = map.diskSize
        var stretches: [Stretch] = []
        var position: Int64 = 0
        var time = 0.0
        func cross(to end: Int64, rate: Double) {
            guard end > position else { return }
            stretches.append(Stretch(start: position, end: end, rate: rate, reachedAt: time))
            time += Double(end - position) / rate
            position = end
        }
        for extent in map.extents {
            cross(to: extent.start, rate: holeRate)
            cross(to: extent.end, rate: dataRate)
        }
        cross(to: map.diskSize, rate: holeRate)
        self.stretches = stretches
        duration = time
    }

    /// The job's offset at simulated time `time` (the disk's size once it is done).
    func offset(at time: Double) -> Int64 {
        guard let stretch = stretches.last(where: { $0.reachedAt <= time }) else { return 0 }
        let moved = (time - stretch.reachedAt) * stretch.rate
        return moved >= Double(stretch.end - stretch.start) ? stretch.end : stretch.start + Int64(moved)
    }

    /// The true time left at simulated time `time`.
    func timeLeft(at time: Double) -> Double {
        max(0, duration - time)
    }
}
