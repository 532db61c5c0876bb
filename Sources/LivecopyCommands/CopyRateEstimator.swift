// How fast a copy job really copies, and when it ends: `CopyRateEstimator`.

import LivecopyModel

/// Estimates a copy job's rate and time left from samples of its offset, counting only
/// the bytes the job really copies.
///
/// A `block-stream` job walks its disk front to back; its offset (QEMU's
/// `current-progress`) also moves over unallocated ranges, which the job skips almost at
/// once and which its rate limit does not count. Measured on the offset, a stream
/// throttled to 32 MiB/s over a sparse disk seems to run at several times that, and its
/// ETA is far too long. Given the disk's `AllocationMap`, the estimator measures instead
/// the allocated bytes below the offset: the work done, in the unit the rate limit uses.
/// Without a map, every byte counts (the offset itself, as before the map existed).
///
/// The rate is the work done over a sliding window of the last `window` of samples
/// (10 s by default): work between the newest sample and the last one at or before the
/// window's start, divided by the time between them. Over a whole window the few
/// milliseconds spent skipping holes weigh little, whatever the sampling interval, and
/// a change of speed (a `livecopy throttle`, a pause) is fully reflected after one
/// window, no later. Times come from the caller (a monotonic clock), never from `Date()`.
///
/// Limits, both small: ranges the destination already holds (guest writes, reads copied
/// on read, an earlier job's copy when a stream is resumed) count as work but are skipped
/// fast, so the rate runs high while the job crosses them; and the ETA leaves out the
/// time spent skipping holes (milliseconds, seen only when a long hole ends the disk).
///
/// Pure and value-typed: no clock, no I/O, no locking.
struct CopyRateEstimator: Sendable {
    /// The rate's default window: long enough to average over holes and QEMU's bursty
    /// rate limiting, short enough to follow a change of speed.
    static let defaultWindow: Duration = .seconds(10)
    /// No rate is given before the samples span this long (one poll would be noise).
    static let minimumSpan: Duration = .milliseconds(200)
    /// At most this many samples are kept (a window's worth at any sane poll interval).
    static let maximumSamples = 1024
    /// An ETA beyond this is no ETA (as good as stalled).
    static let longestTimeLeft: Double = 1e9

    /// One offset and when it was seen, in seconds from the caller's clock origin.
    private struct Sample {
        let offset: Int64
        let seconds: Double
    }

    /// The job's length (QEMU's `total-progress`).
    let total: Int64
    /// Where the data to copy lies, when known; nil: every byte of the disk counts.
    private(set) var map: AllocationMap?
    private let windowSeconds: Double
    private let minimumSpanSeconds: Double
    private var samples: [Sample] = []
    /// The newest offset seen (nil before the first sample).
    private(set) var offset: Int64?

    init(total: Int64, map: AllocationMap?, window: Duration = defaultWindow) {
        self.total = max(0, total)
        self.map = map
        self.windowSeconds = max(Self.seconds(window), Self.seconds(Self.minimumSpan))
        self.minimumSpanSeconds = Self.seconds(Self.minimumSpan)
    }

    /// Takes a map read after the first samples: the samples kept are offsets, so the
    /// rate is at once measured in allocated bytes.
    mutating func adopt(_ map: AllocationMap) {
        self.map = map
    }

    /// Records that the job was at `offset` at `time` (from the caller's monotonic clock).
    /// An offset below the previous one is a new job (a resumed stream starts again from
    /// 0): the samples of the old one are dropped. A time not after the previous sample's
    /// moves the offset but takes no part in the rate.
    mutating func record(offset newOffset: Int64, at time: Duration) {
        let seconds = Self.seconds(time)
        if let previous = offset, newOffset < previous { samples.removeAll() }
        offset = newOffset
        if let last = samples.last, !(seconds > last.seconds) { return }
        guard seconds.isFinite else { return }
        samples.append(Sample(offset: newOffset, seconds: seconds))
        // Keep the last sample at or before the window's start, and every one after it.
        let windowStart = seconds - windowSeconds
        var drop = 0
        while drop + 1 < samples.count - 1, samples[drop + 1].seconds <= windowStart { drop += 1 }
        drop = max(drop, samples.count - Self.maximumSamples)
        if drop > 0 { samples.removeFirst(drop) }
    }

    /// Bytes the whole copy does: allocated bytes with a map, else the job's length.
    var bytesToCopy: Int64 {
        map.map { min($0.allocatedBytes, total) } ?? total
    }

    /// Bytes copied so far: allocated bytes below the offset with a map, else the offset.
    var bytesCopied: Int64 {
        offset.map(work(below:)) ?? 0
    }

    /// Bytes still to copy.
    var bytesLeft: Int64 {
        max(0, bytesToCopy - bytesCopied)
    }

    /// Bytes copied per second over the window (in the unit of `bytesCopied`); nil until
    /// the samples span `minimumSpan`.
    var rate: Double? {
        guard let first = samples.first, let last = samples.last else { return nil }
        let span = last.seconds - first.seconds
        guard span >= minimumSpanSeconds else { return nil }
        // In Double: sizes QEMU reports (from an image's header) may be anything.
        let rate = (Double(work(below: last.offset)) - Double(work(below: first.offset))) / span
        return rate.isFinite ? max(0, rate) : nil
    }

    /// Time left at the current rate: zero when nothing is left to copy; nil when it
    /// cannot be told (no rate yet, a stalled job, or longer than `longestTimeLeft`).
    var timeLeft: Duration? {
        let left = bytesLeft
        if left == 0 && offset != nil { return .zero }
        guard let rate, rate > 0 else { return nil }
        let seconds = Double(left) / rate
        guard seconds.isFinite, seconds < Self.longestTimeLeft else { return nil }
        return .milliseconds(Int64(seconds * 1000))
    }

    /// Work done when the job is at `offset`: allocated bytes below it, or the offset.
    private func work(below offset: Int64) -> Int64 {
        let position = min(max(0, offset), total)
        guard let map else { return position }
        return min(map.allocatedBytes(below: position), total)
    }

    private static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}
