import Foundation
import TestSupport
import Testing

@testable import QMP

/// Feeds the parser and the framer random and mutated input: they must never crash, and
/// every rejection must be a `protocolViolation`.
@Suite("QMP parser fuzzing")
struct QMPFuzzTests {
    /// Real-looking lines to mutate.
    static let corpus: [String] = [
        #"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u16"}, "capabilities": ["oob"]}}"#,
        #"{"return": {}, "id": "lc-1"}"#,
        #"{"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "id": "lc-2"}"#,
        ##"{"return": [{"io-status": "ok", "device": "drive0", "locked": false, "removable": false, "inserted": {"iops_rd": 0, "detect_zeroes": "off", "image": {"virtual-size": 1048576, "filename": "/tmp/x/src.qcow2", "cluster-size": 65536, "format": "qcow2", "actual-size": 200704, "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "compression-type": "zlib", "lazy-refcounts": false, "refcount-bits": 16, "corrupt": false, "extended-l2": false}}, "dirty-flag": false}, "iops_wr": 0, "ro": false, "node-name": "#block118", "backing_file_depth": 0, "drv": "qcow2", "iops": 0, "bps_wr": 0, "write_threshold": 0, "encrypted": false, "bps": 0, "bps_rd": 0, "cache": {"no-flush": false, "direct": false, "writeback": true}, "file": "/tmp/x/src.qcow2"}, "qdev": "", "type": "unknown"}], "id": "lc-3"}"##,
        #"{"error": {"class": "DeviceNotFound", "desc": "Device 'drive9' not found"}, "id": "lc-4"}"#,
        #"{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "JOB_STATUS_CHANGE", "data": {"status": "concluded", "id": "stream-1"}}"#,
        #"{"timestamp": {"seconds": 1700000001, "microseconds": 5}, "event": "BLOCK_JOB_COMPLETED", "data": {"device": "stream-1", "len": 1048576, "offset": 1048576, "speed": 0, "type": "stream", "error": "No space left on device \u00e9\ud83d\ude00"}}"#,
        #"{"return": "\r\nQEMU 7.2.22 monitor - type 'help' for more information\r\n", "id": "lc-5"}"#,
        #"{"return": [1, -2, 3.5e10, true, false, null, "s", [], {}], "id": "lc-6"}"#,
    ]

    /// Bytes the mutations favour: JSON punctuation, quotes, escapes, line ends, odd bytes.
    static let interestingBytes: [UInt8] = Array("{}[]\":,\\ \r\n0123456789.-+eEtrufalsnu".utf8) + [0x00, 0x7F, 0x80, 0xC3, 0xE2, 0xED, 0xF0, 0xFF]

    /// Parses `bytes`; anything but success or `protocolViolation` is a failure.
    private func parseNeverCrashes(_ bytes: [UInt8], seed: UInt64) {
        do {
            _ = try QMPMessage.parse(line: bytes)
        } catch QMPClientError.protocolViolation {
            // Expected for most inputs.
        } catch {
            Issue.record("seed \(seed): unexpected \(error) for \(String(decoding: bytes, as: UTF8.self).debugDescription)")
        }
    }

    private func randomByte(_ rng: inout SplitMix64) -> UInt8 {
        Bool.random(using: &rng)
            ? Self.interestingBytes.randomElement(using: &rng)!
            : UInt8.random(in: 0...255, using: &rng)
    }

    /// One random edit: truncate, flip, insert, delete, duplicate or splice.
    private func mutate(_ bytes: inout [UInt8], _ rng: inout SplitMix64) {
        guard !bytes.isEmpty else {
            bytes.append(randomByte(&rng))
            return
        }
        switch Int.random(in: 0..<6, using: &rng) {
        case 0:
            bytes.removeLast(Int.random(in: 0...bytes.count, using: &rng))
        case 1:
            bytes[Int.random(in: 0..<bytes.count, using: &rng)] = randomByte(&rng)
        case 2:
            bytes.insert(randomByte(&rng), at: Int.random(in: 0...bytes.count, using: &rng))
        case 3:
            bytes.remove(at: Int.random(in: 0..<bytes.count, using: &rng))
        case 4:
            let start = Int.random(in: 0..<bytes.count, using: &rng)
            let end = Int.random(in: start...bytes.count, using: &rng)
            bytes.insert(contentsOf: bytes[start..<end], at: Int.random(in: 0...bytes.count, using: &rng))
        default:
            let other = Array(Self.corpus.randomElement(using: &rng)!.utf8)
            let cut = Int.random(in: 0...other.count, using: &rng)
            bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng))) + other[cut...]
        }
    }

    @Test func corpusParses() throws {
        for line in Self.corpus {
            _ = try QMPMessage.parse(line: line)
        }
    }

    @Test(arguments: [UInt64(1), 2, 3])
    func randomBytesNeverCrash(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for _ in 0..<3_000 {
            let count = Int.random(in: 0...160, using: &rng)
            let bytes = (0..<count).map { _ in randomByte(&rng) }
            parseNeverCrashes(bytes, seed: seed)
            // The same bytes wrapped as an object start, to get past the first-byte checks.
            parseNeverCrashes(Array("{\"return\": ".utf8) + bytes, seed: seed)
        }
    }

    @Test(arguments: [UInt64(10), 11, 12])
    func mutatedLinesNeverCrash(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for _ in 0..<4_000 {
            var bytes = Array(Self.corpus.randomElement(using: &rng)!.utf8)
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                mutate(&bytes, &rng)
            }
            parseNeverCrashes(bytes, seed: seed)
        }
    }

    @Test(arguments: [UInt64(20), 21])
    func everyTruncationOfValidLinesIsHandled(seed: UInt64) {
        for line in Self.corpus {
            let bytes = Array(line.utf8)
            for end in 0..<bytes.count {
                parseNeverCrashes(Array(bytes[..<end]), seed: seed)
            }
        }
    }

    /// A random stream of valid lines, cut into random chunks, comes out of the framer
    /// line for line; random garbage fed to a framer only ever throws `protocolViolation`.
    @Test(arguments: [UInt64(30), 31, 32])
    func framerReassemblesRandomChunks(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let lines = (0..<300).map { _ in Self.corpus.randomElement(using: &rng)! }
        let stream = Array(lines.map { $0 + (Bool.random(using: &rng) ? "\r\n" : "\n") }.joined().utf8)
        var framer = QMPLineFramer()
        var output: [String] = []
        var offset = 0
        while offset < stream.count {
            let size = min(stream.count - offset, Int.random(in: 1...700, using: &rng))
            output += try framer.feed(stream[offset..<(offset + size)]).map { String(decoding: $0, as: UTF8.self) }
            offset += size
        }
        #expect(output == lines)
        for line in output {
            _ = try QMPMessage.parse(line: line)
        }

        var garbageFramer = QMPLineFramer(maxLineLength: 64)
        for _ in 0..<2_000 {
            let chunk = (0..<Int.random(in: 0...40, using: &rng)).map { _ in randomByte(&rng) }
            do {
                for line in try garbageFramer.feed(chunk) {
                    #expect(line.count <= 64)
                    parseNeverCrashes(line, seed: seed)
                }
            } catch QMPClientError.protocolViolation {
                garbageFramer = QMPLineFramer(maxLineLength: 64)
            }
        }
    }
}
