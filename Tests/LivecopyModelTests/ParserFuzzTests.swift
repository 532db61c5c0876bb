import Foundation
import LivecopyBackend
import LivecopyModel
import PropertyBased
import Testing

/// Property-based tests of the plan and policy parsers on generated, mutated and hostile
/// input. Whatever the input, a parser never crashes and never hangs; it either returns
/// a value that keeps every invariant or throws an `InputError` whose message is one
/// non-empty line naming the file. Valid documents, rendered as block YAML or as JSON,
/// parse back to exactly what was generated.
///
/// The inputs come from PropertyBased generators, fresh on every run. Every test prints
/// nothing on success; a failure names the input (shrunk where the generators allow) and
/// the `.fixedSeed` that replays it; `propertyCheck` does not report an error its body
/// throws, so the bodies catch and record them. A parse that hangs is caught by the suite's
/// time limit (a watchdog, not a speed requirement: a slow machine must not fail a test
/// that did its work).
@Suite("Plan and policy parser fuzzing", .timeLimit(.minutes(10)))
struct ParserFuzzTests {
    static let planSource = "fuzz-plan.yaml"
    static let policySource = "fuzz-policy.yaml"

    // MARK: - Plans

    @Test func randomBytesNeverCrashThePlanParser() async {
        var checker = Checker()
        await propertyCheck(count: 3_000, input: FuzzGen.bytes(0...300)) { checker.plan($0) }
    }

    @Test func randomUnicodeNeverCrashesThePlanParser() async {
        var checker = Checker()
        await propertyCheck(count: 3_000, input: FuzzGen.unicodeText(0...200)) { checker.plan($0) }
    }

    /// Valid plans parse back to the plan generated, as block YAML and as JSON.
    @Test func validPlansRoundTrip() async {
        await propertyCheck(count: 600, input: FuzzGen.plan) { plan in
            for text in [FuzzRender.block(plan.doc), FuzzRender.json(plan.doc)] {
                do {
                    let parsed = try Plan.parse(text, source: Self.planSource)
                    #expect(parsed == plan.expected, "\(text)")
                    if let violation = Invariants.plan(parsed) {
                        Issue.record("\(violation)\n\(text)")
                    }
                } catch {
                    Issue.record("refused a valid plan: \(error)\n\(text)")
                }
            }
        }
    }

    /// Valid plans with one to three structural edits: deleted, duplicated, renamed
    /// and unknown keys, wrong types, empty lists, deep nesting, duplicated entries,
    /// relative paths, anchors and aliases; then, one time in three, a text edit
    /// (truncation, a line cut, repeated or re-indented, YAML syntax put in, a byte changed).
    @Test func mutatedPlansAreParsedOrRefusedInOneLine() async {
        var checker = Checker()
        await propertyCheck(count: 3_600, input: FuzzGen.mutatedPlan) { checker.plan($0) }
        #expect(checker.accepted > 0, "some mutations must keep the plan valid")
        #expect(checker.refused > 0)
    }

    /// Every prefix of valid plans (cut at every byte, so also inside a UTF-8 sequence).
    @Test func everyTruncationOfValidPlansIsHandled() async {
        await propertyCheck(count: 4, input: FuzzGen.plan) { plan in
            var checker = Checker()
            for text in [FuzzRender.block(plan.doc), FuzzRender.json(plan.doc)] {
                let bytes = Array(text.utf8)
                for end in 0...bytes.count {
                    // The first prefix that breaks a property is enough.
                    guard checker.plan(String(decoding: bytes[..<end], as: UTF8.self)) else { break }
                }
            }
        }
    }

    /// Huge scalars, huge lists and nesting at and beyond libyaml's limit of 1000 levels.
    @Test func hugeAndDeepPlansAreHandled() {
        var checker = Checker()
        let valid = "vms:\n  - name: a\n    qmp: /q\n    disks:\n      - device: d\n        destination: /x\n"
        let huge = String(repeating: "x", count: 2_000_000)
        checker.plan("name: \(huge)\n" + valid)
        checker.plan("name: \"\(huge)\"\n" + valid)
        checker.plan(valid.replacingOccurrences(of: "/x", with: "/" + huge))
        checker.plan("\(huge): 1\n" + valid)
        checker.plan("vms:\n" + String(repeating: "  - name: a\n    qmp: /q\n    disks: []\n", count: 20_000))
        let manyDisks = (0..<5_000).map { "      - device: d\($0)\n        destination: /x/\($0)\n" }.joined()
        checker.plan("vms:\n  - name: a\n    qmp: /q\n    disks:\n" + manyDisks)
        for depth in [10, 100, 998, 999, 1_000, 1_001, 5_000, 100_000] {
            let open = String(repeating: "[", count: depth), close = String(repeating: "]", count: depth)
            checker.plan("vms: \(open)\(close)")
            checker.plan("name: \(open)x\(close)\n" + valid)
            checker.plan("? \(open)x\(close)\n: 1\n" + valid)
            checker.plan(String(repeating: "{a: ", count: depth) + "1" + String(repeating: "}", count: depth))
            checker.plan(String(repeating: "- ", count: min(depth, 3_000)) + "x")
        }
        #expect(checker.accepted == 4, "valid: the 2 MB name (plain and quoted), the 2 MB destination, the 5000 disks")
    }

