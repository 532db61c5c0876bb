// Where a disk's data lies: `AllocationMap`, the allocated ranges of an image chain.

/// The byte ranges of a disk that hold something to copy (allocated somewhere in the
/// image chain), sorted, merged and clipped to the disk, with a running sum so that
/// "allocated bytes below an offset" costs one binary search.
///
/// A `block-stream` job walks its disk front to back and spends its time (and its rate
/// limit) only on such ranges; it skips the others almost at once. So allocated bytes
/// below the job's offset is the part of the real work done.
public struct AllocationMap: Sendable, Equatable {
    /// One allocated range: `start ..< start + length`.
    public struct Extent: Sendable, Equatable {
        public let start: Int64
        public let length: Int64
        public init(start: Int64, length: Int64) {
            self.start = start
            self.length = length
        }
        /// One past the last byte; saturates rather than trap on absurd input.
        public var end: Int64 {
            let (sum, overflow) = start.addingReportingOverflow(length)
            return overflow ? .max : sum
        }
    }

    /// The allocated ranges: sorted, non-empty, not touching or overlapping, within the disk.
    public let extents: [Extent]
    /// The disk's size the extents were clipped to.
    public let diskSize: Int64
    /// Allocated bytes in all extents (never more than `diskSize`).
    public let allocatedBytes: Int64
    /// `allocatedBefore[i]`: allocated bytes in `extents[0 ..< i]`.
    private let allocatedBefore: [Int64]

    /// Builds the map from extents in any order, possibly overlapping, empty or reaching
    /// past the disk's end: they are clipped to `0 ..< diskSize`, sorted and merged.
    public init(extents given: [Extent], diskSize: Int64) {
        let size = max(0, diskSize)
        let clipped = given.compactMap { extent -> Extent? in
            let start = max(0, extent.start)
            let end = min(size, extent.end)
            return start < end ? Extent(start: start, length: end - start) : nil
        }.sorted { $0.start < $1.start }
        var merged: [Extent] = []
        for extent in clipped {
            if let last = merged.last, extent.start <= last.end {
                merged[merged.count - 1] = Extent(start: last.start, length: max(last.end, extent.end) - last.start)
            } else {
                merged.append(extent)
            }
        }
        // Merged extents lie within 0 ..< size, so no running sum exceeds size.
        var before: [Int64] = []
        before.reserveCapacity(merged.count)
        var sum: Int64 = 0
        for extent in merged {
            before.append(sum)
            sum += extent.length
        }
        self.extents = merged
        self.diskSize = size
        self.allocatedBytes = sum
        self.allocatedBefore = before
    }

    /// Allocated bytes in `0 ..< offset` (0 below the disk, all of them past its end).
    public func allocatedBytes(below offset: Int64) -> Int64 {
        // The first extent that starts at or after `offset`; the one before may contain it.
        var low = 0
        var high = extents.count
        while low < high {
            let middle = (low + high) / 2
            if extents[middle].start < offset { low = middle + 1 } else { high = middle }
        }
        guard low > 0 else { return 0 }
        let previous = extents[low - 1]
        return allocatedBefore[low - 1] + min(previous.length, offset - previous.start)
    }

    /// Whether some extent shares a byte with `start ..< start + length`.
    public func overlaps(start: Int64, length: Int64) -> Bool {
        guard length > 0 else { return false }
        let end = start.addingReportingOverflow(length).overflow ? Int64.max : start + length
        return allocatedBytes(below: end) > allocatedBytes(below: start)
    }
}
