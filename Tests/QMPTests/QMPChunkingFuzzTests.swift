import Foundation
import PropertyBased
import Testing

@testable import QMP

/// `QMPLineFramer` + `QMPMessage.parse` on generated traffic cut into pieces every which
/// way: they never crash, and what comes out — messages, and rejections of bad lines —
/// does not depend on where the stream was cut or how streams were joined.
///
/// The traffic and the cuts come from PropertyBased generators, fresh on every run; a
/// failure names the input (shrunk where the generators allow) and the `.fixedSeed`
/// replaying it. `propertyCheck` does not report an error its body throws, so the bodies
/// catch and record them.
@Suite("QMP framing under random chunking")
struct QMPChunkingFuzzTests {
    /// One line of traffic as framed in the stream, and the message it must decode to
    /// (nil: it must be refused).
    struct Line: Sendable {
        let text: String
        let expected: QMPMessage?
        /// Usually "", now and then an empty line ("\n" or "\r\n") before this one.
        var blankBefore = ""
        /// "\r\n" or "\n".
        var ending = "\n"
    }

    /// What parsing one framed line gave: a message or a refusal (by its kind only, so two
    /// chunkings are compared on outcomes, not on wording).
    enum Outcome: Equatable, CustomStringConvertible {
        case message(QMPMessage)
        case refused

        var description: String {
            switch self {
            case .message(let message): return "\(message)"
            case .refused: return "refused"
            }
        }
    }

    /// How a stream is cut into the pieces fed to a framer.
    enum Cutting: Sendable {
        case whole
        case byteByByte
        /// Right after each "\r", between it and its "\n".
        case afterEachCR
        /// Pieces of these sizes, used in turn until the stream ends (0: an empty piece).
        case sizes([Int])
    }

    // MARK: - Generators

    /// A JSON text and the value it stands for.
    struct JSONText: Sendable {
        let text: String
        let value: JSONValue
    }

