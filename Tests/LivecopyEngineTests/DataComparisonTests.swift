import Foundation
@testable import LivecopyEngine
import LivecopyModel
import TestSupport
import Testing

private let KiB: Int64 = 1024
private let MiB: Int64 = 1024 * 1024

/// `DataComparison` over two real `qemu-nbd` exports (`SourceExport`) of qcow2 images.
@Suite(.requires(.qemu), .timeLimit(.minutes(2)))
struct DataComparisonTests {
    /// Two images with the same content: 0x11 over 0..<4M, 0x22 over 6M..<7M, of 8M.
    static func twins(in scratch: TemporaryDirectory) throws -> (source: String, destination: String) {
        let images = (scratch.appending("source.qcow2"), scratch.appending("destination.qcow2"))
        for image in [images.0, images.1] {
            try QEMUImage.create(image, size: "8M")
            try QEMUImage.write(image, pattern: 0x11, offset: "0", length: "4M")
            try QEMUImage.write(image, pattern: 0x22, offset: "6M", length: "1M")
        }
        return images
    }

    /// Serves both images, runs `body` on their readers, stops both.
    static func withExports<T>(_ images: (source: String, destination: String), in scratch: TemporaryDirectory,
                               _ body: (NBDReader, NBDReader) throws -> T) async throws -> T {
        let source = try await SourceExport.start(image: images.source, format: "qcow2", in: scratch.path)
        let destination: SourceExport
        do {
            destination = try await SourceExport.start(image: images.destination, format: "qcow2", in: scratch.path)
        } catch {
            await source.stop()
            throw error
        }
        let result = Result { try body(source.reader, destination.reader) }
        await source.stop()
        await destination.stop()
        return try result.get()
    }

    static func fullPlan(of image: String, dirty: [AllocationMap.Extent] = []) async throws -> ComparisonPlan {
        let allocation = try await QemuImgInspector().allocationMap(of: image, format: "qcow2")
        return ComparisonPlan(sourceAllocation: allocation, dirty: AllocationMap(extents: dirty, diskSize: allocation.diskSize),
                              clusterSize: 64 * KiB, selection: .full, seed: 0)
    }

    @Test func identicalImagesCompareEqual() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-compare-same")
        defer { scratch.remove() }
        let images = try Self.twins(in: scratch)
        let plan = try await Self.fullPlan(of: images.source)
        #expect(plan.chosenBytes == 5 * MiB && plan.chosenClusters == 80)

