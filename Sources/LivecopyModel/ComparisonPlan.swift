// Which parts of a copy are compared before its source is retired: `ComparisonPlan`
// (verified retirement, issue 16). Pure: no I/O.

/// The byte ranges where a copy's source and destination must hold the same data, and
/// how many clusters that is.
///
/// The unit is the cluster: `clusterSize` bytes, aligned to `clusterSize`. The clusters
/// of the source are those its allocated ranges touch (a range's partial clusters at
/// its ends count whole). A cluster that a dirty range touches (one the guest wrote
/// since the switch) is never compared; the others are clean. The compared bytes are
/// whole clusters, clipped to the disk's size.
///
/// - `full`: every clean cluster.
/// - `sample`: the first and last clean cluster of each allocated range, plus a random
///   choice of other clean clusters, without repetition: `count` of them, or `fraction`
///   × all clean clusters rounded up, capped at what there is. The choice depends only on
///   the inputs and `seed` (SplitMix64, drawn the same way on every platform), so a
///   recorded seed replays it.
///
/// `ranges` are sorted, adjacent chosen clusters merged, each range at most
/// `longestRange` bytes (cut at cluster boundaries when a cluster is smaller).
public struct ComparisonPlan: Sendable, Equatable {
    /// How much of the clean data is compared.
    public enum Selection: Sendable, Equatable {
        /// Every clean cluster.
        case full
        /// Each allocated range's first and last clean cluster, and `count` more at random.
        case sample(count: Int)
        /// Each allocated range's first and last clean cluster, and at random the fraction
        /// (0 to 1) of all clean clusters, rounded up.
        case sampleFraction(Double)
    }

    /// The longest range in `ranges`: what one read of each side holds.
    public static let longestRange: Int64 = 4 * 1024 * 1024

    /// The byte ranges to compare: sorted, not overlapping, within the disk.
    public let ranges: [AllocationMap.Extent]
    /// Clean clusters: allocated in the source, touched by no dirty range.
    public let cleanClusters: Int64
    /// Clusters chosen for the comparison (all clean).
    public let chosenClusters: Int64
    /// Bytes in `ranges`.
    public let chosenBytes: Int64
    /// Allocated clusters skipped because a dirty range touches them.
    public let dirtyClusters: Int64
    public let clusterSize: Int64
    public let selection: Selection
    public let seed: UInt64

    /// Plans the comparison of the clusters of `sourceAllocation` (its disk size clips the
    /// ranges) that no range of `dirty` touches. `clusterSize` must be positive.
    public init(sourceAllocation: AllocationMap, dirty: AllocationMap, clusterSize: Int64, selection: Selection, seed: UInt64) {
        precondition(clusterSize > 0, "a comparison's cluster size must be positive")
        self.clusterSize = clusterSize
        self.selection = selection
        self.seed = seed
        let extents = sourceAllocation.extents.map { ClusterSpan(bytes: $0, clusterSize: clusterSize) }
        let allocated = ClusterSpan.union(extents)
        let clean = ClusterSpan.subtracting(
            ClusterSpan.union(dirty.extents.map { ClusterSpan(bytes: $0, clusterSize: clusterSize) }), from: allocated)
        let cleanCount = ClusterSpan.count(clean)
        cleanClusters = cleanCount
        dirtyClusters = ClusterSpan.count(allocated) - cleanCount

        let chosen: [ClusterSpan]
        switch selection {
        case .full:
            chosen = clean
        case .sample(let count):
            chosen = Self.sample(clean: clean, extents: extents, wanted: Int64(max(0, count)), seed: seed)
        case .sampleFraction(let fraction):
            let share = fraction.isNaN ? 0 : min(1, max(0, fraction))
            let wanted = (share * Double(cleanCount)).rounded(.up)
            let count = wanted < Double(cleanCount) ? Int64(wanted) : cleanCount
            chosen = Self.sample(clean: clean, extents: extents, wanted: count, seed: seed)
        }
        chosenClusters = ClusterSpan.count(chosen)
        ranges = ClusterSpan.byteRanges(chosen, clusterSize: clusterSize, diskSize: sourceAllocation.diskSize,
                                        longest: Self.longestRange)
        chosenBytes = ranges.reduce(0) { $0 + $1.length }
    }

    /// Each extent's first and last clean cluster, and `wanted` more clean clusters (or
    /// all there are) drawn at random.
    private static func sample(clean: [ClusterSpan], extents: [ClusterSpan], wanted: Int64, seed: UInt64) -> [ClusterSpan] {
        var ends: [Int64] = []
        for extent in extents {
            if let first = ClusterSpan.firstCluster(of: clean, in: extent) { ends.append(first) }
            if let last = ClusterSpan.lastCluster(of: clean, in: extent) { ends.append(last) }
        }
        let mandatory = ClusterSpan.union(ends.map { ClusterSpan(start: $0, end: $0 + 1) })
        let pool = ClusterSpan.subtracting(mandatory, from: clean)
        var generator = SplitMix64(seed: seed)
        let drawn = ClusterDraw.choose(min(wanted, ClusterSpan.count(pool)), from: pool, using: &generator)
        return ClusterSpan.union(mandatory + drawn)
    }
}

extension ComparisonPlan.Selection {
    /// For the record: what is compared, with the sample's seed.
    public func summary(seed: UInt64) -> String {
        switch self {
        case .full: return "verify: full"
        case .sample(let count): return "verify: sample of \(count) clusters plus each extent's first and last, seed \(seed)"
        case .sampleFraction(let share):
            return "verify: sample of \(VerifySample.fraction(share)) of the clusters plus each extent's first and last, seed \(seed)"
        }
    }
}