    static let stringScalars: [Unicode.Scalar] = ["a", "z", "0", " ", "-", "/", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1F}",
                                                  "é", "日", "\u{2028}", "\u{FEFF}", "😀", "{", "}", "[", "]", ":", ","]

    /// A JSON string: its text, escaped one of the ways JSON allows, and its value.
    static let jsonString = zip(Gen<Unicode.Scalar?>.element(of: stringScalars).map { $0! }, Gen.bool)
        .array(of: 0...12)
        .map { scalars in
            var text = "\"", value = String.UnicodeScalarView()
            for (scalar, otherEscape) in scalars {
                value.append(scalar)
                switch scalar {
                case "\"": text += "\\\""
                case "\\": text += "\\\\"
                case "\n": text += otherEscape ? "\\u000a" : "\\n"
                case "\r": text += "\\r"
                case "\t": text += "\\t"
                case "/": text += otherEscape ? "\\/" : "/"
                case "😀": text += otherEscape ? "\\ud83d\\ude00" : "😀"
                default:
                    if scalar.value < 0x20 {
                        text += String(format: "\\u%04x", scalar.value)
                    } else {
                        text.unicodeScalars.append(scalar)
                    }
                }
            }
            return (text: text + "\"", value: String(value))
        }

    /// A JSON value with its text: null, booleans, integers, exact halves, strings, and
    /// objects and arrays of up to four members, nested up to five deep.
    static func jsonValue(depth: Int = 0) -> Generator<JSONText, AnySequence<(index: Int, value: Any)>> {
        let null = Gen.always(JSONText(text: "null", value: .null))
        let bool = Gen.bool.map { JSONText(text: $0 ? "true" : "false", value: .bool($0)) }
        let int = Gen.int64(in: -1_000_000_000_000...1_000_000_000_000).map { JSONText(text: "\($0)", value: .int($0)) }
        let half = Gen.int(in: -100_000...100_000).map { JSONText(text: "\(Double($0) + 0.5)", value: .double(Double($0) + 0.5)) }
        let string = jsonString.map { JSONText(text: $0.text, value: .string($0.value)) }
        guard depth < 5 else { return Gen<JSONText>.oneOf(null, bool, int, half, string) }
        let member = jsonValue(depth: depth + 1)
        let object = zip(member, Gen.bool).array(of: 0...4).map { members in
            let parts = members.enumerated().map { index, member in "\"k\(index)\":" + (member.1 ? " " : "") + member.0.text }
            let values = members.enumerated().map { index, member in ("k\(index)", member.0.value) }
            return JSONText(text: "{" + parts.joined(separator: ", ") + "}", value: .object(Dictionary(uniqueKeysWithValues: values)))
        }
        let array = member.array(of: 0...4).map { items in
            JSONText(text: "[" + items.map(\.text).joined(separator: ",") + "]", value: .array(items.map(\.value)))
        }
        return Gen<JSONText>.frequency((1, null), (1, bool), (1, int), (1, half), (1, string), (2, object), (1, array))
    }

    static let json = jsonValue()

    static let id = Gen.int(in: 1...100_000).map { "lc-\($0)" }

    /// A valid line: greeting, reply, error reply or event, with the message it is.
    static let validLine = Gen<Line>.oneOf(
        Gen<String?>.element(of: QMPFuzzTests.corpus).map { Line(text: $0!, expected: try? QMPMessage.parse(line: $0!)) },
        zip(json, id).map { value, id in
            Line(text: "{\"return\": \(value.text), \"id\": \"\(id)\"}", expected: .reply(id: id, result: .success(value.value)))
        },
        zip(jsonString, id).map { desc, id in
            Line(text: "{\"id\": \"\(id)\", \"error\": {\"class\": \"GenericError\", \"desc\": \(desc.text)}}",
                 expected: .reply(id: id, result: .failure(QMPErrorReply(errorClass: "GenericError", desc: desc.value))))
        },
        zip(json, Gen.int(in: 0...2_000_000_000), id).map { data, seconds, id in
            Line(text: "{\"timestamp\": {\"seconds\": \(seconds), \"microseconds\": 500000}, "
                     + "\"event\": \"EV_\(id)\", \"data\": \(data.text)}",
                 expected: .event(QMPEvent(name: "EV_\(id)", data: data.value, timestamp: Double(seconds) + 0.5)))
        },
        json.map { version in
            Line(text: "{\"QMP\": {\"version\": \(version.text), \"capabilities\": []}}",
                 expected: .greeting(.object(["version": version.value, "capabilities": .array([])])))
        },
        id.map { Line(text: "  {\"return\": {}, \"id\": \"\($0)\"}\t ", expected: .reply(id: $0, result: .success(.object([:])))) })

    /// A line the parser must refuse (it contains no "\n", so the framer still delivers it).
    static let badLine = Gen<String?>.element(of: [
        "not json", "[]", "{}", "{\"return\": {}}", "{\"return\": 1, \"error\": {}, \"id\": \"x\"}", "{\"event\": 3}",
        "{\"QMP\": 1}", "{\"error\": {\"class\": 1}, \"id\": \"x\"}", "{\"return\": {}, \"id\": 5}", "\u{1}\u{2}",
        String(repeating: "[", count: 300) + String(repeating: "]", count: 300), "{\"return\": \"\u{FF}", "\r \t",
    ]).map { Line(text: $0!, expected: nil) }

    /// Lines ending "\r\n" or "\n", one in ten after an empty line; with `bad`, one in five
    /// is a line to refuse.
    static func traffic(_ count: ClosedRange<Int>, bad: Bool) -> Generator<[Line], some SendableSequenceType> {
        let blank = Gen<String>.frequency((18, Gen.always("")), (1, Gen.always("\n")), (1, Gen.always("\r\n")))
        return zip(bad ? Gen<Line>.frequency((4, validLine), (1, badLine)) : validLine, blank, Gen.bool)
            .map { line, blank, crlf in
                var line = line
                line.blankBefore = blank
                line.ending = crlf ? "\r\n" : "\n"
                return line
            }
            .array(of: count)
    }

    static func stream(_ lines: [Line]) -> [UInt8] {
        Array(lines.map { $0.blankBefore + $0.text + $0.ending }.joined().utf8)
    }

    /// Sizes for `Cutting.sizes`, not all zero.
    static func sizes(_ range: ClosedRange<Int>) -> Generator<[Int], some SendableSequenceType> {
        Gen.int(in: range).array(of: 1...32).filter { $0.contains { $0 > 0 } }
    }

    /// Every way to cut a stream: whole, byte by byte, after each "\r", and in pieces of
    /// 0 to 3, 1 to 64 and 0 to 5000 bytes.
    static let everyCutting: Generator<[Cutting], some SendableSequenceType> = zip(sizes(0...3), sizes(1...64), sizes(0...5_000))
        .map { small, medium, large in [.whole, .byteByByte, .afterEachCR, .sizes(small), .sizes(medium), .sizes(large)] }

    /// One of those ways.
    static let cutting: Generator<Cutting, some SendableSequenceType> = Gen<Cutting>.oneOf(
        Gen.always(.whole), Gen.always(.byteByByte), Gen.always(.afterEachCR),
        sizes(0...3).map { .sizes($0) }, sizes(1...64).map { .sizes($0) }, sizes(0...5_000).map { .sizes($0) })

    /// Cuts `bytes` into pieces as `cutting` says, and adds an empty piece at the end.
    static func pieces(_ bytes: [UInt8], _ cutting: Cutting) -> [ArraySlice<UInt8>] {
        var pieces: [ArraySlice<UInt8>] = []
        var offset = 0
        var turn = 0
        while offset < bytes.count {
            let size: Int
            switch cutting {
            case .whole: size = bytes.count
            case .byteByByte: size = 1
            case .afterEachCR:
                let rest = bytes[offset...]
                size = (rest.firstIndex(of: UInt8(ascii: "\r")).map { $0 - offset + 1 }) ?? rest.count
            case .sizes(let sizes):
                size = sizes[turn % sizes.count]
                turn += 1
            }
            let end = min(bytes.count, offset + size)
            pieces.append(bytes[offset..<end])
            offset = end
        }
        pieces.append(bytes[bytes.count...])
        return pieces
    }

    /// Frames and parses `pieces` with one framer: the outcomes in order. A framer that
    /// throws is a failure (these lines are all far below its limit).
    static func outcomes(_ pieces: [ArraySlice<UInt8>], framer: inout QMPLineFramer) -> [Outcome] {
        var outcomes: [Outcome] = []
        for piece in pieces {
            do {
                for line in try framer.feed(piece) {
                    do {
                        outcomes.append(.message(try QMPMessage.parse(line: line)))
                    } catch QMPClientError.protocolViolation {
                        outcomes.append(.refused)
                    }
                }
            } catch {
                Issue.record("\(error) at byte \(piece.startIndex)")
            }
        }
        return outcomes
    }

    static func expectedOutcomes(_ lines: [Line]) -> [Outcome] {
        lines.map { line in line.expected.map(Outcome.message) ?? .refused }
    }

    // MARK: - Properties

    /// Valid traffic decodes to the generated messages, however it is cut.
    @Test func validTrafficDecodesTheSameUnderEveryChunking() async {
        await propertyCheck(count: 40, input: Self.traffic(1...60, bad: false), Self.everyCutting) { lines, cuttings in
            let expected = Self.expectedOutcomes(lines)
            #expect(!expected.contains(.refused), "valid traffic")
            let bytes = Self.stream(lines)
            for cutting in cuttings {
                var framer = QMPLineFramer()
                #expect(Self.outcomes(Self.pieces(bytes, cutting), framer: &framer) == expected, "\(cutting)")
                #expect(framer.bufferedByteCount == 0)
            }
        }
    }

    /// Traffic with bad lines mixed in: each bad line is refused on its own, and the
    /// outcome list is the same for every chunking.
    @Test func badLinesAreRefusedAloneUnderEveryChunking() async {
        await propertyCheck(count: 30, input: Self.traffic(1...60, bad: true), Self.everyCutting) { lines, cuttings in
            let expected = Self.expectedOutcomes(lines)
            let bytes = Self.stream(lines)
            for cutting in cuttings {
                var framer = QMPLineFramer()
                #expect(Self.outcomes(Self.pieces(bytes, cutting), framer: &framer) == expected, "\(cutting)")
            }
        }
    }

    /// Streams joined end to end give the concatenation of their outcomes, whether fed
    /// as one buffer or stream after stream, each cut its own way, to one framer.
    @Test func joinedStreamsGiveTheirMessagesInOrder() async {
        await propertyCheck(count: 40, input: zip(Self.traffic(0...20, bad: true), Self.cutting).array(of: 2...5)) { parts in
            let streams = parts.map { Self.stream($0.0) }
            var whole = QMPLineFramer()
            let together = Self.outcomes([ArraySlice(streams.joined())], framer: &whole)
            var framer = QMPLineFramer()
            var oneByOne: [Outcome] = []
            for (stream, part) in zip(streams, parts) {
                oneByOne += Self.outcomes(Self.pieces(stream, part.1), framer: &framer)
            }
            #expect(together == oneByOne)
            #expect(together == Self.expectedOutcomes(parts.flatMap(\.0)))
        }
    }

    /// Random bytes cut any way yield the lines an unlimited framer finds; with a small
    /// limit, every chunking throws `protocolViolation` exactly when a line is too long,
    /// having delivered only lines before it.
    @Test func randomBytesFrameTheSameUnderEveryChunking() async {
        let alphabet: [UInt8] = Array("{}[]\":,\\ \r\n\n\nab0".utf8) + [0x00, 0x80, 0xC3, 0xFF]
        let bytes = Gen<UInt8?>.element(of: alphabet).map { $0! }.array(of: 0...600)
        let limit = 48
        await propertyCheck(count: 600, input: bytes, Self.everyCutting) { bytes, cuttings in
            var unlimited = QMPLineFramer()
            let all: [[UInt8]]
            do {
                all = try unlimited.feed(bytes)
            } catch {
                Issue.record("a framer without a small limit threw \(error)")
                return
            }
            let mustThrow = all.contains { $0.count > limit } || unlimited.bufferedByteCount > limit + 1
            for cutting in cuttings {
                var framer = QMPLineFramer(maxLineLength: limit)
                var lines: [[UInt8]] = []
                var threw = false
                do {
                    for piece in Self.pieces(bytes, cutting) {
                        let framed = try framer.feed(piece)
                        for line in framed {
                            #expect(line.count <= limit && !line.isEmpty && !line.contains(UInt8(ascii: "\n")))
                            do { _ = try QMPMessage.parse(line: line) } catch QMPClientError.protocolViolation {}
                        }
                        lines += framed
                    }
                } catch QMPClientError.protocolViolation {
                    threw = true
                } catch {
                    Issue.record("\(cutting): threw \(error), not protocolViolation")
                }
                #expect(threw == mustThrow, "\(cutting)")
                if threw {
                    // The lines of the failing feed are lost; smaller pieces deliver more of the ones before.
                    #expect(all.starts(with: lines), "\(cutting)")
                } else {
                    #expect(lines == all, "\(cutting)")
                }
            }
        }
    }
}
