// Looking inside images on disk: the `ImageInspector` protocol and its `qemu-img` implementation.

import Foundation
import LivecopyModel

/// Looks inside images on disk, to tell whether a destination overlay holds guest
/// writes of its own before anything would delete it. Both questions may take long (a
/// whole-image comparison reads both images), so they are awaited: the answer never
/// holds a thread of the concurrency pool.
public protocol ImageInspector: Sendable {
    /// True when the qcow2 image at `path` has data allocated in its own layer (not in
    /// its backing chain).
    func hasOwnData(_ path: String) async throws -> Bool

    /// True when the guest sees the same bytes in both images (formats given, never probed).
    func sameContents(_ first: String, format firstFormat: String, _ second: String, format secondFormat: String) async throws -> Bool
}

extension ImageInspector {
    /// Whether `disk`'s source and destination hold the same guest-visible bytes; false
    /// when it cannot be told (no source recorded, or an image cannot be read).
    func sourceMatchesDestination(_ disk: DiskRecord) async -> Bool {
        guard let source = disk.source, let format = disk.sourceFormat else { return false }
        return (try? await sameContents(source, format: format, disk.destination, format: "qcow2")) == true
    }
}

/// Asks `qemu-img map` (read-only, shared lock) which ranges the top layer holds.
public struct QemuImgInspector: ImageInspector {
    public init() {}

    public func hasOwnData(_ path: String) async throws -> Bool {
        let (status, data, _) = try await runQemuImg(["map", "-U", "--output=json", "-f", "qcow2", path])
        guard status == 0, let ranges = try? JSONDecoder().decode([MapRange].self, from: data) else {
            throw InspectionFailed(path: path)
        }
        // Allocated in the top layer: data, or zeroes the guest wrote over older data.
        return ranges.contains { $0.depth == 0 && ($0.present ?? $0.data) }
    }

    /// `qemu-img compare` exits 0 for identical contents and 1 for different ones.
    public func sameContents(_ first: String, format firstFormat: String, _ second: String, format secondFormat: String) async throws -> Bool {
        let (status, _, _) = try await runQemuImg(["compare", "-U", "-f", firstFormat, "-F", secondFormat, first, second])
        guard status == 0 || status == 1 else { throw InspectionFailed(path: "\(first) and \(second)") }
        return status == 0
    }

    private struct MapRange: Decodable {
        let depth: Int
        let data: Bool
        let present: Bool?
    }

    struct InspectionFailed: Error, CustomStringConvertible {
        let path: String
        var description: String { "cannot inspect \(path) with qemu-img map" }
    }
}