    /// "Billion laughs": a few hundred bytes of nested aliases. Yams expands an alias by
    /// copying the node and hashes mapping keys whole, so as a key this took hours of CPU;
    /// StrictYAML now refuses aliases before composing, at the first one.
    @Test(.timeLimit(.minutes(1)), arguments: ["key", "value", "vms", "list", "merge", "policy", "nested-key"])
    func aliasBombsAreRefusedAtTheFirstAlias(placement: String) throws {
        let levels = 12
        var text = "a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n"
        for level in 1..<levels {
            let aliases = Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ")
            text += "a\(level): &a\(level) [\(aliases)]\n"
        }
        let top = "*a\(levels - 1)"
        switch placement {
        case "key": text += "? \(top)\n: x\n"
        case "value": text += "name: \(top)\n"
        case "vms": text = "vms: \(top)\n" + text
        case "list": text += "vms:\n  - \(top)\n  - \(top)\n"
        case "merge": text += "vms:\n  - <<: \(top)\n"
        case "nested-key": text += "vms:\n  - {? \(top) : 1, ? \(top) : 2}\n"
        default: text = text.replacingOccurrences(of: "a", with: "b") + "? *b\(levels - 1)\n: 1\n"
        }
        let error: InputError
        if placement == "policy" {
            error = try #require(throws: InputError.self) {
                try Policy.parse(text, source: Self.policySource, base: try Policy.shippedDefault())
            }
        } else {
            error = try #require(throws: InputError.self) { try Plan.parse(text, source: Self.planSource) }
        }
        // Refused at the first alias, before anything is composed or expanded: the work is
        // one pass of libyaml's parser up to that line, whatever the bomb would expand to.
        let firstAlias = try #require(text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.contains("*") }) + 1
        #expect(error.message.contains(":\(firstAlias): YAML aliases (*name) are not allowed"), "\(placement): \(error.message)")
        #expect(Invariants.oneLine(error.message, source: placement == "policy" ? Self.policySource : Self.planSource) == nil)
    }

    /// Anchors without aliases are harmless and allowed; a single alias is refused, naming its line.
    @Test func anchorsAreAllowedAndAliasesRefusedWithTheirLine() throws {
        let anchored = "vms:\n  - &vm\n    name: a\n    qmp: &q /q\n    disks:\n      - device: d\n        destination: /x\n"
        #expect(try Plan.parse(anchored, source: Self.planSource).vms.map(\.address) == [.qmp(socket: "/q")])
        let aliased = anchored + "  - name: b\n    qmp: *q\n    disks:\n      - device: d\n        destination: /y\n"
        #expect(throws: InputError("\(Self.planSource):9: YAML aliases (*name) are not allowed; write the value out")) {
            try Plan.parse(aliased, source: Self.planSource)
        }
        // Asterisks and ampersands inside scalars are not aliases or anchors.
        let starry = "name: copy *all* & more\nvms:\n  - name: 'a *b'\n    qmp: /q*\n    disks:\n      - device: \"*d\"\n        destination: /x&y\n"
        let plan = try Plan.parse(starry, source: Self.planSource)
        #expect(plan.name == "copy *all* & more")
        #expect(plan.vms[0].name == "a *b")
        #expect(plan.vms[0].disks[0].device == "*d")
    }

    /// Keys and values quoted in an error keep it on one line: their line breaks are escaped.
    @Test func quotedLineBreaksStayOnOneLine() throws {
        let error = try #require(throws: InputError.self) { try Plan.parse("\"vms\\nvms\": 1", source: Self.planSource) }
        #expect(error.message == "fuzz-plan.yaml:1: unknown key 'vms\\nvms' (allowed: name, policy, vms)")
        let policyError = try #require(throws: InputError.self) {
            try Policy.parse("retire_source: \"keep\\u0085\\r\"", source: Self.policySource, base: try Policy.shippedDefault())
        }
        #expect(policyError.message
            == "fuzz-policy.yaml:1: 'retire_source' has invalid value 'keep\\u{0085}\\r' (expected delete | rename | keep | quarantine)")
    }

    // MARK: - Policies

    @Test func randomInputNeverCrashesThePolicyParser() async throws {
        var checker = Checker()
        let base = try Policy.shippedDefault()
        await propertyCheck(count: 2_000, input: FuzzGen.bytes(0...200), FuzzGen.unicodeText(0...120)) { bytes, text in
            checker.policy(bytes, base: base)
            checker.policy(text, base: base)
        }
    }

    /// Policies of valid values parse to exactly those values; keys left out keep the base's.
    @Test func validPoliciesParseToTheirValues() async throws {
        let base = try Policy.shippedDefault()
        await propertyCheck(count: 1_000, input: FuzzGen.policySettings) { settings in
            var expected = base
            for setting in settings {
                setting.apply(&expected)
            }
            let doc = FuzzDoc.map(settings.map { ($0.key, .scalar($0.text)) })
            for text in settings.isEmpty ? ["{}"] : [FuzzRender.block(doc), FuzzRender.json(doc)] {
                do {
                    let policy = try Policy.parse(text, source: Self.policySource, base: base)
                    #expect(policy == expected, "\(text)")
                    if let violation = Invariants.policy(policy) {
                        Issue.record("\(violation)\n\(text)")
                    }
                } catch {
                    Issue.record("refused a valid policy: \(error)\n\(text)")
                }
            }
        }
    }

    /// Known and odd keys with valid, out-of-range and garbage values; then, one time in
    /// two, a structural edit and, one time in four, a text edit; on the default policy
    /// or on gentle.
    @Test func mutatedPoliciesAreInRangeOrRefusedInOneLine() async throws {
        var checker = Checker()
        let bases = (default: try Policy.shippedDefault(), gentle: try Policy.resolve("gentle"))
        await propertyCheck(count: 4_500, input: FuzzGen.mutatedPolicy, Gen.bool) { text, onGentle in
            checker.policy(text, base: onGentle ? bases.gentle : bases.default)
        }
        #expect(checker.accepted > 0)
        #expect(checker.refused > 0)
    }

    /// Values at and beyond the edges of each range.
    @Test(arguments: [
        ("max_parallel_disks: 10000", true), ("max_parallel_disks: 10001", false), ("max_parallel_disks: 1", true),
        ("max_parallel_disks: 0", false), ("max_parallel_disks: -1", false), ("max_parallel_disks: 1.0", false),
        ("max_parallel_disks: 99999999999999999999", false), ("speed: 0", true), ("speed: 8191P", false),
        ("speed: 8388607T", true), ("speed: 8388608T", false), ("speed: 9223372036854775807", true),
        ("speed: 9223372036854775808", false), ("speed: -0", true), ("speed: 1.5M", false), ("speed: 0x10", false),
        ("io_error_wait: 0", true), ("io_error_wait: 0ms", true), ("io_error_wait: -1", false),
        ("progress_interval: 0", false), ("progress_interval: 1ms", false), ("progress_interval: 1e-300", false),
        ("progress_interval: 50ms", true),
        ("command_timeout: inf", false), ("command_timeout: nan", false), ("command_timeout: 1e308h", false),
        ("command_timeout: 1e308", false), ("io_error_wait: 1e19", false), ("progress_interval: 1e21", false),
        ("io_error_wait: 1000000000", true), ("io_error_wait: 1000000001", false), ("command_timeout: 16666666m", true),
        ("command_timeout: 277777h", true), ("command_timeout: 277778h", false), ("command_timeout: \"\"", false),
        ("command_timeout: ~", false), ("retire_source: Keep", false), ("retire_source: 'keep '", true),
    ])
    func edgeValues(text: String, accepted: Bool) throws {
        var checker = Checker()
        checker.policy(text, base: try Policy.shippedDefault())
        #expect(checker.accepted == (accepted ? 1 : 0), "\(text): \(checker.lastError ?? "accepted")")
    }

    // MARK: - Checking

    /// Parses inputs and checks the properties, counting what was accepted and refused.
    struct Checker {
        var accepted = 0
        var refused = 0
        var lastError: String?

        /// Whether the plan parser kept the properties on `text`; if not, records an issue.
        @discardableResult
        mutating func plan(_ text: String) -> Bool {
            check(text, source: ParserFuzzTests.planSource) {
                Invariants.plan(try Plan.parse(text, source: ParserFuzzTests.planSource))
            }
        }

        /// Whether the policy parser kept the properties on `text`; if not, records an issue.
        @discardableResult
        mutating func policy(_ text: String, base: Policy) -> Bool {
            check(text, source: ParserFuzzTests.policySource) {
                Invariants.policy(try Policy.parse(text, source: ParserFuzzTests.policySource, base: base))
            }
        }

        private mutating func check(_ text: String, source: String, _ body: () throws -> String?) -> Bool {
            var problem: String?
            do {
                problem = try body()
                accepted += 1
            } catch let error as InputError {
                refused += 1
                lastError = error.message
                problem = Invariants.oneLine(error.message, source: source)
            } catch {
                problem = "threw \(type(of: error)), not InputError: \(error)"
            }
            guard let problem else { return true }
            let shown = text.count > 600 ? String(text.prefix(600)) + "… (\(text.utf8.count) bytes)" : text
            Issue.record("\(problem)\ninput: \(shown.debugDescription)")
            return false
        }
    }

    enum Invariants {
        /// Nil when the message is one non-empty line starting with the file's name.
        static func oneLine(_ message: String, source: String) -> String? {
            if message.isEmpty { return "empty error message" }
            if message.contains(where: \.isNewline) { return "error message spans lines: \(message.debugDescription)" }
            if !message.hasPrefix(source) { return "error message does not name \(source): \(message.debugDescription)" }
            return nil
        }

        /// Nil when `plan` keeps every invariant of an accepted plan.
        static func plan(_ plan: Plan) -> String? {
            if plan.vms.isEmpty { return "accepted a plan without VMs" }
            var names = Set<String>(), addresses = Set<VMAddress>(), destinations = Set<String>()
            for text in [plan.name, plan.policyReference].compactMap({ $0 }) where !isTrimmedNonEmpty(text) {
                return "accepted an empty or untrimmed name/policy \(text.debugDescription)"
            }
            for vm in plan.vms {
                if !isTrimmedNonEmpty(vm.name) { return "VM name \(vm.name.debugDescription)" }
                let sameVM: VMAddress
                switch vm.address {
                case .qmp(let socket):
                    if !socket.hasPrefix("/") { return "relative QMP socket \(socket.debugDescription)" }
                    sameVM = .qmp(socket: normalize(socket))
                case .libvirt(let uri, let domain):
                    if !isTrimmedNonEmpty(uri) || uri.unicodeScalars.contains("#") || uri.unicodeScalars.contains(where: isControl) {
                        return "libvirt URI \(uri.debugDescription)"
                    }
                    if !isTrimmedNonEmpty(domain) || domain.unicodeScalars.contains(where: isControl) {
                        return "libvirt domain \(domain.debugDescription)"
                    }
                    sameVM = vm.address
                }
                // What the database stores reads back as the same address.
                if (try? VMAddress(stored: vm.address.stored)) != vm.address { return "\(vm.address) does not survive its stored form" }
                if vm.disks.isEmpty { return "VM \(vm.name) has no disks" }
                if !names.insert(vm.name).inserted { return "VM \(vm.name) twice" }
                if !addresses.insert(sameVM).inserted { return "\(vm.address) twice" }
                var devices = Set<String>()
                for disk in vm.disks {
                    if !isTrimmedNonEmpty(disk.device) { return "device \(disk.device.debugDescription)" }
                    if !devices.insert(disk.device).inserted { return "device \(disk.device) twice" }
                    if !disk.destination.hasPrefix("/") { return "relative destination \(disk.destination)" }
                    if disk.destination != normalize(disk.destination) { return "destination \(disk.destination) not normalized" }
                    if !destinations.insert(disk.destination).inserted { return "destination \(disk.destination) twice" }
                }
            }
            return nil
        }

        /// The longest duration a policy may hold: `Duration.seconds(_:)` and `Int(_:)`
        /// trap far above it, and nobody waits 31 years.
        static let maxSeconds = 1e9

        /// Nil when every value of `policy` is within its documented range.
        static func policy(_ policy: Policy) -> String? {
            if policy.speed < 0 { return "negative speed \(policy.speed)" }
            if !(1...10_000).contains(policy.maxParallelDisks) { return "max_parallel_disks \(policy.maxParallelDisks)" }
            if !(policy.ioErrorWait >= 0 && policy.ioErrorWait <= maxSeconds) { return "io_error_wait \(policy.ioErrorWait)" }
            if !(policy.progressInterval >= 0.05 && policy.progressInterval <= maxSeconds) {
                return "progress_interval \(policy.progressInterval)"
            }
            if !(policy.commandTimeout > 0 && policy.commandTimeout <= maxSeconds) {
                return "command_timeout \(policy.commandTimeout)"
            }
            // What the engine does with them must not trap.
            _ = Duration.seconds(policy.progressInterval)
            _ = Duration.seconds(policy.commandTimeout)
            _ = Int(policy.ioErrorWait)
            // A stored policy reads back equal.
            if let data = try? JSONEncoder().encode(policy), (try? JSONDecoder().decode(Policy.self, from: data)) != policy {
                return "policy does not survive its JSON record"
            }
            return nil
        }

        static func isTrimmedNonEmpty(_ text: String) -> Bool {
            !text.isEmpty && text.trimmingCharacters(in: .whitespaces) == text
        }

        /// A control character or a line or paragraph separator.
        static func isControl(_ scalar: Unicode.Scalar) -> Bool {
            [.control, .lineSeparator, .paragraphSeparator].contains(scalar.properties.generalCategory)
        }
    }
}

