import Foundation
@testable import LivecopyEngine
import LivecopyModel
import LivecopyBackend
import TestSupport
import Testing

/// A `virtual-size` read from an image header is whatever the header says. Sizes near
/// Int64.max must be refused with a one-line message, never overflow and trap.
@Suite struct SizeOverflowTests {
    static let hugeSizes: [Int64] = [
        .max, .max - 511, .max - 512 - 511, 1 << 62, (1 << 62) + 512, Int64(1) << 60,
    ]

    @Test(arguments: hugeSizes)
    func theOverlayLayoutRefusesAHugeSize(size: Int64) {
        do {
            let layout = try Qcow2Overlay(virtualSize: size, backing: "/src.qcow2", backingFormat: "qcow2")
            Issue.record("a virtual size of \(size) bytes was accepted: \(layout.l1Clusters) L1 clusters")
        } catch let error as CreationFailed {
            #expect(error.description.contains("virtual size \(size)"), "\(error)")
            #expect(!error.description.contains("\n"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func theLargestSizeOneRefcountBlockHoldsIsAccepted() throws {
        // 32768 clusters minus the header, refcount table and refcount block: L1 clusters
        // of 8192 entries of 512 MiB each.
        let maxL1Clusters = Int64(Qcow2Overlay.maxClusters - 3)
        let largest = maxL1Clusters * 8192 * Qcow2Overlay.bytesPerL1Entry
        let layout = try Qcow2Overlay(virtualSize: largest, backing: "/s", backingFormat: "raw")
        #expect(Int64(layout.l1Clusters) == maxL1Clusters)
        #expect(throws: CreationFailed.self) {
            try Qcow2Overlay(virtualSize: largest + 512, backing: "/s", backingFormat: "raw")
        }
    }

    @Test func creatingAnOverlayOfAHugeSizeLeavesNoFile() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-huge")
        defer { scratch.remove() }
        let path = scratch.appending("dst.qcow2")
        for size in Self.hugeSizes {
            #expect(throws: CreationFailed.self) {
                try ExclusiveOverlayCreator().createOverlay(at: path, backing: "/s", backingFormat: "qcow2", virtualSize: size)
            }
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }

    /// A device whose image header claims `size` bytes, as the hypervisor would show it.
    static func device(file: String, size: Int64) throws -> [VMDisk] {
        let image = DiskImage(filename: file, format: "qcow2", virtualSize: size)
        return [VMDisk(device: "drive0", guestDevice: nil, medium: .init(file: file, nodeName: "n0", backingFile: nil, image: image))]
    }

    @Test(arguments: hugeSizes)
    func preflightRefusesAHugeSizeInOneLine(size: Int64) throws {
        let scratch = try TemporaryDirectory(prefix: "lc-huge-preflight")
        defer { scratch.remove() }
        let source = scratch.appending("src.qcow2")
        _ = FileManager.default.createFile(atPath: source, contents: Data())
        let disk = Plan.Disk(device: "drive0", destination: scratch.appending("dst.qcow2"))
        do {
            _ = try Preflight.check(disk, vmName: "vm", vmAddress: "/q", in: try Self.device(file: source, size: size),
                                    name: "VM 'vm' disk 'drive0'", policy: try Policy.resolve(nil))
            Issue.record("preflight accepted a virtual size of \(size)")
        } catch let error as PreflightError {
            #expect(error.description.hasPrefix("VM 'vm' disk 'drive0': source \(source)"), "\(error)")
            #expect(error.description.contains("virtual size \(size)"), "\(error)")
            #expect(!error.description.contains("\n"))
        }
    }

    @Test func theFreeSpaceSumSaturatesInsteadOfTrapping() throws {
        #expect(FreeSpaceCheck.sum(.max, 1) == .max)
        #expect(FreeSpaceCheck.sum(.max - 1, 1) == .max)
        #expect(FreeSpaceCheck.sum(1 << 62, 1 << 62) == .max)
        #expect(FreeSpaceCheck.sum(40, 2) == 42)
        #expect(FreeSpaceCheck.product(.max, 512) == .max)
        #expect(FreeSpaceCheck.product(1 << 60, 8) == .max)
        #expect(FreeSpaceCheck.product(8, 512) == 4096)
        #expect(FreeSpaceCheck.required(.max, margin: 100) == .max)
        #expect(FreeSpaceCheck.required(.max, margin: 1.1) == .max)
        #expect(FreeSpaceCheck.required(.max - 511, margin: 1) == .max, "2^63 - 512 rounds to 2^63 as a Double")
        #expect(FreeSpaceCheck.required(1000, margin: 1.1) == 1100)

        // Sources whose headers claim near-max sizes, added up on one filesystem: the
        // check compares saturated sums and never traps.
        let scratch = try TemporaryDirectory(prefix: "lc-huge-space")
        defer { scratch.remove() }
        let source = scratch.appending("src.qcow2")
        _ = FileManager.default.createFile(atPath: source, contents: Data(repeating: 1, count: 8192))
        var space = FreeSpaceCheck(margin: 100)
        for index in 0..<4 {
            let image = try #require(try Self.device(file: source, size: .max - 511).first?.medium?.image)
            space.add(name: "disk \(index)", destination: scratch.appending("dst\(index).qcow2"), source: image)
        }
        try space.check()
    }
}
