import Foundation
import Testing

@testable import QMP

/// Parsing single QMP lines and splitting a byte stream into lines.
@Suite("QMP frame parsing")
struct QMPMessageTests {
    /// The message, or the reason it was rejected; fails the test on any other error.
    private func parse(_ line: String) -> Result<QMPMessage, QMPClientError> {
        do {
            return .success(try QMPMessage.parse(line: line))
        } catch let error as QMPClientError {
            return .failure(error)
        } catch {
            Issue.record("unexpected error type \(type(of: error)): \(error)")
            return .failure(.protocolViolation("unexpected \(error)"))
        }
    }

    /// Expects `line` to be rejected as a protocol violation whose text contains `fragment`.
    private func expectViolation(_ line: String, containing fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        switch parse(line) {
        case .success(let message):
            Issue.record("parsed \(message) from \(line.debugDescription)", sourceLocation: sourceLocation)
        case .failure(.protocolViolation(let what)):
            #expect(what.contains(fragment), "\(what.debugDescription) lacks \(fragment.debugDescription)", sourceLocation: sourceLocation)
        case .failure(let other):
            Issue.record("expected protocolViolation, got \(other)", sourceLocation: sourceLocation)
        }
    }

    @Test func greeting() throws {
        let line = #"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#
        guard case .greeting(let greeting) = try QMPMessage.parse(line: line + "\r\n") else {
            Issue.record("not a greeting")
            return
        }
        #expect(greeting["version"]?["qemu"]?["major"] == .int(7))
        #expect(greeting["capabilities"] == ["oob"])
    }

    @Test func replyWithReturn() throws {
        let message = try QMPMessage.parse(line: #"{"return": {"qemu": {"major": 7}}, "id": "lc-3"}"#)
        #expect(message == .reply(id: "lc-3", result: .success(["qemu": ["major": 7]])))
        #expect(try QMPMessage.parse(line: #"{"return": {}, "id": "lc-1"}"#) == .reply(id: "lc-1", result: .success([:])))
    }

    @Test func errorReply() throws {
        let message = try QMPMessage.parse(
            line: #"{"id": "lc-9", "error": {"class": "DeviceNotFound", "desc": "Device 'drive9' not found"}}"#)
        #expect(message == .reply(
            id: "lc-9", result: .failure(QMPErrorReply(errorClass: "DeviceNotFound", desc: "Device 'drive9' not found"))))
    }

