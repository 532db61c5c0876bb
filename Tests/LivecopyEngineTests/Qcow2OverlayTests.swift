import Foundation
@testable import LivecopyEngine
import TestSupport
import Testing

/// livecopy writes the destination overlay itself; `qemu-img` checks every byte of it.
@Suite(.requires(.qemu))
struct Qcow2OverlayTests {
    /// Sizes around the layout's edges: one L1 entry, several, one L1 cluster (4 TiB), two.
    @Test(arguments: [
        (Int64(1) << 20, "qcow2"), (Int64(64) << 20, "raw"), ((Int64(1) << 30) + 512, "qcow2"),
        (Int64(4) << 40, "qcow2"), ((Int64(4) << 40) + 65536, "raw"),
    ])
    func theOverlayIsWhatQemuImgCreateMakes(size: Int64, format: String) throws {
        let scratch = try TemporaryDirectory(prefix: "lc-overlay")
        defer { scratch.remove() }
        let backing = scratch.appending("base image.\(format)")
        let mine = scratch.appending("mine.qcow2")
        let theirs = scratch.appending("theirs.qcow2")
        // qemu-img check and map open the backing file (sparse: nothing is written into it).
        let base = try QEMUTools.run("qemu-img", ["create", "-q", "-f", format, backing, String(size)])
        #expect(base.status == 0, "\(base.stderr)")
        try ExclusiveOverlayCreator().createOverlay(at: mine, backing: backing, backingFormat: format, virtualSize: size)
        let made = try QEMUTools.run("qemu-img", ["create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", format, theirs, String(size)])
        #expect(made.status == 0, "\(made.stderr)")

        let check = try QEMUTools.run("qemu-img", ["check", "-f", "qcow2", mine])
        #expect(check.status == 0, "qemu-img check: \(check.stdout) \(check.stderr)")
        #expect(check.stdout.contains("No errors were found"), "\(check.stdout)")
        // The same image as qemu-img's, field by field (file names aside).
        func info(_ path: String) throws -> [String: String] {
            let result = try QEMUTools.run("qemu-img", ["info", "-f", "qcow2", "--output=json", path])
            let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
            var fields: [String: String] = [:]
            for key in ["virtual-size", "cluster-size", "backing-filename", "backing-filename-format", "format", "dirty-flag"] {
                fields[key] = object[key].map { "\($0)" }
            }
            let specific = (object["format-specific"] as? [String: Any])?["data"] as? [String: Any] ?? [:]
            for (key, value) in specific { fields["specific." + key] = "\(value)" }
            return fields
        }
        let mineInfo = try info(mine)
        #expect(mineInfo == (try info(theirs)))
        #expect(mineInfo["virtual-size"] == String(size))
        #expect(mineInfo["backing-filename"] == backing)
        #expect(mineInfo["backing-filename-format"] == format)
        // Nothing allocated in the overlay: every read falls through to the backing file.
        let map = try QEMUTools.run("qemu-img", ["map", "-f", "qcow2", "--output=json", mine])
        let extents = try JSONSerialization.jsonObject(with: Data(map.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(!extents.isEmpty)
        #expect(!extents.contains { ($0["depth"] as? Int) == 0 && ($0["data"] as? Bool) == true }, "\(map.stdout.prefix(300))")
        var stat1 = stat()
        #expect(stat(mine, &stat1) == 0 && stat1.st_mode & 0o777 == 0o600)
    }

    @Test func requestsQemuCouldNotOpenLeaveNoFile() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-overlay-bad")
        defer { scratch.remove() }
        let path = scratch.appending("d.qcow2")
        for (size, backing, format) in [(Int64(1000), "/b", "qcow2"), (Int64(1 << 20), "", "qcow2"),
                                        (Int64(1 << 20), "/b", "qc ow2"), (Int64(1 << 20), String(repeating: "x", count: 1024), "raw")] {
            #expect(throws: CreationFailed.self) {
                try ExclusiveOverlayCreator().createOverlay(at: path, backing: backing, backingFormat: format, virtualSize: size)
            }
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }
}
