// Runs of clusters, and the set operations `ComparisonPlan` makes on them.

/// The clusters `start ..< end` (cluster numbers: byte offset / cluster size). Lists of
/// them, as the static functions take and give them, are sorted, without overlaps.
struct ClusterSpan: Sendable, Equatable {
    var start: Int64
    var end: Int64

    init(start: Int64, end: Int64) {
        self.start = start
        self.end = end
    }

    /// The clusters a byte range touches: partial ones at its ends included.
    init(bytes: AllocationMap.Extent, clusterSize: Int64) {
        start = bytes.start / clusterSize
        let end = bytes.end
        self.end = end / clusterSize + (end % clusterSize == 0 ? 0 : 1)
    }

    var count: Int64 { end - start }

    /// Spans in any order, overlapping or touching, as a sorted list of disjoint,
    /// non-touching spans; empty ones dropped.
    static func union(_ spans: [ClusterSpan]) -> [ClusterSpan] {
        var merged: [ClusterSpan] = []
        for span in spans.filter({ $0.start < $0.end }).sorted(by: { $0.start < $1.start }) {
            if let last = merged.last, span.start <= last.end {
                merged[merged.count - 1].end = max(last.end, span.end)
            } else {
                merged.append(span)
            }
        }
        return merged
    }

    /// The clusters of `spans` that are not in `removed` (both sorted and disjoint).
    static func subtracting(_ removed: [ClusterSpan], from spans: [ClusterSpan]) -> [ClusterSpan] {
        var result: [ClusterSpan] = []
        var next = 0  // the first of `removed` that may still overlap
        for span in spans {
            var start = span.start
            while next < removed.count && removed[next].end <= start { next += 1 }
            var index = next
            while index < removed.count && removed[index].start < span.end {
                if removed[index].start > start { result.append(ClusterSpan(start: start, end: removed[index].start)) }
                start = max(start, removed[index].end)
                index += 1
            }
            if start < span.end { result.append(ClusterSpan(start: start, end: span.end)) }
        }
        return result
    }

    static func count(_ spans: [ClusterSpan]) -> Int64 {
        spans.reduce(0) { $0 + $1.count }
    }

    /// The first cluster of `spans` (sorted, disjoint) inside `range`, if any.
    static func firstCluster(of spans: [ClusterSpan], in range: ClusterSpan) -> Int64? {
        // The first span ending after the range's start.
        var low = 0
        var high = spans.count
        while low < high {
            let middle = (low + high) / 2
            if spans[middle].end <= range.start { low = middle + 1 } else { high = middle }
        }
        guard low < spans.count else { return nil }
        let first = max(range.start, spans[low].start)
        return first < range.end ? first : nil
    }

    /// The last cluster of `spans` (sorted, disjoint) inside `range`, if any.
    static func lastCluster(of spans: [ClusterSpan], in range: ClusterSpan) -> Int64? {
        // The first span starting at or after the range's end; the one before may reach into it.
        var low = 0
        var high = spans.count
        while low < high {
            let middle = (low + high) / 2
            if spans[middle].start < range.end { low = middle + 1 } else { high = middle }
        }
        guard low > 0 else { return nil }
        let last = min(range.end, spans[low - 1].end) - 1
        return last >= range.start ? last : nil
    }

    /// The bytes of `spans`, clipped to `diskSize`, in ranges of at most `longest` bytes
    /// (cut at cluster boundaries when a cluster is no longer than that).
    static func byteRanges(_ spans: [ClusterSpan], clusterSize: Int64, diskSize: Int64, longest: Int64) -> [AllocationMap.Extent] {
        let piece = clusterSize <= longest ? longest / clusterSize * clusterSize : longest
        func offset(_ cluster: Int64) -> Int64 {
            let (product, overflow) = cluster.multipliedReportingOverflow(by: clusterSize)
            return overflow ? .max : min(product, diskSize)
        }
        var ranges: [AllocationMap.Extent] = []
        for span in spans {
            var start = offset(span.start)
            let end = offset(span.end)
            while start < end {
                let length = min(piece, end - start)
                ranges.append(AllocationMap.Extent(start: start, length: length))
                start += length
            }
        }
        return ranges
    }
}
