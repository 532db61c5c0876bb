// Reading which ranges a frozen dirty bitmap marks, through QEMU's NBD export: `DirtyMap`.

import Foundation
import LivecopyModel

/// The ranges a dirty bitmap marks, read from an NBD export of QEMU's that carries it
/// (`block-export-add` with `bitmaps: [NAME]`; a recording bitmap cannot be exported
/// read-only, so the caller exports a frozen copy).
///
/// It runs `qemu-img map --output=json --image-opts driver=nbd,…,x-dirty-bitmap=
/// qemu:dirty-bitmap:NAME`: with `x-dirty-bitmap`, qemu-img reads the bitmap's NBD
/// metadata context instead of the allocation. On QEMU 7.2 a dirty range then shows as
/// `"present": false, "zero": false, "data": false`, a clean one as `"present": true,
/// "zero": false, "data": true` (with an `offset`); ranges follow the bitmap's
/// granularity (a 1-byte write marks its whole 64 KiB granule). Any other combination
/// means qemu-img did not read the bitmap, and is refused rather than guessed at.
enum DirtyMap {
    /// How long `qemu-img map` may take before it is killed.
    static let timeout: Duration = .seconds(300)

    /// The dirty ranges of `bitmap` on the export `export` served at `socketPath`; the
    /// map's disk size is the export's.
    static func read(socketPath: String, export: String, bitmap: String) async throws(VerificationError) -> AllocationMap {
        let options = imageOptions(socketPath: socketPath, export: export, bitmap: bitmap)
        let what = "qemu-img map of dirty bitmap '\(bitmap)' on NBD export '\(export)' at \(socketPath)"
        let run: (status: Int32, stdout: Data, stderr: String)
        do {
            run = try await withTimeout(timeout) {
                try await runQemuImg(["map", "--output=json", "--image-opts", options])
            }
        } catch let error as VerificationError {
            throw VerificationError("\(what): \(error.description)")
        } catch {
            throw VerificationError("\(what) could not be run: \(describe(error))")
        }
        guard run.status == 0 else {
            throw VerificationError("\(what) failed (exit \(run.status)): \(run.stderr)\(hint(run.stderr))")
        }
        let map: QemuImgMap
        do {
            map = try QemuImgMap(json: run.stdout)
        } catch {
            throw VerificationError("\(what) printed something else than a JSON map: \(describe(error))")
        }
        return try dirtyRanges(of: map, what: what)
    }

    /// The dirty ranges of a map read with `x-dirty-bitmap`: `present` and `data` both
    /// false. Throws on a range that is neither dirty nor clean as such a map says it.
    static func dirtyRanges(of map: QemuImgMap, what: String) throws(VerificationError) -> AllocationMap {
        var dirty: [AllocationMap.Extent] = []
        for range in map.ranges {
            switch (range.present, range.data) {
            case (false?, false):
                dirty.append(AllocationMap.Extent(start: range.start, length: range.length))
            case (true?, true):
                break  // clean
            case (let present, let data):
                throw VerificationError(
                    "\(what): a range at \(range.start) (+\(range.length)) says present \(present.map(String.init) ?? "missing"), data \(data), which is neither dirty nor clean: did qemu-img read the bitmap?")
            }
        }
        return AllocationMap(extents: dirty, diskSize: map.allocationMap.diskSize)
    }

    /// The `--image-opts` string. QEMU's option syntax ends a value at a comma, and reads
    /// a doubled comma as one: every value has its commas doubled.
    static func imageOptions(socketPath: String, export: String, bitmap: String) -> String {
        func quoted(_ value: String) -> String { value.replacingOccurrences(of: ",", with: ",,") }
        return "driver=nbd,server.type=unix,server.path=\(quoted(socketPath)),export=\(quoted(export)),"
            + "x-dirty-bitmap=qemu:dirty-bitmap:\(quoted(bitmap))"
    }

    /// qemu-img says only "Could not open image: Invalid argument" when the export lacks the bitmap.
    private static func hint(_ stderr: String) -> String {
        stderr.contains("Invalid argument") ? " (does the export carry that bitmap? block-export-add needs it in 'bitmaps')" : ""
    }

    /// `body`, or a `VerificationError` once `limit` has passed (the body's task is then
    /// cancelled, which kills its qemu-img).
    private static func withTimeout<Value: Sendable>(
        _ limit: Duration, _ body: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        try await withThrowingTaskGroup(of: Value?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw VerificationError("no answer within \(limit)")
            }
            return value
        }
    }
}
