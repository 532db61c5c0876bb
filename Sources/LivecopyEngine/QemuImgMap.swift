// Reading `qemu-img map --output=json`: `QemuImgMap`, its ranges and what they say.

import Foundation
import LivecopyModel

/// What `qemu-img map --output=json` prints: every range of an image (and its backing
/// chain, merged), in order, each with where it is found and whether it holds anything.
struct QemuImgMap: Sendable {
    /// One range as qemu-img reports it.
    struct Range: Decodable, Sendable {
        let start: Int64
        let length: Int64
        /// 0: the image itself; 1: its backing file; and so on down the chain.
        let depth: Int
        /// Holds data (not known zeroes).
        let data: Bool
        /// Allocated at `depth`, as data or as zeroes written there (qemu-img 6.0 and later).
        let present: Bool?

        /// Allocated somewhere in the chain: QEMU's `BDRV_BLOCK_ALLOCATED`, the test a
        /// `block-stream` job makes before it copies (and counts against its rate limit)
        /// a range. Zeroes written over older data count. Older qemu-img, without
        /// `present`, only tells data.
        var isAllocated: Bool { present ?? data }
    }

    let ranges: [Range]

    /// Parses qemu-img's JSON; throws when it is not a list of ranges.
    init(json: Data) throws {
        ranges = try JSONDecoder().decode([Range].self, from: json)
    }

    /// True when the top image (depth 0) allocates some range of its own.
    var topLayerHasData: Bool {
        ranges.contains { $0.depth == 0 && $0.isAllocated }
    }

    /// The ranges allocated anywhere in the chain: what a full `block-stream` from this
    /// chain copies. The disk's size is where the last range ends.
    var allocationMap: AllocationMap {
        let size = ranges.map { AllocationMap.Extent(start: $0.start, length: $0.length).end }.max() ?? 0
        let allocated = ranges.filter(\.isAllocated).map { AllocationMap.Extent(start: $0.start, length: $0.length) }
        return AllocationMap(extents: allocated, diskSize: size)
    }
}
