import Foundation
import TestSupport
import Testing

@testable import QMP

/// `QMPLineFramer` + `QMPMessage.parse` on random traffic cut into random chunks: they
/// never crash, and what comes out — messages, and rejections of bad lines — does not
/// depend on where the stream was cut or how streams were joined.
@Suite("QMP framing under random chunking")
struct QMPChunkingFuzzTests {
    /// One line of traffic and the message it must decode to (nil: it must be refused).
    struct Line {
        let text: String
        let expected: QMPMessage?
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

    // MARK: - Generators

    static func jsonString(_ rng: inout SplitMix64) -> (text: String, value: String) {
        let pool: [Unicode.Scalar] = ["a", "z", "0", " ", "-", "/", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1F}", "é", "日",
                                      "\u{2028}", "\u{FEFF}", "😀", "{", "}", "[", "]", ":", ","]
        var value = String.UnicodeScalarView()
        for _ in 0..<Int.random(in: 0...12, using: &rng) { value.append(pool.randomElement(using: &rng)!) }
        var text = "\""
        for scalar in value {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += Bool.random(using: &rng) ? "\\n" : "\\u000a"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case "/": text += Bool.random(using: &rng) ? "\\/" : "/"
            case "😀": text += Bool.random(using: &rng) ? "\\ud83d\\ude00" : "😀"
            default:
                if scalar.value < 0x20 {
                    text += String(format: "\\u%04x", scalar.value)
                } else {
                    text.unicodeScalars.append(scalar)
                }
            }
        }
        return (text + "\"", String(value))
    }

    /// A random JSON value with its text (integers, exact halves, strings, nesting).
    static func jsonValue(_ rng: inout SplitMix64, depth: Int = 0) -> (text: String, value: JSONValue) {
        switch Int.random(in: 0..<(depth > 4 ? 5 : 8), using: &rng) {
        case 0: return ("null", .null)
        case 1:
            let flag = Bool.random(using: &rng)
            return (flag ? "true" : "false", .bool(flag))
        case 2:
            let number = Int64.random(in: -1_000_000_000_000...1_000_000_000_000, using: &rng)
            return ("\(number)", .int(number))
        case 3:
            let number = Double(Int.random(in: -100_000...100_000, using: &rng)) + 0.5
            return ("\(number)", .double(number))
        case 4:
            let (text, value) = jsonString(&rng)
            return (text, .string(value))
        case 5, 6:
            var members: [String: JSONValue] = [:]
            var parts: [String] = []
            for index in 0..<Int.random(in: 0...4, using: &rng) {
                let key = "k\(index)"
                let (text, value) = jsonValue(&rng, depth: depth + 1)
                members[key] = value
                parts.append("\"\(key)\":" + (Bool.random(using: &rng) ? " " : "") + text)
            }
            return ("{" + parts.joined(separator: ", ") + "}", .object(members))
        default:
            let items = (0..<Int.random(in: 0...4, using: &rng)).map { _ in jsonValue(&rng, depth: depth + 1) }
            return ("[" + items.map(\.text).joined(separator: ",") + "]", .array(items.map(\.value)))
        }
    }

    /// A valid line: greeting, reply, error reply or event, with the message it is.
    static func validLine(_ rng: inout SplitMix64) -> Line {
        let id = "lc-\(Int.random(in: 1...100_000, using: &rng))"
        switch Int.random(in: 0..<6, using: &rng) {
        case 0:
            let text = QMPFuzzTests.corpus.randomElement(using: &rng)!
            return Line(text: text, expected: try? QMPMessage.parse(line: text))
        case 1:
            let (text, value) = jsonValue(&rng)
            return Line(text: "{\"return\": \(text), \"id\": \"\(id)\"}", expected: .reply(id: id, result: .success(value)))
        case 2:
            let (desc, value) = jsonString(&rng)
            return Line(text: "{\"id\": \"\(id)\", \"error\": {\"class\": \"GenericError\", \"desc\": \(desc)}}",
                        expected: .reply(id: id, result: .failure(QMPErrorReply(errorClass: "GenericError", desc: value))))
        case 3:
            let (data, value) = jsonValue(&rng)
            let seconds = Int.random(in: 0...2_000_000_000, using: &rng)
            return Line(
                text: "{\"timestamp\": {\"seconds\": \(seconds), \"microseconds\": 500000}, \"event\": \"EV_\(id)\", \"data\": \(data)}",
                expected: .event(QMPEvent(name: "EV_\(id)", data: value, timestamp: Double(seconds) + 0.5)))
        case 4:
            let (text, value) = jsonValue(&rng)
            return Line(text: "{\"QMP\": {\"version\": \(text), \"capabilities\": []}}",
                        expected: .greeting(.object(["version": value, "capabilities": .array([])])))
        default:
            return Line(text: "  {\"return\": {}, \"id\": \"\(id)\"}\t ", expected: .reply(id: id, result: .success(.object([:]))))
        }
    }

    /// A line the parser must refuse (it contains no "\n", so the framer still delivers it).
    static func badLine(_ rng: inout SplitMix64) -> Line {
        let text = [
            "not json", "[]", "{}", "{\"return\": {}}", "{\"return\": 1, \"error\": {}, \"id\": \"x\"}", "{\"event\": 3}",
            "{\"QMP\": 1}", "{\"error\": {\"class\": 1}, \"id\": \"x\"}", "{\"return\": {}, \"id\": 5}", "\u{1}\u{2}",
            String(repeating: "[", count: 300) + String(repeating: "]", count: 300), "{\"return\": \"\u{FF}", "\r \t",
        ].randomElement(using: &rng)!
        return Line(text: text, expected: nil)
    }

    static func traffic(_ rng: inout SplitMix64, count: Int, bad: Bool) -> [Line] {
        (0..<count).map { _ in bad && Int.random(in: 0..<5, using: &rng) == 0 ? badLine(&rng) : validLine(&rng) }
    }

    /// The stream's bytes: each line ends "\r\n" or "\n", with empty lines here and there.
    static func stream(_ lines: [Line], _ rng: inout SplitMix64) -> [UInt8] {
        var bytes: [UInt8] = []
        for line in lines {
            if Int.random(in: 0..<10, using: &rng) == 0 { bytes += Array(["\n", "\r\n"].randomElement(using: &rng)!.utf8) }
            bytes += Array(line.text.utf8) + Array((Bool.random(using: &rng) ? "\r\n" : "\n").utf8)
        }
        return bytes
    }

    /// Cuts `bytes` in pieces of random sizes, empty ones included; `style` picks the sizes.
    static func chunks(_ bytes: [UInt8], style: Int, _ rng: inout SplitMix64) -> [ArraySlice<UInt8>] {
        var pieces: [ArraySlice<UInt8>] = []
        var offset = 0
        while offset < bytes.count {
            let size: Int
            switch style {
            case 0: size = bytes.count
            case 1: size = 1
            case 2: size = Int.random(in: 0...3, using: &rng)
            case 3: size = Int.random(in: 1...64, using: &rng)
            case 4:
                // Cut right after each "\r", between it and its "\n".
                let rest = bytes[offset...]
                size = (rest.firstIndex(of: UInt8(ascii: "\r")).map { $0 - offset + 1 }) ?? rest.count
            default: size = Int.random(in: 0...5_000, using: &rng)
            }
            let end = min(bytes.count, offset + size)
            pieces.append(bytes[offset..<end])
            offset = end
        }
        if Bool.random(using: &rng) { pieces.append([]) }
        return pieces
    }

    /// Frames and parses `pieces` with one framer: the outcomes in order.
    static func outcomes(_ pieces: [ArraySlice<UInt8>], framer: inout QMPLineFramer) throws -> [Outcome] {
        var outcomes: [Outcome] = []
        for piece in pieces {
            for line in try framer.feed(piece) {
                do {
                    outcomes.append(.message(try QMPMessage.parse(line: line)))
                } catch QMPClientError.protocolViolation {
                    outcomes.append(.refused)
                }
            }
        }
        return outcomes
    }

    // MARK: - Properties

    /// Valid traffic decodes to the generated messages, however it is cut.
    @Test(arguments: [UInt64(40), 41, 42])
    func validTrafficDecodesTheSameUnderEveryChunking(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        for round in 0..<12 {
            let lines = Self.traffic(&rng, count: Int.random(in: 1...60, using: &rng), bad: false)
            let expected = lines.map { Outcome.message($0.expected!) }
            let bytes = Self.stream(lines, &rng)
            for style in 0..<6 {
                var framer = QMPLineFramer()
                let got = try Self.outcomes(Self.chunks(bytes, style: style, &rng), framer: &framer)
                #expect(got == expected, "seed \(seed) round \(round) style \(style)")
                #expect(framer.bufferedByteCount == 0)
            }
        }
    }

    /// Traffic with bad lines mixed in: each bad line is refused on its own, and the
    /// outcome list is the same for every chunking.
    @Test(arguments: [UInt64(43), 44])
    func badLinesAreRefusedAloneUnderEveryChunking(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        for round in 0..<12 {
            let lines = Self.traffic(&rng, count: Int.random(in: 1...60, using: &rng), bad: true)
            let bytes = Self.stream(lines, &rng)
            let expected = lines.map { line in line.expected.map(Outcome.message) ?? .refused }
            for style in 0..<6 {
                var framer = QMPLineFramer()
                let got = try Self.outcomes(Self.chunks(bytes, style: style, &rng), framer: &framer)
                #expect(got == expected, "seed \(seed) round \(round) style \(style)")
            }
        }
    }

    /// Streams joined end to end give the concatenation of their outcomes, whether fed
    /// as one buffer or stream after stream, each cut its own way, to one framer.
    @Test(arguments: [UInt64(45), 46])
    func joinedStreamsGiveTheirMessagesInOrder(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        for _ in 0..<20 {
            let parts = (0..<Int.random(in: 2...5, using: &rng)).map { _ in
                Self.traffic(&rng, count: Int.random(in: 0...20, using: &rng), bad: true)
            }
            let streams = parts.map { Self.stream($0, &rng) }
            var whole = QMPLineFramer()
            let together = try Self.outcomes([ArraySlice(streams.joined())], framer: &whole)
            var framer = QMPLineFramer()
            var oneByOne: [Outcome] = []
            for stream in streams {
                oneByOne += try Self.outcomes(Self.chunks(stream, style: Int.random(in: 0..<6, using: &rng), &rng), framer: &framer)
            }
            #expect(together == oneByOne, "seed \(seed)")
            #expect(together == parts.joined().map { line in line.expected.map(Outcome.message) ?? .refused }, "seed \(seed)")
        }
    }

    /// Random bytes cut any way yield the lines an unlimited framer finds; with a small
    /// limit, every chunking throws `protocolViolation` exactly when a line is too long,
    /// having delivered only lines before it.
    @Test(arguments: [UInt64(47), 48])
    func randomBytesFrameTheSameUnderEveryChunking(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let alphabet: [UInt8] = Array("{}[]\":,\\ \r\n\n\nab0".utf8) + [0x00, 0x80, 0xC3, 0xFF]
        let limit = 48
        for round in 0..<300 {
            let bytes = (0..<Int.random(in: 0...600, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            var unlimited = QMPLineFramer()
            let all = try unlimited.feed(bytes)
            let mustThrow = all.contains { $0.count > limit } || unlimited.bufferedByteCount > limit + 1
            for style in 0..<6 {
                var framer = QMPLineFramer(maxLineLength: limit)
                var lines: [[UInt8]] = []
                var threw = false
                do {
                    for piece in Self.chunks(bytes, style: style, &rng) {
                        let framed = try framer.feed(piece)
                        for line in framed {
                            #expect(line.count <= limit && !line.isEmpty && !line.contains(UInt8(ascii: "\n")))
                            do { _ = try QMPMessage.parse(line: line) } catch QMPClientError.protocolViolation {}
                        }
                        lines += framed
                    }
                } catch QMPClientError.protocolViolation {
                    threw = true
                }
                #expect(threw == mustThrow, "seed \(seed) round \(round) style \(style)")
                if threw {
                    // The lines of the failing feed are lost; smaller pieces deliver more of the ones before.
                    #expect(all.starts(with: lines), "seed \(seed) round \(round) style \(style)")
                } else {
                    #expect(lines == all, "seed \(seed) round \(round) style \(style)")
                }
            }
        }
    }
}
