// The bytes of an empty qcow2 overlay, written without `qemu-img`.

import Foundation

/// An empty qcow2 (version 3) overlay, as `qemu-img create -f qcow2 -b BACKING -F FORMAT`
/// writes it: 64 KiB clusters, 16-bit refcounts; cluster 0 the header, its extensions
/// (the backing format, recorded so nothing ever probes it) and the backing file name;
/// cluster 1 the refcount table; cluster 2 the one refcount block; then the L1 table,
/// all zero (nothing allocated: every read falls through to the backing file).
struct Qcow2Overlay {
    static let clusterBits: UInt32 = 16
    static let clusterSize = 1 << 16
    /// Bytes one L1 entry covers: an L2 table of 8192 entries of 64 KiB clusters.
    static let bytesPerL1Entry: Int64 = Int64(clusterSize / 8) * Int64(clusterSize)
    /// 16-bit refcounts in one refcount block: the clusters the layout may use.
    static let maxClusters = clusterSize / 2

    let virtualSize: Int64
    /// The backing file and its format; nil for a standalone image (the mirror
    /// strategy's qcow2 destination).
    let backing: String?
    let backingFormat: String?
    let l1Entries: Int
    let l1Clusters: Int

    /// A standalone empty qcow2 image of `virtualSize` bytes.
    init(virtualSize: Int64) throws {
        try self.init(virtualSize: virtualSize, backing: nil, backingFormat: nil)
    }

    init(virtualSize: Int64, backing: String?, backingFormat: String?) throws {
        guard virtualSize >= 0, virtualSize % 512 == 0 else {
            throw CreationFailed(description: "virtual size \(virtualSize) is not a multiple of 512 bytes")
        }
        if let backing {
            guard !backing.isEmpty, backing.utf8.count <= 1023 else {
                throw CreationFailed(description: "backing file name must be 1 to 1023 bytes long")
            }
            guard let backingFormat, !backingFormat.isEmpty, backingFormat.utf8.count <= 255,
                  backingFormat.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
                throw CreationFailed(description: "backing format '\(backingFormat ?? "")' is not a format name")
            }
        }
        self.virtualSize = virtualSize
        self.backing = backing
        self.backingFormat = backingFormat
        // Rounded up without adding first: a hostile header's size near Int64.max must be
        // refused, not overflow.
        let entries = virtualSize / Self.bytesPerL1Entry + (virtualSize % Self.bytesPerL1Entry == 0 ? 0 : 1)
        let clusters = max(1, entries / Int64(Self.clusterSize / 8) + (entries % Int64(Self.clusterSize / 8) == 0 ? 0 : 1))
        guard 3 + clusters <= Int64(Self.maxClusters) else {
            throw CreationFailed(description: "virtual size \(virtualSize) is too large for one refcount block")
        }
        l1Entries = Int(entries)
        l1Clusters = Int(clusters)
    }

    /// Cluster 0: the header, its extensions and the backing file name.
    var header: [UInt8] {
        var bytes: [UInt8] = []
        func u32(_ value: UInt32) { bytes += withUnsafeBytes(of: value.bigEndian, Array.init) }
        func u64(_ value: UInt64) { bytes += withUnsafeBytes(of: value.bigEndian, Array.init) }
        let headerLength: UInt32 = 112
        let format = Array((backingFormat ?? "").utf8)
        let formatPadded = (format.count + 7) / 8 * 8
        let backingOffset = backing == nil ? 0 : UInt64(headerLength) + 8 + UInt64(formatPadded) + 8
        u32(0x5146_49fb)  // "QFI\xfb"
        u32(3)  // version
        u64(backingOffset)
        u32(UInt32(backing?.utf8.count ?? 0))
        u32(Self.clusterBits)
        u64(UInt64(virtualSize))
        u32(0)  // no encryption
        u32(UInt32(l1Entries))
        u64(UInt64(3 * Self.clusterSize))  // L1 table
        u64(UInt64(Self.clusterSize))  // refcount table
        u32(1)  // refcount table clusters
        u32(0)  // snapshots
        u64(0)
        u64(0)  // incompatible features
        u64(0)  // compatible features
        u64(0)  // autoclear features
        u32(4)  // refcount order: 16-bit refcounts
        u32(headerLength)
        bytes += [UInt8](repeating: 0, count: 8)  // compression type zlib (0), padding
        if let backing {
            u32(0xE279_2ACA)  // backing format extension
            u32(UInt32(format.count))
            bytes += format + [UInt8](repeating: 0, count: formatPadded - format.count)
            u32(0)  // end of extensions
            u32(0)
            bytes += Array(backing.utf8)
        } else {
            u32(0)  // end of extensions
            u32(0)
        }
        return bytes
    }

    /// Writes the overlay into `fd` (an empty file) and checks the length.
    func write(to fd: Int32, path: String) throws {
        let clusters = 3 + l1Clusters
        var refcountTable = [UInt8](repeating: 0, count: 8)
        refcountTable.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(2 * Self.clusterSize).bigEndian, as: UInt64.self) }
        var refcountBlock = [UInt8](repeating: 0, count: clusters * 2)
        for cluster in 0..<clusters { refcountBlock[cluster * 2 + 1] = 1 }
        for (bytes, offset) in [(header, 0), (refcountTable, Self.clusterSize), (refcountBlock, 2 * Self.clusterSize)] {
            let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard written == bytes.count else {
                throw CreationFailed(description: "cannot write the qcow2 header into \(path): \(String(cString: strerror(errno)))")
            }
        }
        // The rest (refcount table and block tails, the L1 table) is zeros: a sparse extension.
        guard ftruncate(fd, off_t(clusters * Self.clusterSize)) == 0 else {
            throw CreationFailed(description: "cannot size \(path): \(String(cString: strerror(errno)))")
        }
    }
}