// MARK: - Documents

/// A YAML document as a tree, to render as block YAML or as JSON.
indirect enum FuzzDoc: Sendable {
    case scalar(String)
    case list([FuzzDoc])
    case map([(key: String, value: FuzzDoc)])
    /// Text put in as it is, in flow position (for nesting, anchors, tags, aliases).
    case raw(String)
}

enum FuzzRender {
    /// Block YAML: `key: value` lines, `- ` items, two spaces per level.
    static func block(_ doc: FuzzDoc) -> String {
        switch doc {
        case .scalar(let text): return scalar(text) + "\n"
        case .raw(let text): return text + "\n"
        case .list(let items) where items.isEmpty: return "[]\n"
        case .map(let entries) where entries.isEmpty: return "{}\n"
        case .list, .map: return lines(doc, indent: 0)
        }
    }

    private static func lines(_ doc: FuzzDoc, indent: Int) -> String {
        let pad = String(repeating: " ", count: indent)
        var out = ""
        switch doc {
        case .map(let entries):
            for (key, value) in entries {
                if let inline = inline(value) {
                    out += "\(pad)\(scalar(key)): \(inline)\n"
                } else {
                    out += "\(pad)\(scalar(key)):\n" + lines(value, indent: indent + 2)
                }
            }
        case .list(let items):
            for item in items {
                if let inline = inline(item) {
                    out += "\(pad)- \(inline)\n"
                } else if case .map = item {
                    // The first key goes on the dash line.
                    let nested = lines(item, indent: indent + 2)
                    out += pad + "- " + nested.dropFirst(indent + 2)
                } else {
                    out += "\(pad)-\n" + lines(item, indent: indent + 2)
                }
            }
        case .scalar, .raw:
            out += pad + (inline(doc) ?? "") + "\n"
        }
        return out
    }

