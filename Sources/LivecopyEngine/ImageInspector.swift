// Looking inside images on disk: the `ImageInspector` protocol and its `qemu-img` implementation.

import Foundation
import LivecopyModel

/// Looks inside images on disk, to tell whether a destination overlay holds guest
/// writes of its own before anything would delete it, and where a source holds data (for
/// the progress display). Every question may take long (a whole-image comparison reads
/// both images), so they are awaited: the answer never holds a thread of the concurrency pool.
public protocol ImageInspector: Sendable {
    /// True when the qcow2 image at `path` has data allocated in its own layer (not in
    /// its backing chain).
    func hasOwnData(_ path: String) async throws -> Bool

    /// True when the guest sees the same bytes in both images (formats given, never probed).
    func sameContents(_ first: String, format firstFormat: String, _ second: String, format secondFormat: String) async throws -> Bool

    /// The ranges allocated anywhere in the chain of the image at `path` (format given,
    /// never probed): what a `block-stream` from that chain copies. Read while QEMU holds
    /// the image (shared lock), so it may already be out of date; for estimates only.
    func allocationMap(of path: String, format: String) async throws -> AllocationMap
}

extension ImageInspector {
    /// Whether `disk`'s source and destination hold the same guest-visible bytes; false
    /// when it cannot be told (no source recorded, or an image cannot be read).
    func sourceMatchesDestination(_ disk: DiskRecord) async -> Bool {
        guard let source = disk.source, let format = disk.sourceFormat else { return false }
        return (try? await sameContents(source, format: format, disk.destination, format: disk.destinationFormat.rawValue)) == true
    }
}

/// Asks `qemu-img map` (read-only, shared lock) which ranges an image and its chain
/// hold, and `qemu-img compare` whether two images hold the same bytes.
public struct QemuImgInspector: ImageInspector {
    public init() {}

    public func hasOwnData(_ path: String) async throws -> Bool {
        // Allocated in the top layer: data, or zeroes the guest wrote over older data.
        try await map(path, format: "qcow2").topLayerHasData
    }

    public func allocationMap(of path: String, format: String) async throws -> AllocationMap {
        try await map(path, format: format).allocationMap
    }

    private func map(_ path: String, format: String) async throws -> QemuImgMap {
        let (status, data, _) = try await runQemuImg(["map", "-U", "--output=json", "-f", format, path])
        guard status == 0, let map = try? QemuImgMap(json: data) else {
            throw InspectionFailed(path: path)
        }
        return map
    }

    /// `qemu-img compare` exits 0 for identical contents and 1 for different ones.
    public func sameContents(_ first: String, format firstFormat: String, _ second: String, format secondFormat: String) async throws -> Bool {
        let (status, _, _) = try await runQemuImg(["compare", "-U", "-f", firstFormat, "-F", secondFormat, first, second])
        guard status == 0 || status == 1 else { throw InspectionFailed(path: "\(first) and \(second)") }
        return status == 0
    }

    struct InspectionFailed: Error, CustomStringConvertible {
        let path: String
        var description: String { "cannot inspect \(path) with qemu-img map" }
    }
}
