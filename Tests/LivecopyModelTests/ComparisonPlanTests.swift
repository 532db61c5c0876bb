import LivecopyModel
import PropertyBased
import Testing

/// `ComparisonPlan`: which clusters of a copy are compared, checked cluster by cluster
/// against a plain reading of its definition on small random disks.
@Suite struct ComparisonPlanTests {
    /// A small disk: its size, the source's allocated ranges, the dirty ranges, a cluster size.
    struct Disk: Sendable, CustomStringConvertible {
        let size: Int64
        let allocated: [AllocationMap.Extent]
        let dirty: [AllocationMap.Extent]
        let clusterSize: Int64

        var allocation: AllocationMap { AllocationMap(extents: allocated, diskSize: size) }
        var dirtyMap: AllocationMap { AllocationMap(extents: dirty, diskSize: size) }
        var clusters: Int64 { (size + clusterSize - 1) / clusterSize }

        func bytes(ofCluster cluster: Int64) -> Range<Int64> {
            cluster * clusterSize ..< min(size, (cluster + 1) * clusterSize)
        }
        func touches(_ extents: [AllocationMap.Extent], _ cluster: Int64) -> Bool {
            let bytes = cluster * clusterSize ..< (cluster + 1) * clusterSize
            return extents.contains { $0.length > 0 && $0.start < bytes.upperBound && bytes.lowerBound < $0.end }
        }
        /// Clean: a cluster some allocated range touches and no dirty range does (as the map clipped them).
        func isClean(_ cluster: Int64) -> Bool {
            touches(allocation.extents, cluster) && !touches(dirtyMap.extents, cluster)
        }
        var cleanClusters: [Int64] { (0 ..< clusters).filter(isClean) }
        /// Each allocated extent's first and last clean cluster.
        var extentEnds: [Int64] {
            allocation.extents.flatMap { extent -> [Int64] in
                let clean = (extent.start / clusterSize ... (extent.end - 1) / clusterSize).filter(isClean)
                return [clean.first, clean.last].compactMap { $0 }
            }
        }
        var description: String { "size \(size), cluster \(clusterSize), allocated \(allocated), dirty \(dirty)" }
    }

    static func extents(_ length: ClosedRange<Int64>, _ count: ClosedRange<Int>) -> Generator<[AllocationMap.Extent], some SendableSequenceType> {
        zip(Gen.int64(in: -16 ... 3100), Gen.int64(in: length)).map { AllocationMap.Extent(start: $0, length: $1) }.array(of: count)
    }

    static let disks: Generator<Disk, some SendableSequenceType> = zip(
        Gen.int64(in: 0 ... 3000), extents(0 ... 700, 0 ... 8), extents(0 ... 200, 0 ... 6), Gen.int(in: 0 ... 3)
    ).map { size, allocated, dirty, size2 in
        Disk(size: size, allocated: allocated, dirty: dirty, clusterSize: [1, 7, 64, 512][size2])
    }

    static let selections: Generator<ComparisonPlan.Selection, some SendableSequenceType> = zip(
        Gen.int(in: 0 ... 2), Gen.int(in: 0 ... 40), Gen.double(in: 0 ... 1)
    ).map { kind, count, fraction in
        [ComparisonPlan.Selection.full, .sample(count: count), .sampleFraction(fraction)][kind]
    }