    /// A value that fits on its key's line, or nil for a non-empty collection.
    private static func inline(_ doc: FuzzDoc) -> String? {
        switch doc {
        case .scalar(let text): return scalar(text)
        case .raw(let text): return text
        case .list(let items): return items.isEmpty ? "[]" : nil
        case .map(let entries): return entries.isEmpty ? "{}" : nil
        }
    }

    /// JSON (YAML's flow style), on one line.
    static func json(_ doc: FuzzDoc) -> String {
        switch doc {
        case .scalar(let text): return quoted(text)
        case .raw(let text): return text
        case .list(let items): return "[" + items.map(json).joined(separator: ", ") + "]"
        case .map(let entries): return "{" + entries.map { quoted($0.key) + ": " + json($0.value) }.joined(separator: ", ") + "}"
        }
    }

    /// Plain when that is surely read back as the same text, else quoted.
    static func scalar(_ text: String) -> String {
        let plainSafe = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_.-")
        let startSafe = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_")
        if let first = text.unicodeScalars.first, startSafe.contains(first),
           text.unicodeScalars.allSatisfy(plainSafe.contains) {
            // Vary the style of safe scalars too (hash of the text: the same text, the same style).
            switch text.utf8.reduce(0, { ($0 &* 31 &+ Int($1)) % 1_000_003 }) % 4 {
            case 0: return quoted(text)
            case 1: return "'" + text + "'"
            default: return text
            }
        }
        return quoted(text)
    }