    @Test func event() throws {
        let line = #"{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, "event": "JOB_STATUS_CHANGE", "data": {"status": "running", "id": "j1"}}"#
        let message = try QMPMessage.parse(line: line)
        #expect(message == .event(QMPEvent(
            name: "JOB_STATUS_CHANGE", data: ["status": "running", "id": "j1"], timestamp: 1_700_000_000.25)))
    }

    @Test func eventWithoutDataOrTimestamp() throws {
        #expect(try QMPMessage.parse(line: #"{"event": "STOP"}"#) == .event(QMPEvent(name: "STOP", data: [:], timestamp: 0)))
    }

    @Test func lineEndsAreStripped() throws {
        let expected = QMPMessage.reply(id: "a", result: .success(true))
        #expect(try QMPMessage.parse(line: "{\"return\": true, \"id\": \"a\"}\r\n") == expected)
        #expect(try QMPMessage.parse(line: "{\"return\": true, \"id\": \"a\"}\n") == expected)
        #expect(try QMPMessage.parse(line: "{\"return\": true, \"id\": \"a\"}\r") == expected)
        #expect(try QMPMessage.parse(line: Array("  {\"return\": true, \"id\": \"a\"}  ".utf8)) == expected)
        #expect(try QMPMessage.parse(line: "x{\"return\": true, \"id\": \"a\"}".dropFirst()) == expected)
    }

    @Test func garbageIsRejected() {
        expectViolation("this is not json", containing: "not valid JSON")
        expectViolation("\u{1}\u{2}\u{3}", containing: "not valid JSON")
        expectViolation("{\"return\": {}, \"id\": \"a\"} trailing", containing: "not valid JSON")
        expectViolation("", containing: "empty line")
        expectViolation(" \r\n", containing: "empty line")
    }

    @Test func invalidUTF8IsRejected() throws {
        var bytes = Array(#"{"return": "x", "id": "a"}"#.utf8)
        bytes[12] = 0xFF
        #expect(throws: QMPClientError.self) { try QMPMessage.parse(line: bytes) }
    }

    @Test func truncatedJSONIsRejected() {
        expectViolation(#"{"return": {"qemu": {"major": 7}}, "id": "lc-"#, containing: "not valid JSON")
        expectViolation(#"{"event": "STOP", "data": {"#, containing: "not valid JSON")
        expectViolation("{", containing: "not valid JSON")
        expectViolation(#"{"return": "unterminated"#, containing: "not valid JSON")
    }

    @Test func nonObjectsAreRejected() {
        expectViolation("[1, 2, 3]", containing: "an array")
        expectViolation("42", containing: "a number")
        expectViolation("-1.5e3", containing: "a number")
        expectViolation("\"return\"", containing: "a string")
        expectViolation("null", containing: "null")
        expectViolation("true", containing: "a boolean")
    }

    @Test func malformedMessagesAreRejected() {
        expectViolation(#"{"return": {}}"#, containing: "without an id")
        expectViolation(#"{"error": {"class": "GenericError", "desc": "JSON parse error"}}"#, containing: "without an id")
        expectViolation(#"{"return": {}, "id": 7}"#, containing: "not a string")
        expectViolation(#"{"return": {}, "error": {"class": "A", "desc": "B"}, "id": "x"}"#, containing: "both")
        expectViolation(#"{"error": "boom", "id": "x"}"#, containing: "class and desc")
        expectViolation(#"{"error": {"class": "A"}, "id": "x"}"#, containing: "class and desc")
        expectViolation(#"{"event": 12}"#, containing: "event name")
        expectViolation(#"{"QMP": []}"#, containing: "greeting")
        expectViolation(#"{"hello": "world"}"#, containing: "neither")
        expectViolation("{}", containing: "neither")
    }

    @Test func overlyLongLineIsRejected() {
        let filler = String(repeating: "a", count: QMPMessage.maxLineLength)
        expectViolation("{\"return\": \"\(filler)\", \"id\": \"x\"}", containing: "exceeds the limit")
    }

    @Test func deepNestingIsRejectedWithoutCrashing() {
        expectViolation(String(repeating: "[", count: 100_000), containing: "nested")
        expectViolation(String(repeating: "{\"a\":", count: 50_000), containing: "nested")
        // Brackets inside strings do not count.
        let inString = "{\"return\": \"" + String(repeating: "[", count: 10_000) + "\", \"id\": \"x\"}"
        #expect(throws: Never.self) { try QMPMessage.parse(line: inString) }
    }

    @Test func nestingUpToTheLimitParses() throws {
        // {"return": [[[…]]], "id": "x"}: the object is one level, the arrays the rest.
        let arrays = QMPMessage.maxNestingDepth - 1
        let line = "{\"return\": " + String(repeating: "[", count: arrays) + String(repeating: "]", count: arrays) + ", \"id\": \"x\"}"
        guard case .reply(let id, .success(let value)) = try QMPMessage.parse(line: line) else {
            Issue.record("not a successful reply")
            return
        }
        #expect(id == "x")
        var depth = 0
        var current: JSONValue? = value
        while case .array(let items)? = current {
            depth += 1
            current = items.first
        }
        #expect(depth == arrays)
    }
}

/// Splitting the byte stream into lines.
@Suite("QMP line framing")
struct QMPLineFramerTests {
    private func text(_ lines: [[UInt8]]) -> [String] {
        lines.map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func splitsOnNewlinesAndStripsCarriageReturns() throws {
        var framer = QMPLineFramer()
        let lines = try framer.feed(Array("one\r\ntwo\nthree\r\n".utf8))
        #expect(text(lines) == ["one", "two", "three"])
        #expect(framer.bufferedByteCount == 0)
    }

    @Test func ignoresEmptyLines() throws {
        var framer = QMPLineFramer()
        #expect(text(try framer.feed(Array("\r\n\n\r\none\r\n\r\n".utf8))) == ["one"])
    }

    @Test func keepsPartialLinesUntilComplete() throws {
        var framer = QMPLineFramer()
        #expect(try framer.feed(Array("{\"ret".utf8)).isEmpty)
        #expect(try framer.feed(Array("urn\": {}".utf8)).isEmpty)
        #expect(try framer.feed(Array("\r".utf8)).isEmpty)
        #expect(framer.bufferedByteCount == 14)
        #expect(text(try framer.feed(Array("\n{\"x".utf8))) == ["{\"return\": {}"])
        #expect(framer.bufferedByteCount == 3)
    }

    @Test func byteByByteGivesTheSameLines() throws {
        let stream = "{\"QMP\": {}}\r\n{\"event\": \"STOP\"}\r\n\r\n{\"return\": {}, \"id\": \"lc-1\"}\r\n"
        var framer = QMPLineFramer()
        var lines: [[UInt8]] = []
        for byte in stream.utf8 {
            lines += try framer.feed([byte])
        }
        #expect(text(lines) == ["{\"QMP\": {}}", "{\"event\": \"STOP\"}", "{\"return\": {}, \"id\": \"lc-1\"}"])
    }

    @Test func rejectsAnOverlongCompleteLine() {
        var framer = QMPLineFramer(maxLineLength: 8)
        #expect(throws: QMPClientError.self) { try framer.feed(Array("123456789\r\n".utf8)) }
    }

    @Test func rejectsAnOverlongUnfinishedLine() throws {
        var framer = QMPLineFramer(maxLineLength: 8)
        #expect(text(try framer.feed(Array("12345678\r\n1234".utf8))) == ["12345678"])
        #expect(try framer.feed(Array("5678\r".utf8)).isEmpty)
        #expect(throws: QMPClientError.self) { try framer.feed(Array("9".utf8)) }
    }
}
