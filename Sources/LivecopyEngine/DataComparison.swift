// Comparing a copy's source and destination byte for byte over NBD: `DataComparison`.

#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import LivecopyModel

/// What a comparison found: how much was compared, and which clusters differ.
struct ComparisonResult: Sendable, Equatable {
    /// A cluster whose bytes differ.
    struct Mismatch: Sendable, Equatable {
        /// Where the cluster starts (a multiple of the cluster size).
        let clusterOffset: Int64
        /// The first byte that differs in it.
        let firstDifferingByte: Int64
    }

    var bytesCompared: Int64 = 0
    /// Distinct clusters the compared ranges touch.
    var clustersCompared: Int64 = 0
    /// Clusters with at least one differing byte, all counted.
    var mismatchedClusters: Int64 = 0
    /// The first differing clusters, in offset order, as many as the caller asked for.
    var firstMismatches: [Mismatch] = []

    /// True when nothing differs.
    var isMatch: Bool { mismatchedClusters == 0 }
}

/// Reads ranges from a source and a destination export, in chunks of at most
/// `chunkSize`, and compares them (`memcmp`). A chunk that differs is compared again
/// cluster by cluster, so each differing cluster is counted once and the first few are
/// reported with their first differing byte.
///
/// It blocks the calling thread for as long as the reads take (see `NBDReader`).
enum DataComparison {
    /// The most read from each side at once.
    static let chunkSize = 4 * 1024 * 1024

    /// Compares `ranges` (sorted, as `ComparisonPlan` gives them) of `source` and
    /// `destination`; clusters are `clusterSize` bytes, aligned. Records up to
    /// `firstMismatches` differing clusters, and counts them all.
    static func compare(
        ranges: [AllocationMap.Extent], source: NBDReader, destination: NBDReader, clusterSize: Int64, firstMismatches: Int = 8,
        stop: StopRequest? = nil
    ) throws(VerificationError) -> ComparisonResult {
        guard clusterSize > 0 else {
            throw VerificationError("comparing \(source.socketPath) with \(destination.socketPath): invalid cluster size \(clusterSize)")
        }
        let end = min(source.size, destination.size)
        if let range = ranges.first(where: { $0.start < 0 || $0.length < 0 || $0.end > end }) {
            throw VerificationError("comparing \(source.socketPath) (\(source.size) bytes) with \(destination.socketPath) (\(destination.size) bytes): "
                + "the range at \(range.start) (+\(range.length)) lies outside one of them")
        }
        let left = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        let right = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer {
            left.deallocate()
            right.deallocate()
        }
        var result = ComparisonResult()
        var lastCounted: Int64 = -1  // the last cluster counted as compared
        var lastMismatch: Int64 = -1  // the last cluster counted as differing
        for range in ranges where range.length > 0 {
            let first = range.start / clusterSize
            let last = (range.end - 1) / clusterSize
            result.clustersCompared += last - first + (first == lastCounted ? 0 : 1)
            lastCounted = last
            var offset = range.start
            while offset < range.end {
                if stop?.isRequested == true {
                    throw VerificationError("the comparison was stopped at offset \(offset) (\(result.bytesCompared) bytes compared)")
                }
                let count = Int(min(Int64(chunkSize), range.end - offset))
                let a = UnsafeMutableRawBufferPointer(rebasing: left[0 ..< count])
                let b = UnsafeMutableRawBufferPointer(rebasing: right[0 ..< count])
                try readBoth(source, into: a, destination, into: b, at: offset)
                result.bytesCompared += Int64(count)
                if memcmp(a.baseAddress!, b.baseAddress!, count) != 0 {
                    findMismatches(a, b, at: offset, clusterSize: clusterSize, keeping: firstMismatches,
                                   lastMismatch: &lastMismatch, into: &result)
                }
                offset += Int64(count)
            }
        }
        return result
    }