    /// A double-quoted scalar, valid in JSON and YAML: escapes quotes, backslashes and
    /// anything libyaml may not take raw.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                let value = scalar.value
                if value < 0x20 || (0x7F...0x9F).contains(value) || value == 0x2028 || value == 0x2029 || value == 0xFEFF
                    || (0xFFFE...0xFFFF).contains(value) {
                    out += String(format: "\\u%04X", value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

// MARK: - Generators

enum FuzzGen {
    static let planKeys = ["name", "policy", "vms", "qmp", "libvirt", "uri", "domain", "disks", "device", "destination"]
    static let policyKeys = [
        "retire_source", "speed", "max_parallel_disks", "on_failure", "after_restart", "on_error", "io_error_wait",
        "progress_interval", "command_timeout", "allow_shared_socket",
    ]

    /// A position or a count, taken modulo what it indexes.
    static let index = Gen.int(in: 0...1_000_000)

    /// One of `choices`, without shrinking.
    static func one<T: Sendable>(of choices: [T]) -> Generator<T, some SendableSequenceType> {
        Gen<T?>.element(of: choices).map { $0! }
    }

    /// Bytes the mutations favour: YAML and JSON punctuation, line ends, odd bytes.
    static let interestingBytes: [UInt8] = Array("{}[]\"':,-?&*!|>#%@`~ \t\r\n0123456789.aAz/\\".utf8)
        + [0x00, 0x7F, 0x80, 0xC2, 0xC3, 0xE2, 0xED, 0xEF, 0xBB, 0xBF, 0xF0, 0xFF]

    /// Half the time an interesting byte, else any byte.
    static let byte: Generator<UInt8, some SendableSequenceType> = Gen<UInt8>.oneOf(one(of: interestingBytes), Gen.uint8())

    /// Bytes, read as UTF-8 (invalid sequences become U+FFFD).
    static func bytes(_ count: ClosedRange<Int>) -> Generator<String, some SendableSequenceType> {
        byte.array(of: count).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Scalars from every range that trips parsers: controls, YAML indicators, combining
    /// marks, line separators, BOMs, private use, astral planes.
    static let unicodeScalar: Generator<Unicode.Scalar, some SendableSequenceType> = zip(one(of: [
        0x00...0x1F, 0x20...0x7E, 0x20...0x7E, 0x20...0x7E, 0x7F...0x9F, 0xA0...0x24F, 0x300...0x36F,
        0x2000...0x206F, 0xFEFF...0xFEFF, 0xE000...0xF8FF, 0xFFF0...0xFFFF, 0x1F600...0x1F64F, 0x10000...0x10FFFF,
    ] as [ClosedRange<UInt32>]), Gen.uint32()).compactMap { range, offset in
        Unicode.Scalar(range.lowerBound + offset % (range.upperBound - range.lowerBound + 1))
    }

    /// Those scalars, one piece in four a piece of plan syntax.
    static func unicodeText(_ count: ClosedRange<Int>) -> Generator<String, some SendableSequenceType> {
        let syntax = one(of: ["vms:", "\n  - ", "name: ", "qmp: /", "libvirt: {domain: ", "uri: ", "disks:", "device: ",
                              "destination: /", "\n", ": ", "- ", "&a ", "*a", "!!str ", "{", "}", "[", "]", "\"", "'"])
        return Gen<String>.frequency((1, syntax), (3, unicodeScalar.map { String($0) })).array(of: count).map { $0.joined() }
    }

    /// A name of letters, digits and now and then anything at all (quoted when rendered).
    static let token: Generator<String, some SendableSequenceType> = Gen<Character>.frequency(
        (7, one(of: Array("abcdefghijklmnopqrstuvwxyz0123456789-_."))),
        (1, one(of: [" ", "é", "日", "🙂", "'", "\"", ":", "#", "&", "*", "!", "%", "@", "`", "\\", "{", "[", ",", "\u{0301}",
                     "\u{200B}", "\t", "\n", "\u{7F}", "\u{85}", "\u{2028}"] as [Character]))
    ).string(of: 1...12).map { text in
        // string() trims spaces and tabs, so a generated value never starts or ends with them.
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        return trimmed.isEmpty ? "x" : trimmed
    }

    /// The order of a map's keys: an index into their permutations (0: as written).
    static let keyOrder = Gen.int(in: 0..<6)

    /// `items` in the order `permutation` picks (an index into all their orders, modulo their number).
    static func permuted<T>(_ items: [T], _ permutation: Int) -> [T] {
        var pool = items, rest = permutation, out: [T] = []
        while !pool.isEmpty {
            let count = pool.count
            out.append(pool.remove(at: rest % count))
            rest /= count
        }
        return out
    }

    static let disk: Generator<FuzzPlan.Disk, some SendableSequenceType> = zip(token, token, Gen.int(in: 0..<5), keyOrder).map {
        FuzzPlan.Disk(device: $0, file: $1, spelling: $2, keyOrder: $3)
    }

    static let vm: Generator<FuzzPlan.VM, some SendableSequenceType> = zip(
        token, token, Gen<FuzzPlan.AddressForm>.case, disk.array(of: 1...4), keyOrder
    ).map {
        FuzzPlan.VM(name: $0, address: $1, addressForm: $2, disks: $3, keyOrder: $4)
    }

    static let policyReference: Generator<String, some SendableSequenceType> = Gen<String>.frequency(
        (3, one(of: ["default", "gentle", "./p.yaml"])), (1, token))

    /// A valid plan of one to four VMs of one to four disks, with or without a name and a policy.
    static let plan: Generator<FuzzPlan, some SendableSequenceType> = zip(
        token.optional(valueRate: 0.5), policyReference.optional(valueRate: 0.5), vm.array(of: 1...4), keyOrder
    ).map { FuzzPlan(name: $0, policy: $1, vms: $2, keyOrder: $3) }

    static let weirdKey: Generator<String, some SendableSequenceType> = Gen<String>.frequency(
        (17, one(of: ["vmz", "Name", "VMS", "disk", "destinaton", "name ", "<<", "?", "-", "", "~", "null", "1", "vms\nvms",
                      "speed\r", "retire-source", "\u{FEFF}vms"])),
        (1, token))

    /// A value of another, usually wrong, type.
    static let replacement: Generator<FuzzDoc, some SendableSequenceType> = Gen<FuzzDoc>.oneOf(
        Gen.always(.list([])),
        Gen.always(.map([])),
        token.map { .list([.scalar($0), .scalar("/abs")]) },
        zip(weirdKey, token).map { .map([($0, .scalar($1))]) },
        one(of: ["~", "null", "true", "12", "-1", "1e400", "0x1F", ".inf", "'", "\"", "|", ">", "- x", "? x"]).map { .raw($0) },
        one(of: ["!!binary aGVsbG8=", "!!int 3", "!!str /x", "!custom x", "!!map {}", "!!seq []", "!<tag:x> y"]).map { .raw($0) },
        Gen.always(.raw("*anchor")),
        Gen.always(.raw("*undefined")),
        one(of: [5, 50, 500, 999, 1_000, 1_001, 4_000]).map {
            .raw(String(repeating: "[", count: $0) + "/x" + String(repeating: "]", count: $0))
        },
        one(of: [5, 50, 500, 1_001]).map { .raw(String(repeating: "{k: ", count: $0) + "v" + String(repeating: "}", count: $0)) },
        Gen.int(in: 1_000...50_000).map { .scalar("/" + String(repeating: "y", count: $0)) },
        token.map { .scalar($0) })

    /// A structural edit somewhere in a document; renamed keys are from `keys` or odd.
    static func treeEdit(keys: [String]) -> Generator<FuzzTreeEdit, some SendableSequenceType> {
        let change = Gen<FuzzTreeEdit.Change>.oneOf(
            index.map { .remove($0) },
            zip(index, index).map { .duplicate($0, at: $1) },
            zip(index, Gen<String>.frequency((1, one(of: keys)), (1, weirdKey))).map { .rename($0, to: $1) },
            zip(weirdKey, token, index).map { .insert(key: $0, value: $1, at: $2) },
            index.map { .oddPath($0) },
            Gen.always(.anchor))
        return zip(index.array(of: 0...5), change, replacement).map { FuzzTreeEdit(path: $0, change: $1, replacement: $2) }
    }

    static let textEdit: Generator<FuzzTextEdit, some SendableSequenceType> = Gen<FuzzTextEdit>.oneOf(
        index.map { .truncate(keeping: $0) },
        index.map { .removeLine($0) },
        index.map { .repeatLine($0) },
        index.map { .indent(line: $0) },
        zip(index, Gen.int(in: 1...3)).map { .dedent(line: $0, by: $1) },
        zip(one(of: ["&a ", "*a", "!!str ", "!!binary ", "<<: ", "? ", "- ", ": ", "---\n", "...\n", "%YAML 1.1\n",
                     "%TAG ! tag:x\n", "|\n", ">-\n", "\t", "#", "'", "\"", "{", "}", "[", "]", ",", "\\", "\u{0}",
                     "\u{FEFF}", "\r\n", "\r", "\u{85}", "\u{2028}", "@", "`"]), index, index).map { .insert($0, line: $1, at: $2) },
        Gen.bool.map { .documentMarkers(twice: $0) },
        zip(index, byte).map { .replaceByte(at: $0, with: $1) })

    /// A valid plan after one to three structural edits, as block YAML or JSON, and one
    /// time in three a text edit.
    static let mutatedPlan: Generator<String, some SendableSequenceType> = zip(
        plan, treeEdit(keys: planKeys).array(of: 1...3), Gen.bool, textEdit.optional(valueRate: 1.0 / 3)
    ).map { plan, edits, json, textEdit in
        let doc = edits.reduce(plan.doc) { doc, edit in edit.apply(to: doc) }
        let text = json ? FuzzRender.json(doc) : FuzzRender.block(doc)
        return textEdit?.apply(to: text) ?? text
    }

    /// Any value for any policy key: valid ones, edge cases and garbage.
    static let policyScalar: Generator<String, some SendableSequenceType> = Gen<String>.frequency((4, one(of: [
        "delete", "rename", "keep", "shred", "rollback", "stop", "resume", "enospc", "report", "ignore", "true", "false",
        "yes", "no", "on", "0", "1", "-1", "10000", "10001", "1.5", "0x10", "1e3", "99999999999999999999", "512K", "64M",
        "1G", "2T", "8388608T", "64MiB", "64mb", "1k", "M", "", " ", "500ms", "30s", "5m", "1h", "0s", "0ms", "-1s",
        "1e308h", "1e-300", "inf", "nan", "-0", "+5", "1e19", "1e21", "1000000000", "1000000001", "277778h", "∞",
        "٣", "１", "5\u{0301}", "1 h", "1s ", "\t2m",
    ])), (1, token))

    /// Zero to six entries, one key in eight odd, any values; one time in two a structural
    /// edit; as block YAML or JSON; one time in four a text edit.
    static let mutatedPolicy: Generator<String, some SendableSequenceType> = zip(
        zip(Gen<String>.frequency((7, one(of: policyKeys)), (1, weirdKey)), policyScalar).array(of: 0...6),
        treeEdit(keys: policyKeys).optional(valueRate: 0.5), Gen.bool, textEdit.optional(valueRate: 0.25)
    ).map { entries, edit, json, textEdit in
        var doc = FuzzDoc.map(entries.map { ($0, .scalar($1)) })
        if let edit { doc = edit.apply(to: doc) }
        let text = json ? FuzzRender.json(doc) : FuzzRender.block(doc)
        return textEdit?.apply(to: text) ?? text
    }

    /// A valid value for a key, with its effect.
    static let policySetting: Generator<FuzzSetting, some SendableSequenceType> = Gen<FuzzSetting>.oneOf(
        Gen<Policy.RetireSource>.case.map { value in FuzzSetting(key: "retire_source", text: value.rawValue) { $0.retireSource = value } },
        Gen<Policy.OnFailure>.case.map { value in FuzzSetting(key: "on_failure", text: value.rawValue) { $0.onFailure = value } },
        Gen<Policy.AfterRestart>.case.map { value in FuzzSetting(key: "after_restart", text: value.rawValue) { $0.afterRestart = value } },
        Gen<Policy.OnIOError>.case.map { value in FuzzSetting(key: "on_error", text: value.rawValue) { $0.onError = value } },
        zip(Gen.int64(in: 0...100_000), one(of: [("", 0), ("K", 10), ("k", 10), ("M", 20), ("MiB", 20), ("mb", 20), ("G", 30), ("T", 40)]))
            .map { number, unit in FuzzSetting(key: "speed", text: "\(number)\(unit.0)") { $0.speed = number << unit.1 } },
        Gen.int(in: 1...10_000).map { count in FuzzSetting(key: "max_parallel_disks", text: "\(count)") { $0.maxParallelDisks = count } },
        duration("io_error_wait", allowZero: true) { $0.ioErrorWait = $1 },
        duration("progress_interval", atLeast: 0.05) { $0.progressInterval = $1 },
        duration("command_timeout") { $0.commandTimeout = $1 })

    /// Valid values for some keys, each key once, in any order.
    static let policySettings: Generator<[FuzzSetting], some SendableSequenceType> = policySetting.array(of: 0...9).map { settings in
        var keys = Set<String>()
        return settings.filter { keys.insert($0.key).inserted }
    }

    /// A whole number of some unit, at least `minimum` seconds and above zero unless
    /// `allowZero`, up to 10,000 of the unit.
    private static func duration(
        _ key: String, allowZero: Bool = false, atLeast minimum: Double = 0, _ set: @escaping @Sendable (inout Policy, Double) -> Void
    ) -> Generator<FuzzSetting, some SendableSequenceType> {
        let units: [(suffix: String, scale: Double)] = [("", 1), ("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("S", 1), ("H", 3600)]
        return zip(one(of: units), Gen.int(in: 0...10_000)).map { unit, offset in
            let lowest = max(allowZero ? 0 : 1, Int((minimum / unit.scale).rounded(.up)))
            let number = lowest + offset % (max(lowest, 10_000) - lowest + 1)
            let seconds = Double(number) * unit.scale
            return FuzzSetting(key: key, text: "\(number)\(unit.suffix)") { set(&$0, seconds) }
        }
    }
}

/// A valid plan as generated: the document to render, and the `Plan` it must parse to.
struct FuzzPlan: Sendable, CustomTestStringConvertible {
    /// A disk's tokens, how its destination is spelled, and the order of its keys.
    struct Disk: Sendable {
        var device: String
        var file: String
        var spelling: Int
        var keyOrder: Int
    }

    /// How a VM's address is written.
    enum AddressForm: CaseIterable, Sendable {
        case qmp
        /// `libvirt:` with a domain only (the default URI).
        case libvirtDomain
        /// `libvirt:` with a URI and a domain.
        case libvirtURIAndDomain
    }

    /// A VM's tokens: its name, its address (a QMP socket's name or a libvirt domain)
    /// and how it is written, its disks, and the order of its keys.
    struct VM: Sendable {
        var name: String
        var address: String
        var addressForm: AddressForm
        var disks: [Disk]
        var keyOrder: Int
    }

    let doc: FuzzDoc
    let expected: Plan

    var testDescription: String { FuzzRender.block(doc) }

    /// Names, addresses, devices and destinations are numbered, so they are unique whatever the tokens.
    init(name: String?, policy: String?, vms: [VM], keyOrder: Int) {
        var vmDocs: [FuzzDoc] = []
        var planVMs: [Plan.VM] = []
        for (i, vm) in vms.enumerated() {
            var diskDocs: [FuzzDoc] = []
            var planDisks: [Plan.Disk] = []
            for (j, disk) in vm.disks.enumerated() {
                let device = "drive\(j)-\(disk.device)"
                var destination = "/srv/new/v\(i)d\(j)-\(disk.file).qcow2"
                switch disk.spelling {
                case 0: destination = "/" + destination
                case 1: destination = destination.replacingOccurrences(of: "/new/", with: "/./new//")
                case 2: destination = destination.replacingOccurrences(of: "/new/", with: "/new/tmp/../")
                default: break
                }
                diskDocs.append(.map(FuzzGen.permuted([("device", .scalar(device)), ("destination", .scalar(destination))], disk.keyOrder)))
                planDisks.append(Plan.Disk(device: device, destination: normalize(destination)))
            }
            let name = "vm\(i)-\(vm.name)"
            // A domain has no control characters; '#' and the rest are its own.
            let plain = String(String.UnicodeScalarView(vm.address.unicodeScalars.filter { !ParserFuzzTests.Invariants.isControl($0) }))
            let domain = "vm\(i)-" + plain.trimmingCharacters(in: .whitespaces)
            let address: (key: String, value: FuzzDoc), expected: VMAddress
            switch vm.addressForm {
            case .qmp:
                let socket = "/run/lc/vm\(i)-\(vm.address).qmp"
                (address, expected) = (("qmp", .scalar(socket)), .qmp(socket: socket))
            case .libvirtDomain:
                (address, expected) = (("libvirt", .map([("domain", .scalar(domain))])), .libvirt(uri: Plan.defaultLibvirtURI, domain: domain))
            case .libvirtURIAndDomain:
                let uri = ["qemu:///session", "qemu+ssh://root@host-\(i)/system?keyfile=/k"][vm.keyOrder % 2]
                let fields: [(key: String, value: FuzzDoc)] = [("uri", .scalar(uri)), ("domain", .scalar(domain))]
                (address, expected) = (("libvirt", .map(FuzzGen.permuted(fields, vm.keyOrder))), .libvirt(uri: uri, domain: domain))
            }
            vmDocs.append(.map(FuzzGen.permuted([("name", .scalar(name)), address, ("disks", .list(diskDocs))], vm.keyOrder)))
            planVMs.append(Plan.VM(name: name, address: expected, disks: planDisks))
        }
        var top: [(key: String, value: FuzzDoc)] = [("vms", .list(vmDocs))]
        if let name { top.append(("name", .scalar(name))) }
        if let policy { top.append(("policy", .scalar(policy))) }
        doc = .map(FuzzGen.permuted(top, keyOrder))
        expected = Plan(name: name, policyReference: policy, vms: planVMs)
    }
}

/// One valid policy setting: its key, its text, and what it sets.
struct FuzzSetting: Sendable, CustomStringConvertible {
    let key: String
    let text: String
    let apply: @Sendable (inout Policy) -> Void

    var description: String { "\(key): \(text)" }
}

// MARK: - Mutations

/// A structural edit of a document: from the root, down the children `path` picks (each
/// index modulo the number of children) as long as there are children, then `change`
/// there, or `replacement` for the node when `change` does not fit it.
struct FuzzTreeEdit: Sendable {
    enum Change: Sendable {
        /// Removes an entry of a map or an item of a list.
        case remove(Int)
        /// Appends a copy of an entry to a map, or inserts a copy of an item into a list.
        case duplicate(Int, at: Int)
        /// Renames a map's key.
        case rename(Int, to: String)
        /// Inserts an entry into a map.
        case insert(key: String, value: String, at: Int)
        /// Makes a scalar relative, empty, blank, or a path of dots.
        case oddPath(Int)
        /// Puts an anchor on a scalar.
        case anchor
    }

    var path: [Int]
    var change: Change
    var replacement: FuzzDoc

    func apply(to doc: FuzzDoc) -> FuzzDoc { apply(to: doc, depth: 0) }

    private func apply(to doc: FuzzDoc, depth: Int) -> FuzzDoc {
        if depth < path.count {
            switch doc {
            case .map(var entries) where !entries.isEmpty:
                let index = path[depth] % entries.count
                entries[index].value = apply(to: entries[index].value, depth: depth + 1)
                return .map(entries)
            case .list(var items) where !items.isEmpty:
                let index = path[depth] % items.count
                items[index] = apply(to: items[index], depth: depth + 1)
                return .list(items)
            default:
                break
            }
        }
        switch (change, doc) {
        case (.remove(let index), .map(var entries)) where !entries.isEmpty:
            entries.remove(at: index % entries.count)
            return .map(entries)
        case (.remove(let index), .list(var items)) where !items.isEmpty:
            items.remove(at: index % items.count)
            return .list(items)
        case (.duplicate(let index, _), .map(var entries)) where !entries.isEmpty:
            entries.append(entries[index % entries.count])
            return .map(entries)
        case (.duplicate(let index, let at), .list(var items)) where !items.isEmpty:
            items.insert(items[index % items.count], at: at % (items.count + 1))
            return .list(items)
        case (.rename(let index, let key), .map(var entries)) where !entries.isEmpty:
            entries[index % entries.count].key = key
            return .map(entries)
        case (.insert(let key, let value, let at), .map(var entries)):
            entries.insert((key, .scalar(value)), at: at % (entries.count + 1))
            return .map(entries)
        case (.oddPath(let pick), .scalar(let text)):
            let paths = ["relative/path", "", " ", "./x", "..", "/", "//", "/..", text + "/..", "x" + text]
            return .scalar(paths[pick % paths.count])
        case (.anchor, .scalar(let text)):
            return .raw("&anchor " + FuzzRender.scalar(text))
        default:
            return replacement
        }
    }
}

/// An edit of a rendered document's text; lines and positions are taken modulo their number.
enum FuzzTextEdit: Sendable {
    /// Keeps the first bytes, cutting anywhere (also inside a UTF-8 sequence).
    case truncate(keeping: Int)
    case removeLine(Int)
    case repeatLine(Int)
    case indent(line: Int)
    case dedent(line: Int, by: Int)
    case insert(String, line: Int, at: Int)
    case documentMarkers(twice: Bool)
    case replaceByte(at: Int, with: UInt8)

    func apply(to text: String) -> String {
        var lines = text.components(separatedBy: "\n")
        switch self {
        case .truncate(let keeping):
            let bytes = Array(text.utf8)
            return String(decoding: bytes.prefix(keeping % (bytes.count + 1)), as: UTF8.self)
        case .removeLine(let line):
            lines.remove(at: line % lines.count)
        case .repeatLine(let line):
            lines.insert(lines[line % lines.count], at: line % lines.count)
        case .indent(let line):
            lines[line % lines.count] = "  " + lines[line % lines.count]
        case .dedent(let line, let count):
            lines[line % lines.count] = String(lines[line % lines.count].dropFirst(count))
        case .insert(let insert, let line, let at):
            let target = lines[line % lines.count]
            let index = target.index(target.startIndex, offsetBy: at % (target.count + 1))
            lines[line % lines.count] = String(target[..<index]) + insert + String(target[index...])
        case .documentMarkers(let twice):
            return "---\n" + text + (twice ? "---\n" + text : "...\n")
        case .replaceByte(let at, let byte):
            var bytes = Array(text.utf8)
            if !bytes.isEmpty { bytes[at % bytes.count] = byte }
            return String(decoding: bytes, as: UTF8.self)
        }
        return lines.joined(separator: "\n")
    }
}