        let result = try await Self.withExports(images, in: scratch) { source, destination in
            try DataComparison.compare(ranges: plan.ranges, source: source, destination: destination, clusterSize: 64 * KiB)
        }
        #expect(result == ComparisonResult(bytesCompared: 5 * MiB, clustersCompared: 80, mismatchedClusters: 0, firstMismatches: []))
        #expect(result.isMatch)
    }

    /// One byte changed at 2M (`qemu-io -c 'write -P 0x01 2M 1'`), another inside the
    /// cluster at 3M: each found at its cluster, with its own first differing byte.
    @Test func aChangedByteIsFoundAtItsCluster() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-compare-diff")
        defer { scratch.remove() }
        let images = try Self.twins(in: scratch)
        try QEMUImage.write(images.destination, pattern: 0x01, offset: "2M", length: "1")
        try QEMUImage.write(images.destination, pattern: 0x02, offset: "\(3 * MiB + 4321)", length: "1")
        let plan = try await Self.fullPlan(of: images.source)

        let (result, limited, skipped, rechecked) = try await Self.withExports(images, in: scratch) { source, destination in
            (try DataComparison.compare(ranges: plan.ranges, source: source, destination: destination, clusterSize: 64 * KiB),
             try DataComparison.compare(ranges: plan.ranges, source: source, destination: destination, clusterSize: 64 * KiB,
                                        firstMismatches: 1),
             // Unaligned ranges that stop short of the 2M byte and cut the 3M cluster in two.
             try DataComparison.compare(ranges: [.init(start: 0, length: 2 * MiB), .init(start: 3 * MiB, length: 4000),
                                                 .init(start: 3 * MiB + 4000, length: 1000)],
                                        source: source, destination: destination, clusterSize: 64 * KiB),
             try DataComparison.recheck(clusters: [3 * MiB, 0, 2 * MiB, 3 * MiB], source: source, destination: destination,
                                        clusterSize: 64 * KiB))
        }
        let both = [ComparisonResult.Mismatch(clusterOffset: 2 * MiB, firstDifferingByte: 2 * MiB),
                    ComparisonResult.Mismatch(clusterOffset: 3 * MiB, firstDifferingByte: 3 * MiB + 4321)]
        #expect(result == ComparisonResult(bytesCompared: 5 * MiB, clustersCompared: 80, mismatchedClusters: 2, firstMismatches: both))
        #expect(limited.mismatchedClusters == 2 && limited.firstMismatches == [both[0]], "all counted, one kept")
        #expect(skipped == ComparisonResult(bytesCompared: 2 * MiB + 5000, clustersCompared: 33, mismatchedClusters: 1,
                                            firstMismatches: [both[1]]))
        #expect(rechecked == ComparisonResult(bytesCompared: 3 * 64 * KiB, clustersCompared: 3, mismatchedClusters: 2, firstMismatches: both))
    }

    /// A cluster the bitmap marks dirty is not compared, so its difference is no mismatch.
    @Test func aDirtyClusterIsNotCompared() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-compare-dirty")
        defer { scratch.remove() }
        let images = try Self.twins(in: scratch)
        try QEMUImage.write(images.destination, pattern: 0x01, offset: "2M", length: "1")
        try QEMUImage.write(images.destination, pattern: 0x02, offset: "6M", length: "64k")
        let plan = try await Self.fullPlan(of: images.source, dirty: [.init(start: 2 * MiB, length: 64 * KiB)])
        #expect(plan.dirtyClusters == 1)

        let result = try await Self.withExports(images, in: scratch) { source, destination in
            try DataComparison.compare(ranges: plan.ranges, source: source, destination: destination, clusterSize: 64 * KiB)
        }
        #expect(result == ComparisonResult(bytesCompared: 5 * MiB - 64 * KiB, clustersCompared: 79, mismatchedClusters: 1,
                                           firstMismatches: [.init(clusterOffset: 6 * MiB, firstDifferingByte: 6 * MiB)]))
    }

    @Test func rangesOutsideEitherDiskAreRefused() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-compare-out")
        defer { scratch.remove() }
        let images = try Self.twins(in: scratch)
        try await Self.withExports(images, in: scratch) { source, destination in
            #expect(throws: VerificationError.self) {
                try DataComparison.compare(ranges: [.init(start: 8 * MiB - 10, length: 11)], source: source, destination: destination,
                                           clusterSize: 64 * KiB)
            }
            #expect(throws: VerificationError.self) {
                try DataComparison.recheck(clusters: [100], source: source, destination: destination, clusterSize: 64 * KiB)
            }
        }
    }

    /// A stop request is looked at before each chunk: requested before the first, nothing
    /// is read and the comparison says where it stopped.
    @Test func aStopRequestStopsTheComparisonBeforeItsNextChunk() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-compare-stop")
        defer { scratch.remove() }
        let images = try Self.twins(in: scratch)
        let plan = try await Self.fullPlan(of: images.source)
        let stop = StopRequest()
        stop.request()
        let outcome = try await Self.withExports(images, in: scratch) { source, destination in
            Result { () throws(VerificationError) in
                try DataComparison.compare(ranges: plan.ranges, source: source, destination: destination,
                                           clusterSize: 64 * KiB, stop: stop)
            }
        }
        #expect(throws: VerificationError.self) { try outcome.get() }
        if case .failure(let error) = outcome {
            #expect(error.description == "the comparison was stopped at offset 0 (0 bytes compared)", "\(error)")
        }
    }

    /// Cancelling the task that waits for reads on their own thread reaches that thread
    /// (its `StopRequest`), and the task throws `CancellationError`. Without that, the body
    /// below would spin until the suite's time limit.
    @Test func cancellingTheTaskStopsTheReadsOnTheirOwnThread() async throws {
        let task = Task {
            try await DiskWorkflow.offThePool { stop -> Int in
                var spins = 0
                while !stop.isRequested {
                    usleep(1000)
                    spins += 1
                }
                return spins
            }
        }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
    }
}