    /// Compares again the clusters starting at `clusters` (byte offsets, multiples of
    /// `clusterSize`, in any order), each clipped to the disk's end: a mismatch found
    /// while the guest wrote is re-checked once a later frozen bitmap says which of those
    /// clusters it has written since (the caller leaves those out).
    static func recheck(
        clusters: [Int64], source: NBDReader, destination: NBDReader, clusterSize: Int64, firstMismatches: Int = 8,
        stop: StopRequest? = nil
    ) throws(VerificationError) -> ComparisonResult {
        guard clusterSize > 0 else {
            throw VerificationError("re-checking \(source.socketPath) against \(destination.socketPath): invalid cluster size \(clusterSize)")
        }
        if let odd = clusters.first(where: { $0 < 0 || $0 % clusterSize != 0 }) {
            throw VerificationError("re-checking \(source.socketPath) against \(destination.socketPath): \(odd) is no cluster's offset (clusters of \(clusterSize) bytes)")
        }
        let ranges = Set(clusters).sorted().map { start in
            AllocationMap.Extent(start: start, length: max(0, min(clusterSize, source.size - start)))
        }
        return try compare(ranges: ranges, source: source, destination: destination, clusterSize: clusterSize,
                           firstMismatches: firstMismatches, stop: stop)
    }

    /// The differing clusters of a chunk read at `offset`: each counted once (a cluster
    /// cut between chunks or ranges is the same cluster), the first ones kept.
    /// Reads the same range from both sides at once, each on its own thread: the NBD
    /// round trips, not the comparison, set the pace (`scripts/bench verify`).
    private static func readBoth(
        _ source: NBDReader, into a: UnsafeMutableRawBufferPointer, _ destination: NBDReader,
        into b: UnsafeMutableRawBufferPointer, at offset: Int64
    ) throws(VerificationError) {
        /// Each thread touches only its own reader, buffer and slot, and both are done when
        /// `concurrentPerform` returns.
        struct Sides: @unchecked Sendable {
            let readers: (NBDReader, NBDReader)
            let buffers: (UnsafeMutableRawBufferPointer, UnsafeMutableRawBufferPointer)
            let failures: UnsafeMutableBufferPointer<VerificationError?>
        }
        let failures = UnsafeMutableBufferPointer<VerificationError?>.allocate(capacity: 2)
        failures.initialize(repeating: nil)
        defer {
            _ = failures.deinitialize()
            failures.deallocate()
        }
        let sides = Sides(readers: (source, destination), buffers: (a, b), failures: failures)
        DispatchQueue.concurrentPerform(iterations: 2) { side in
            do throws(VerificationError) {
                if side == 0 {
                    try sides.readers.0.read(offset: offset, into: sides.buffers.0)
                } else {
                    try sides.readers.1.read(offset: offset, into: sides.buffers.1)
                }
            } catch {
                sides.failures[side] = error
            }
        }
        if let failure = failures.compactMap({ $0 }).first { throw failure }
    }

    private static func findMismatches(
        _ a: UnsafeMutableRawBufferPointer, _ b: UnsafeMutableRawBufferPointer, at offset: Int64, clusterSize: Int64,
        keeping limit: Int, lastMismatch: inout Int64, into result: inout ComparisonResult
    ) {
        var start = 0
        while start < a.count {
            let cluster = (offset + Int64(start)) / clusterSize
            let end = Int(min(Int64(a.count), (cluster + 1) * clusterSize - offset))
            if memcmp(a.baseAddress! + start, b.baseAddress! + start, end - start) != 0, cluster != lastMismatch {
                lastMismatch = cluster
                result.mismatchedClusters += 1
                if result.firstMismatches.count < limit {
                    var byte = start
                    while a[byte] == b[byte] { byte += 1 }
                    result.firstMismatches.append(.init(clusterOffset: cluster * clusterSize, firstDifferingByte: offset + Int64(byte)))
                }
            }
            start = end
        }
    }
}

/// A request to stop a comparison running on a thread of its own, set from another
/// (the engine's task was cancelled: `livecopy serve` stopping, a plan cancelled). The
/// comparison looks at it before each chunk it reads, so it stops within one chunk.
final class StopRequest: Sendable {
    private let requested = Atomic<Bool>(false)

    var isRequested: Bool { requested.load(ordering: .acquiring) }

    func request() { requested.store(true, ordering: .releasing) }
}