    /// The clusters a plan's ranges cover, checking on the way that the ranges are
    /// sorted, disjoint, non-empty, within the disk and cluster-aligned.
    static func chosenClusters(_ plan: ComparisonPlan, _ disk: Disk) -> [Int64] {
        var clusters: [Int64] = []
        var previousEnd: Int64 = -1
        for range in plan.ranges {
            #expect(range.length > 0 && range.length <= ComparisonPlan.longestRange, "\(range)")
            #expect(range.start > previousEnd || (previousEnd == -1 && range.start >= 0), "sorted, disjoint: \(plan.ranges)")
            #expect(range.end <= disk.size, "within the disk: \(range)")
            #expect(range.start % disk.clusterSize == 0 && (range.end % disk.clusterSize == 0 || range.end == disk.size),
                    "whole clusters: \(range)")
            previousEnd = range.end - 1
            clusters += Array(range.start / disk.clusterSize ... (range.end - 1) / disk.clusterSize)
        }
        return clusters.reduce(into: []) { if $0.last != $1 { $0.append($1) } }
    }

    /// No chosen byte is dirty, each is in a cluster the source allocates, the counts add up.
    @Test func chosenBytesAreCleanAndAllocated() async {
        await propertyCheck(count: 1_000, input: Self.disks, Self.selections, Gen.uint64()) { disk, selection, seed in
            let plan = ComparisonPlan(sourceAllocation: disk.allocation, dirty: disk.dirtyMap, clusterSize: disk.clusterSize,
                                      selection: selection, seed: seed)
            let chosen = Self.chosenClusters(plan, disk)
            let clean = disk.cleanClusters
            #expect(chosen.allSatisfy(disk.isClean), "\(disk) \(selection): \(plan.ranges)")
            for range in plan.ranges {
                #expect(!disk.dirtyMap.extents.contains { $0.start < range.end && range.start < $0.end }, "dirty bytes in \(range)")
            }
            #expect(plan.cleanClusters == Int64(clean.count), "\(disk)")
            #expect(plan.dirtyClusters == Int64((0 ..< disk.clusters).filter { disk.touches(disk.allocation.extents, $0) }.count - clean.count))
            #expect(plan.chosenClusters == Int64(chosen.count))
            #expect(plan.chosenBytes == chosen.reduce(0) { $0 + Int64(disk.bytes(ofCluster: $1).count) })
        }
    }

    /// With cluster-aligned allocation (what qemu-img reports of a qcow2), every chosen
    /// byte is itself allocated in the source.
    @Test func withAlignedAllocationEveryChosenByteIsAllocated() async {
        await propertyCheck(count: 500, input: Self.disks, Self.selections, Gen.uint64()) { disk, selection, seed in
            let cluster = disk.clusterSize
            let aligned = disk.allocated.map { extent -> AllocationMap.Extent in
                let start = max(0, extent.start) / cluster * cluster
                return AllocationMap.Extent(start: start, length: (extent.length + cluster - 1) / cluster * cluster)
            }
            let source = AllocationMap(extents: aligned, diskSize: disk.size)
            let plan = ComparisonPlan(sourceAllocation: source, dirty: disk.dirtyMap, clusterSize: cluster, selection: selection, seed: seed)
            for range in plan.ranges {
                #expect(source.allocatedBytes(below: range.end) - source.allocatedBytes(below: range.start) == range.length,
                        "\(range) not all allocated in \(source.extents)")
            }
        }
    }

    /// `full` covers every clean cluster, and nothing else.
    @Test func fullCoversEveryCleanCluster() async {
        await propertyCheck(count: 1_000, input: Self.disks) { disk in
            let plan = ComparisonPlan(sourceAllocation: disk.allocation, dirty: disk.dirtyMap, clusterSize: disk.clusterSize,
                                      selection: .full, seed: 0)
            #expect(Self.chosenClusters(plan, disk) == disk.cleanClusters, "\(disk)")
        }
    }

    /// `sample` always has each allocated extent's first and last clean cluster, and as
    /// many others as asked for (or all there are).
    @Test func sampleHasEachExtentsEndsAndTheCountAskedFor() async {
        await propertyCheck(count: 1_000, input: Self.disks, Gen.int(in: 0 ... 40), Gen.double(in: 0 ... 1), Gen.uint64()) {
            disk, count, fraction, seed in
            let ends = Set(disk.extentEnds)
            let clean = Int64(disk.cleanClusters.count)
            for (selection, wanted) in [(ComparisonPlan.Selection.sample(count: count), Int64(count)),
                                        (.sampleFraction(fraction), Int64((fraction * Double(clean)).rounded(.up)))] {
                let plan = ComparisonPlan(sourceAllocation: disk.allocation, dirty: disk.dirtyMap, clusterSize: disk.clusterSize,
                                          selection: selection, seed: seed)
                let chosen = Set(Self.chosenClusters(plan, disk))
                #expect(ends.isSubset(of: chosen), "\(disk) \(selection): \(plan.ranges) lacks \(ends.subtracting(chosen).sorted())")
                #expect(plan.chosenClusters == Int64(ends.count) + min(wanted, clean - Int64(ends.count)), "\(disk) \(selection)")
            }
        }
    }

    @Test func theSameSeedChoosesTheSameClusters() async {
        await propertyCheck(count: 500, input: Self.disks, Self.selections, Gen.uint64()) { disk, selection, seed in
            let make = {
                ComparisonPlan(sourceAllocation: disk.allocation, dirty: disk.dirtyMap, clusterSize: disk.clusterSize,
                               selection: selection, seed: seed)
            }
            #expect(make() == make())
        }
    }

    /// On a disk with room to choose, two seeds nearly always choose differently (a pair
    /// may agree by chance: 10 of 1000 clean clusters can coincide, rarely).
    @Test func differentSeedsUsuallyChooseDifferently() {
        let allocation = AllocationMap(extents: [.init(start: 0, length: 1000 * 65536)], diskSize: 1000 * 65536)
        let dirty = AllocationMap(extents: [.init(start: 300 * 65536, length: 5)], diskSize: allocation.diskSize)
        for selection in [ComparisonPlan.Selection.sample(count: 10), .sample(count: 500), .sampleFraction(0.2), .sampleFraction(0.99)] {
            let plans = (UInt64(0) ..< 20).map {
                ComparisonPlan(sourceAllocation: allocation, dirty: dirty, clusterSize: 65536, selection: selection, seed: $0)
            }
            let distinct = Set(plans.map { $0.ranges.map(\.start) })
            #expect(distinct.count >= 18, "\(selection): only \(distinct.count) distinct choices of 20 seeds")
            #expect(plans.allSatisfy { $0.cleanClusters == 999 && $0.dirtyClusters == 1 })
        }
    }

    /// Large runs of clean clusters are cut into ranges of at most 4 MiB, on cluster
    /// boundaries; the last is clipped to the disk.
    @Test func rangesAreCutAtFourMiB() {
        let MiB: Int64 = 1 << 20
        let size = 10 * MiB + 4096 + 100
        let allocation = AllocationMap(extents: [.init(start: 0, length: size)], diskSize: size)
        let dirty = AllocationMap(extents: [.init(start: 5 * MiB + 1, length: 1)], diskSize: size)
        let plan = ComparisonPlan(sourceAllocation: allocation, dirty: dirty, clusterSize: 65536, selection: .full, seed: 0)
        #expect(plan.ranges == [
            .init(start: 0, length: 4 * MiB), .init(start: 4 * MiB, length: MiB),
            .init(start: 5 * MiB + 65536, length: 4 * MiB), .init(start: 9 * MiB + 65536, length: MiB - 65536 + 4096 + 100),
        ])
        #expect(plan.dirtyClusters == 1)
        #expect(plan.cleanClusters == 160)  // 161 clusters, the last partial, one dirty
        #expect(plan.chosenBytes == size - 65536)
        // A cluster larger than 4 MiB is cut too: ranges never exceed what one read holds.
        let big = ComparisonPlan(sourceAllocation: allocation, dirty: AllocationMap(extents: [], diskSize: size),
                                 clusterSize: 6 * MiB, selection: .full, seed: 0)
        #expect(big.ranges.allSatisfy { $0.length <= 4 * MiB })
        #expect(big.chosenBytes == size && big.chosenClusters == 2)
    }

    /// The choice is the same on every platform and Swift version: pinned for one seed
    /// (the values agree with an independent SplitMix64, Lemire draw, selection sampling
    /// and Floyd's algorithm written in Python).
    @Test func aSeedsChoiceIsPinned() {
        let allocation = AllocationMap(extents: [.init(start: 0, length: 100 * 4096)], diskSize: 100 * 4096)
        let plan = ComparisonPlan(sourceAllocation: allocation, dirty: AllocationMap(extents: [], diskSize: 100 * 4096),
                                  clusterSize: 4096, selection: .sample(count: 3), seed: 42)
        // Selection sampling (3 of a pool of 98) between the extent's ends.
        #expect(Self.clusters(plan, 4096) == [0, 55, 60, 81, 99], "\(Self.clusters(plan, 4096))")
        #expect(plan.chosenClusters == 5 && plan.cleanClusters == 100 && plan.chosenBytes == 20480 && plan.dirtyClusters == 0)
        #expect(plan.selection.summary(seed: plan.seed) == "verify: sample of 3 clusters plus each extent's first and last, seed 42")
        // Floyd's algorithm (5 of a pool of 9998).
        let large = AllocationMap(extents: [.init(start: 0, length: 10_000 * 4096)], diskSize: 10_000 * 4096)
        let sparse = ComparisonPlan(sourceAllocation: large, dirty: AllocationMap(extents: [], diskSize: large.diskSize),
                                    clusterSize: 4096, selection: .sample(count: 5), seed: 42)
        #expect(Self.clusters(sparse, 4096) == [0, 381, 1599, 2785, 3441, 7412, 9999], "\(Self.clusters(sparse, 4096))")
    }

    static func clusters(_ plan: ComparisonPlan, _ clusterSize: Int64) -> [Int64] {
        plan.ranges.flatMap { Array($0.start / clusterSize ..< ($0.end + clusterSize - 1) / clusterSize) }
    }
}
