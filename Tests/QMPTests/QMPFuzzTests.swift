import Foundation
import PropertyBased
import Testing

@testable import QMP

/// Feeds the parser and the framer random and mutated input: they never crash, every
/// rejection is a `protocolViolation`, and the framer gives back a stream's lines however
/// it is cut. The inputs come from PropertyBased generators, fresh on every run; a failure
/// names the input (shrunk where the generators allow) and the `.fixedSeed` replaying it.
/// `propertyCheck` does not report an error its body throws, so the bodies catch and record them.
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

    /// Half the time an interesting byte, else any byte.
    static let byte = Gen<UInt8>.oneOf(Gen<UInt8?>.element(of: interestingBytes).map { $0! }, Gen.uint8())

    /// A position or a length, taken modulo what it indexes.
    static let index = Gen.int(in: 0...1_000_000)

    /// One edit of a line's bytes; positions and lengths are taken modulo the line's length.
    enum ByteEdit: Sendable {
        case truncate(keeping: Int)
        case replace(at: Int, with: UInt8)
        case insert(UInt8, at: Int)
        case remove(at: Int)
        case duplicate(from: Int, length: Int, at: Int)
        /// The first `keeping` bytes, then a corpus line from `from` on.
        case splice(keeping: Int, corpusLine: Int, from: Int)

        func apply(to bytes: inout [UInt8]) {
            let count = bytes.count
            switch self {
            case .truncate(let keeping):
                bytes = Array(bytes.prefix(keeping % (count + 1)))
            case .replace(let at, let byte) where count > 0:
                bytes[at % count] = byte
            case .insert(let byte, let at):
                bytes.insert(byte, at: at % (count + 1))
            case .remove(let at) where count > 0:
                bytes.remove(at: at % count)
            case .duplicate(let from, let length, let at) where count > 0:
                let start = from % count
                let end = start + length % (count - start + 1)
                bytes.insert(contentsOf: bytes[start..<end], at: at % (count + 1))
            case .splice(let keeping, let corpusLine, let from):
                let other = Array(QMPFuzzTests.corpus[corpusLine].utf8)
                bytes = Array(bytes.prefix(keeping % (count + 1))) + other[(from % (other.count + 1))...]
            case .replace, .remove, .duplicate:
                break  // nothing to edit in an empty line
            }
        }
    }

    static let byteEdit = Gen<ByteEdit>.oneOf(
        index.map { .truncate(keeping: $0) },
        zip(index, byte).map { .replace(at: $0, with: $1) },
        zip(byte, index).map { .insert($0, at: $1) },
        index.map { .remove(at: $0) },
        zip(index, index, index).map { .duplicate(from: $0, length: $1, at: $2) },
        zip(index, Gen.int(in: 0..<corpus.count), index).map { .splice(keeping: $0, corpusLine: $1, from: $2) })

    /// Parses `bytes`; anything but success or `protocolViolation` is a failure.
    static func parseNeverCrashes(_ bytes: [UInt8]) {
        do {
            _ = try QMPMessage.parse(line: bytes)
        } catch QMPClientError.protocolViolation {
            // Expected for most inputs.
        } catch {
            Issue.record("unexpected \(error) for \(String(decoding: bytes, as: UTF8.self).debugDescription)")
        }
    }

    @Test func corpusParses() throws {
        for line in Self.corpus {
            _ = try QMPMessage.parse(line: line)
        }
    }

    @Test func randomBytesNeverCrash() async {
        await propertyCheck(count: 9_000, input: Self.byte.array(of: 0...160)) { bytes in
            Self.parseNeverCrashes(bytes)
            // The same bytes wrapped as an object start, to get past the first-byte checks.
            Self.parseNeverCrashes(Array("{\"return\": ".utf8) + bytes)
        }
    }

    /// Corpus lines with one to four edits: truncated, flipped, inserted, deleted,
    /// duplicated or spliced bytes.
    @Test func mutatedLinesNeverCrash() async {
        await propertyCheck(count: 12_000, input: Gen.int(in: 0..<Self.corpus.count), Self.byteEdit.array(of: 1...4)) { line, edits in
            var bytes = Array(Self.corpus[line].utf8)
            for edit in edits {
                edit.apply(to: &bytes)
            }
            Self.parseNeverCrashes(bytes)
        }
    }

    @Test func everyTruncationOfValidLinesIsHandled() {
        for line in Self.corpus {
            let bytes = Array(line.utf8)
            for end in 0..<bytes.count {
                Self.parseNeverCrashes(Array(bytes[..<end]))
            }
        }
    }

    /// A stream of valid lines ending "\r\n" or "\n", cut into pieces of 1 to 700 bytes,
    /// comes out of the framer line for line, and every line parses.
    @Test func framerReassemblesChunkedStreams() async {
        let line = zip(Gen.int(in: 0..<Self.corpus.count), Gen.bool).map { (text: Self.corpus[$0], ending: $1 ? "\r\n" : "\n") }
        await propertyCheck(count: 30, input: line.array(of: 1...300), Gen.int(in: 1...700).array(of: 1...20)) { lines, sizes in
            let stream = Array(lines.map { $0.text + $0.ending }.joined().utf8)
            var framer = QMPLineFramer()
            var output: [String] = []
            for piece in QMPChunkingFuzzTests.pieces(stream, .sizes(sizes)) {
                do {
                    output += try framer.feed(piece).map { String(decoding: $0, as: UTF8.self) }
                } catch {
                    Issue.record("the framer threw \(error) at byte \(piece.startIndex)")
                    return
                }
            }
            #expect(output == lines.map(\.text))
            #expect(framer.bufferedByteCount == 0)
            for line in output {
                #expect(throws: Never.self) { try QMPMessage.parse(line: line) }
            }
        }
    }

    /// Garbage fed to a framer with a 64-byte limit, in chunks of up to 40 bytes, only ever
    /// throws `protocolViolation` (after which it is replaced), and the lines it gives are
    /// within the limit and parsed or refused without crashing.
    @Test func framerTakesGarbage() async {
        await propertyCheck(count: 200, input: Self.byte.array(of: 0...40).array(of: 1...100)) { chunks in
            var framer = QMPLineFramer(maxLineLength: 64)
            for chunk in chunks {
                do {
                    for line in try framer.feed(chunk) {
                        #expect(line.count <= 64 && !line.isEmpty)
                        Self.parseNeverCrashes(line)
                    }
                } catch QMPClientError.protocolViolation {
                    framer = QMPLineFramer(maxLineLength: 64)
                } catch {
                    Issue.record("the framer threw \(error), not protocolViolation")
                }
            }
        }
    }
}
