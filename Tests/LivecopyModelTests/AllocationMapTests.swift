import LivecopyModel
import Testing

/// The allocation map: extents sorted, merged and clipped; allocated bytes below an offset.
@Suite struct AllocationMapTests {
    @Test func extentsAreSortedMergedAndClippedToTheDisk() {
        let map = AllocationMap(extents: [
            .init(start: 900, length: 200), .init(start: 10, length: 10), .init(start: 0, length: 5),
            .init(start: 15, length: 10), .init(start: 25, length: 5), .init(start: 50, length: 0),
            .init(start: -20, length: 22), .init(start: 2000, length: 5),
        ], diskSize: 1000)
        #expect(map.extents == [.init(start: 0, length: 5), .init(start: 10, length: 20), .init(start: 900, length: 100)])
        #expect(map.allocatedBytes == 125)
        #expect(map.diskSize == 1000)
    }

    @Test func allocatedBytesBelowAnOffsetMatchesCountingByteByByte() {
        let map = AllocationMap(extents: [.init(start: 3, length: 4), .init(start: 10, length: 1), .init(start: 20, length: 5)],
                                diskSize: 30)
        for offset in Int64(-3)...35 {
            let counted = (0..<max(0, min(offset, 30))).filter { byte in
                map.extents.contains { $0.start <= byte && byte < $0.end }
            }.count
            #expect(map.allocatedBytes(below: offset) == Int64(counted), "offset \(offset)")
        }
        #expect(map.allocatedBytes(below: .max) == 10)
        #expect(map.allocatedBytes(below: .min) == 0)
    }

    @Test func anEmptyMapHasNothingAllocated() {
        let map = AllocationMap(extents: [], diskSize: 1 << 30)
        #expect(map.allocatedBytes == 0)
        #expect(map.allocatedBytes(below: 1 << 29) == 0)
        #expect(AllocationMap(extents: [.init(start: 0, length: 10)], diskSize: -1).allocatedBytes == 0)
    }
}
