import Foundation
import LivecopyModel
import TestSupport
import Testing

/// Property-based tests of the plan and policy parsers: thousands of seeded random,
/// mutated and hostile inputs. Whatever the input, a parser never crashes and never
/// hangs; it either returns a value that keeps every invariant or throws an
/// `InputError` whose message is one non-empty line naming the file. Valid documents,
/// rendered as block YAML or as JSON, parse back to exactly what was generated.
///
/// Every test prints nothing on success; a failure names its seed and the input.
/// A parse that hangs is caught by the suite's time limit (a watchdog, not a speed
/// requirement: a slow machine must not fail a test that did its work).
@Suite("Plan and policy parser fuzzing", .timeLimit(.minutes(10)))
struct ParserFuzzTests {
    static let planSource = "fuzz-plan.yaml"
    static let policySource = "fuzz-policy.yaml"

    // MARK: - Plans

    @Test(arguments: [UInt64(1), 2])
    func randomBytesNeverCrashThePlanParser(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var checker = Checker(seed: seed)
        for _ in 0..<1_500 {
            let count = Int.random(in: 0...300, using: &rng)
            let bytes = (0..<count).map { _ in FuzzGen.byte(&rng) }
            checker.plan(String(decoding: bytes, as: UTF8.self))
        }
    }

    @Test(arguments: [UInt64(3), 4])
    func randomUnicodeNeverCrashesThePlanParser(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var checker = Checker(seed: seed)
        for _ in 0..<1_500 {
            checker.plan(FuzzGen.unicodeText(&rng, maxLength: 200))
        }
    }

    /// Valid plans parse back to the plan generated, as block YAML and as JSON.
    @Test(arguments: [UInt64(5), 6])
    func validPlansRoundTrip(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        for iteration in 0..<300 {
            let model = FuzzGen.planModel(&rng)
            let doc = model.doc(&rng)
            for text in [FuzzRender.block(doc), FuzzRender.json(doc)] {
                do {
                    let plan = try Plan.parse(text, source: Self.planSource)
                    #expect(plan == model.expected, "seed \(seed) #\(iteration):\n\(text)")
                    if let violation = Invariants.plan(plan) {
                        Issue.record("seed \(seed) #\(iteration): \(violation)\n\(text)")
                    }
                } catch {
                    Issue.record("seed \(seed) #\(iteration): refused a valid plan: \(error)\n\(text)")
                }
            }
        }
    }

    /// Valid plans with one to three structural mutations: deleted, duplicated, renamed
    /// and unknown keys, wrong types, empty lists, deep nesting, duplicated entries,
    /// relative paths, anchors and aliases; then text mutations and truncations.
    @Test(arguments: [UInt64(7), 8, 9])
    func mutatedPlansAreParsedOrRefusedInOneLine(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var checker = Checker(seed: seed)
        for _ in 0..<1_200 {
            var doc = FuzzGen.planModel(&rng).doc(&rng)
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                doc = FuzzMutate.tree(doc, &rng, keys: FuzzGen.planKeys)
            }
            var text = Bool.random(using: &rng) ? FuzzRender.block(doc) : FuzzRender.json(doc)
            if Int.random(in: 0..<3, using: &rng) == 0 {
                text = FuzzMutate.text(text, &rng)
            }
            checker.plan(text)
        }
        #expect(checker.accepted > 0, "seed \(seed): some mutations must keep the plan valid")
        #expect(checker.refused > 0)
    }

    /// Every prefix of valid plans (cut at every byte, so also inside a UTF-8 sequence).
    @Test func everyTruncationOfValidPlansIsHandled() {
        var rng = SplitMix64(seed: 10)
        var checker = Checker(seed: 10)
        for _ in 0..<4 {
            let doc = FuzzGen.planModel(&rng).doc(&rng)
            for text in [FuzzRender.block(doc), FuzzRender.json(doc)] {
                let bytes = Array(text.utf8)
                for end in 0...bytes.count {
                    checker.plan(String(decoding: bytes[..<end], as: UTF8.self))
                }
            }
        }
    }

    /// Huge scalars, huge lists and nesting at and beyond libyaml's limit of 1000 levels.
    @Test func hugeAndDeepPlansAreHandled() {
        var checker = Checker(seed: 0)
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
        #expect(try Plan.parse(anchored, source: Self.planSource).vms.map(\.qmp) == ["/q"])
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
            == "fuzz-policy.yaml:1: 'retire_source' has invalid value 'keep\\u{0085}\\r' (expected delete | rename | keep)")
    }

    // MARK: - Policies

    @Test(arguments: [UInt64(20), 21])
    func randomInputNeverCrashesThePolicyParser(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        var checker = Checker(seed: seed)
        let base = try Policy.shippedDefault()
        for _ in 0..<1_000 {
            let count = Int.random(in: 0...200, using: &rng)
            checker.policy(String(decoding: (0..<count).map { _ in FuzzGen.byte(&rng) }, as: UTF8.self), base: base)
            checker.policy(FuzzGen.unicodeText(&rng, maxLength: 120), base: base)
        }
    }

    /// Policies of valid values parse to exactly those values; keys left out keep the base's.
    @Test(arguments: [UInt64(22), 23])
    func validPoliciesParseToTheirValues(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let base = try Policy.shippedDefault()
        for iteration in 0..<500 {
            var expected = base
            var entries: [(key: String, value: FuzzDoc)] = []
            for key in FuzzGen.policyValues.keys.shuffled(using: &rng) where Bool.random(using: &rng) {
                let (text, apply) = FuzzGen.policyValues[key]!(&rng)
                entries.append((key, .scalar(text)))
                apply(&expected)
            }
            let doc = FuzzDoc.map(entries)
            let texts = entries.isEmpty ? ["{}"] : [FuzzRender.block(doc), FuzzRender.json(doc)]
            for text in texts {
                do {
                    let policy = try Policy.parse(text, source: Self.policySource, base: base)
                    #expect(policy == expected, "seed \(seed) #\(iteration):\n\(text)")
                    if let violation = Invariants.policy(policy) {
                        Issue.record("seed \(seed) #\(iteration): \(violation)\n\(text)")
                    }
                } catch {
                    Issue.record("seed \(seed) #\(iteration): refused a valid policy: \(error)\n\(text)")
                }
            }
        }
    }

    /// Random keys with random, often out-of-range, values; structural and text mutations.
    @Test(arguments: [UInt64(24), 25, 26])
    func mutatedPoliciesAreInRangeOrRefusedInOneLine(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        var checker = Checker(seed: seed)
        let bases = [try Policy.shippedDefault(), try Policy.resolve("gentle")]
        for _ in 0..<1_500 {
            var entries: [(key: String, value: FuzzDoc)] = []
            for _ in 0..<Int.random(in: 0...6, using: &rng) {
                let key = Bool.random(using: &rng) || Int.random(in: 0..<4, using: &rng) > 0
                    ? FuzzGen.policyKeys.randomElement(using: &rng)! : FuzzGen.weirdKey(&rng)
                entries.append((key, .scalar(FuzzGen.policyScalar(&rng))))
            }
            var doc = FuzzDoc.map(entries)
            if Bool.random(using: &rng) { doc = FuzzMutate.tree(doc, &rng, keys: FuzzGen.policyKeys) }
            var text = Bool.random(using: &rng) ? FuzzRender.block(doc) : FuzzRender.json(doc)
            if Int.random(in: 0..<4, using: &rng) == 0 { text = FuzzMutate.text(text, &rng) }
            checker.policy(text, base: bases.randomElement(using: &rng)!)
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
        var checker = Checker(seed: 0)
        checker.policy(text, base: try Policy.shippedDefault())
        #expect(checker.accepted == (accepted ? 1 : 0), "\(text): \(checker.lastError ?? "accepted")")
    }

    // MARK: - Checking

    /// Parses inputs and checks the properties, recording at most a few failures per test.
    struct Checker {
        let seed: UInt64
        var accepted = 0
        var refused = 0
        var failures = 0
        var lastError: String?

        init(seed: UInt64) { self.seed = seed }

        mutating func plan(_ text: String) {
            check(text, source: ParserFuzzTests.planSource) {
                Invariants.plan(try Plan.parse(text, source: ParserFuzzTests.planSource))
            }
        }

        mutating func policy(_ text: String, base: Policy) {
            check(text, source: ParserFuzzTests.policySource) {
                Invariants.policy(try Policy.parse(text, source: ParserFuzzTests.policySource, base: base))
            }
        }

        private mutating func check(_ text: String, source: String, _ body: () throws -> String?) {
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
            guard let problem else { return }
            failures += 1
            if failures <= 5 {
                let shown = text.count > 600 ? String(text.prefix(600)) + "… (\(text.utf8.count) bytes)" : text
                Issue.record("seed \(seed): \(problem)\ninput: \(shown.debugDescription)")
            }
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
            var names = Set<String>(), sockets = Set<String>(), destinations = Set<String>()
            for text in [plan.name, plan.policyReference].compactMap({ $0 }) where !isTrimmedNonEmpty(text) {
                return "accepted an empty or untrimmed name/policy \(text.debugDescription)"
            }
            for vm in plan.vms {
                if !isTrimmedNonEmpty(vm.name) { return "VM name \(vm.name.debugDescription)" }
                if !vm.qmp.hasPrefix("/") { return "relative QMP socket \(vm.qmp.debugDescription)" }
                if vm.disks.isEmpty { return "VM \(vm.name) has no disks" }
                if !names.insert(vm.name).inserted { return "VM \(vm.name) twice" }
                if !sockets.insert(normalize(vm.qmp)).inserted { return "socket \(vm.qmp) twice" }
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
    }
}

// MARK: - Documents

/// A YAML document as a tree, to render as block YAML or as JSON.
indirect enum FuzzDoc {
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
    static let planKeys = ["name", "policy", "vms", "qmp", "disks", "device", "destination"]
    static let policyKeys = [
        "retire_source", "speed", "max_parallel_disks", "on_failure", "after_restart", "on_error", "io_error_wait",
        "progress_interval", "command_timeout", "allow_shared_socket",
    ]

    /// Bytes the mutations favour: YAML and JSON punctuation, line ends, odd bytes.
    static let interestingBytes: [UInt8] = Array("{}[]\"':,-?&*!|>#%@`~ \t\r\n0123456789.aAz/\\".utf8)
        + [0x00, 0x7F, 0x80, 0xC2, 0xC3, 0xE2, 0xED, 0xEF, 0xBB, 0xBF, 0xF0, 0xFF]

    static func byte(_ rng: inout SplitMix64) -> UInt8 {
        Bool.random(using: &rng) ? interestingBytes.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
    }

    /// Scalars from every range that trips parsers: controls, YAML indicators, combining
    /// marks, line separators, BOMs, private use, astral planes.
    static func unicodeScalar(_ rng: inout SplitMix64) -> Unicode.Scalar {
        let ranges: [ClosedRange<UInt32>] = [
            0x00...0x1F, 0x20...0x7E, 0x20...0x7E, 0x20...0x7E, 0x7F...0x9F, 0xA0...0x24F, 0x300...0x36F,
            0x2000...0x206F, 0xFEFF...0xFEFF, 0xE000...0xF8FF, 0xFFF0...0xFFFF, 0x1F600...0x1F64F, 0x10000...0x10FFFF,
        ]
        let range = ranges.randomElement(using: &rng)!
        while true {
            if let scalar = Unicode.Scalar(UInt32.random(in: range, using: &rng)) { return scalar }
        }
    }

    static func unicodeText(_ rng: inout SplitMix64, maxLength: Int) -> String {
        var text = ""
        for _ in 0..<Int.random(in: 0...maxLength, using: &rng) {
            if Int.random(in: 0..<4, using: &rng) == 0 {
                text += ["vms:", "\n  - ", "name: ", "qmp: /", "disks:", "device: ", "destination: /", "\n", ": ", "- ",
                         "&a ", "*a", "!!str ", "{", "}", "[", "]", "\"", "'"].randomElement(using: &rng)!
            } else {
                text.unicodeScalars.append(unicodeScalar(&rng))
            }
        }
        return text
    }

    /// A name of letters, digits and now and then anything at all (quoted when rendered).
    static func token(_ rng: inout SplitMix64, allowSlash: Bool = false) -> String {
        let plain = Array("abcdefghijklmnopqrstuvwxyz0123456789-_.")
        let odd: [Character] = [" ", "é", "日", "🙂", "'", "\"", ":", "#", "&", "*", "!", "%", "@", "`", "\\", "{", "[",
                                ",", "\u{0301}", "\u{200B}", "\t", "\n", "\u{7F}", "\u{85}", "\u{2028}"]
        var text = ""
        for _ in 0..<Int.random(in: 1...12, using: &rng) {
            text.append(Int.random(in: 0..<8, using: &rng) == 0 ? odd.randomElement(using: &rng)! : plain.randomElement(using: &rng)!)
        }
        if !allowSlash { text = text.replacingOccurrences(of: "/", with: "_") }
        // string() trims spaces and tabs, so a generated value never starts or ends with them.
        text = text.trimmingCharacters(in: .whitespaces)
        return text.isEmpty ? "x" : text
    }

    static func planModel(_ rng: inout SplitMix64) -> FuzzPlanModel {
        var vms: [FuzzPlanModel.VM] = []
        for i in 0..<Int.random(in: 1...4, using: &rng) {
            var disks: [(device: String, destination: String)] = []
            for j in 0..<Int.random(in: 1...4, using: &rng) {
                var destination = "/srv/new/v\(i)d\(j)-\(token(&rng)).qcow2"
                switch Int.random(in: 0..<5, using: &rng) {
                case 0: destination = "/" + destination
                case 1: destination = destination.replacingOccurrences(of: "/new/", with: "/./new//")
                case 2: destination = destination.replacingOccurrences(of: "/new/", with: "/new/tmp/../")
                default: break
                }
                disks.append(("drive\(j)-\(token(&rng))", destination))
            }
            vms.append(FuzzPlanModel.VM(name: "vm\(i)-\(token(&rng))", qmp: "/run/lc/vm\(i)-\(token(&rng)).qmp", disks: disks))
        }
        return FuzzPlanModel(
            name: Bool.random(using: &rng) ? token(&rng) : nil,
            policy: Bool.random(using: &rng) ? ["default", "gentle", "./p.yaml", token(&rng)].randomElement(using: &rng)! : nil,
            vms: vms)
    }

    static func weirdKey(_ rng: inout SplitMix64) -> String {
        ["vmz", "Name", "VMS", "disk", "destinaton", "name ", "<<", "?", "-", "", "~", "null", "1", "vms\nvms",
         "speed\r", "retire-source", "\u{FEFF}vms", token(&rng)].randomElement(using: &rng)!
    }

    /// Any value for any policy key: valid ones, edge cases and garbage.
    static func policyScalar(_ rng: inout SplitMix64) -> String {
        let pool = [
            "delete", "rename", "keep", "shred", "rollback", "stop", "resume", "enospc", "report", "ignore", "true", "false",
            "yes", "no", "on", "0", "1", "-1", "10000", "10001", "1.5", "0x10", "1e3", "99999999999999999999", "512K", "64M",
            "1G", "2T", "8388608T", "64MiB", "64mb", "1k", "M", "", " ", "500ms", "30s", "5m", "1h", "0s", "0ms", "-1s",
            "1e308h", "1e-300", "inf", "nan", "-0", "+5", "1e19", "1e21", "1000000000", "1000000001", "277778h", "∞",
            "٣", "１", "5\u{0301}", "1 h", "1s ", "\t2m",
        ]
        return Int.random(in: 0..<5, using: &rng) == 0 ? token(&rng) : pool.randomElement(using: &rng)!
    }

    typealias PolicyValue = @Sendable (inout SplitMix64) -> (String, (inout Policy) -> Void)

    /// For each policy key, a generator of a valid value's text and its effect.
    static let policyValues: [String: PolicyValue] = [
        "retire_source": { rng in
            let value = Policy.RetireSource.allCases.randomElement(using: &rng)!
            return (value.rawValue, { $0.retireSource = value })
        },
        "on_failure": { rng in
            let value = Policy.OnFailure.allCases.randomElement(using: &rng)!
            return (value.rawValue, { $0.onFailure = value })
        },
        "after_restart": { rng in
            let value = Policy.AfterRestart.allCases.randomElement(using: &rng)!
            return (value.rawValue, { $0.afterRestart = value })
        },
        "on_error": { rng in
            let value = Policy.OnIOError.allCases.randomElement(using: &rng)!
            return (value.rawValue, { $0.onError = value })
        },
        "speed": { rng in
            let number = Int64.random(in: 0...100_000, using: &rng)
            let (suffix, shift) = [("", 0), ("K", 10), ("k", 10), ("M", 20), ("MiB", 20), ("mb", 20), ("G", 30), ("T", 40)]
                .randomElement(using: &rng)!
            return ("\(number)\(suffix)", { $0.speed = number << shift })
        },
        "max_parallel_disks": { rng in
            let count = Int.random(in: 1...10_000, using: &rng)
            return ("\(count)", { $0.maxParallelDisks = count })
        },
        "io_error_wait": { rng in duration(&rng, allowZero: true) { $0.ioErrorWait = $1 } },
        "progress_interval": { rng in duration(&rng, allowZero: false, atLeast: 0.05) { $0.progressInterval = $1 } },
        "command_timeout": { rng in duration(&rng, allowZero: false) { $0.commandTimeout = $1 } },
    ]

    private static func duration(
        _ rng: inout SplitMix64, allowZero: Bool, atLeast minimum: Double = 0,
        _ set: @escaping (inout Policy, Double) -> Void
    ) -> (String, (inout Policy) -> Void) {
        let (suffix, scale) = [("", 1.0), ("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("S", 1), ("H", 3600)]
            .randomElement(using: &rng)!
        let lowest = max(allowZero ? 0 : 1, Int((minimum / scale).rounded(.up)))
        let number = Int.random(in: lowest...max(lowest, 10_000), using: &rng)
        let seconds = Double(number) * scale
        return ("\(number)\(suffix)", { set(&$0, seconds) })
    }
}

/// A valid plan as generated, with the `Plan` it must parse to.
struct FuzzPlanModel {
    struct VM {
        var name: String
        var qmp: String
        var disks: [(device: String, destination: String)]
    }

    var name: String?
    var policy: String?
    var vms: [VM]

    var expected: Plan {
        Plan(name: name, policyReference: policy, vms: vms.map { vm in
            Plan.VM(name: vm.name, qmp: vm.qmp, disks: vm.disks.map { Plan.Disk(device: $0.device, destination: normalize($0.destination)) })
        })
    }

    /// The plan as a document, its keys in random order.
    func doc(_ rng: inout SplitMix64) -> FuzzDoc {
        var top: [(key: String, value: FuzzDoc)] = [("vms", .list(vms.map { vm in
            let disks = FuzzDoc.list(vm.disks.map { disk in
                FuzzDoc.map([("device", .scalar(disk.device)), ("destination", .scalar(disk.destination))])
            })
            return FuzzDoc.map([("name", .scalar(vm.name)), ("qmp", .scalar(vm.qmp)), ("disks", disks)])
        }))]
        if let name { top.append(("name", .scalar(name))) }
        if let policy { top.append(("policy", .scalar(policy))) }
        return FuzzMutate.shuffleKeys(.map(top), &rng)
    }
}

// MARK: - Mutations

enum FuzzMutate {
    static func shuffleKeys(_ doc: FuzzDoc, _ rng: inout SplitMix64) -> FuzzDoc {
        switch doc {
        case .map(let entries): return .map(entries.map { ($0.key, shuffleKeys($0.value, &rng)) }.shuffled(using: &rng))
        case .list(let items): return .list(items.map { shuffleKeys($0, &rng) })
        case .scalar, .raw: return doc
        }
    }

    /// One structural edit at a random node.
    static func tree(_ doc: FuzzDoc, _ rng: inout SplitMix64, keys: [String]) -> FuzzDoc {
        // Descend into a random child now and then, to reach the disks.
        switch doc {
        case .map(var entries) where !entries.isEmpty && Int.random(in: 0..<3, using: &rng) > 0:
            let index = Int.random(in: 0..<entries.count, using: &rng)
            entries[index].value = tree(entries[index].value, &rng, keys: keys)
            return .map(entries)
        case .list(var items) where !items.isEmpty && Int.random(in: 0..<3, using: &rng) > 0:
            let index = Int.random(in: 0..<items.count, using: &rng)
            items[index] = tree(items[index], &rng, keys: keys)
            return .list(items)
        default:
            return here(doc, &rng, keys: keys)
        }
    }

    private static func here(_ doc: FuzzDoc, _ rng: inout SplitMix64, keys: [String]) -> FuzzDoc {
        switch (doc, Int.random(in: 0..<6, using: &rng)) {
        case (.map(var entries), 0) where !entries.isEmpty:
            entries.remove(at: Int.random(in: 0..<entries.count, using: &rng))
            return .map(entries)
        case (.map(var entries), 1) where !entries.isEmpty:
            entries.append(entries.randomElement(using: &rng)!)
            return .map(entries)
        case (.map(var entries), 2) where !entries.isEmpty:
            let index = Int.random(in: 0..<entries.count, using: &rng)
            entries[index].key = Bool.random(using: &rng) ? keys.randomElement(using: &rng)! : FuzzGen.weirdKey(&rng)
            return .map(entries)
        case (.map(var entries), 3):
            entries.insert((FuzzGen.weirdKey(&rng), .scalar(FuzzGen.token(&rng))), at: Int.random(in: 0...entries.count, using: &rng))
            return .map(entries)
        case (.list(var items), 0) where !items.isEmpty:
            items.remove(at: Int.random(in: 0..<items.count, using: &rng))
            return .list(items)
        case (.list(var items), 1) where !items.isEmpty:
            items.insert(items.randomElement(using: &rng)!, at: Int.random(in: 0...items.count, using: &rng))
            return .list(items)
        case (.scalar(let text), 0):
            // Relative, empty, blank, or a path made of dots.
            return .scalar(["relative/path", "", " ", "./x", "..", "/", "//", "/..", text + "/..", "x" + text].randomElement(using: &rng)!)
        case (.scalar(let text), 1):
            return .raw("&anchor " + FuzzRender.scalar(text))
        default:
            return replacement(&rng)
        }
    }

    /// A value of a random, usually wrong, type.
    static func replacement(_ rng: inout SplitMix64) -> FuzzDoc {
        switch Int.random(in: 0..<12, using: &rng) {
        case 0: return .list([])
        case 1: return .map([])
        case 2: return .list([.scalar(FuzzGen.token(&rng)), .scalar("/abs")])
        case 3: return .map([(FuzzGen.weirdKey(&rng), .scalar(FuzzGen.token(&rng)))])
        case 4: return .raw(["~", "null", "true", "12", "-1", "1e400", "0x1F", ".inf", "'", "\"", "|", ">", "- x", "? x"]
                .randomElement(using: &rng)!)
        case 5: return .raw(["!!binary aGVsbG8=", "!!int 3", "!!str /x", "!custom x", "!!map {}", "!!seq []", "!<tag:x> y"]
                .randomElement(using: &rng)!)
        case 6: return .raw("*anchor")
        case 7: return .raw("*undefined")
        case 8:
            let depth = [5, 50, 500, 999, 1_000, 1_001, 4_000].randomElement(using: &rng)!
            return .raw(String(repeating: "[", count: depth) + "/x" + String(repeating: "]", count: depth))
        case 9:
            let depth = [5, 50, 500, 1_001].randomElement(using: &rng)!
            return .raw(String(repeating: "{k: ", count: depth) + "v" + String(repeating: "}", count: depth))
        case 10: return .scalar("/" + String(repeating: "y", count: Int.random(in: 1_000...50_000, using: &rng)))
        default: return .scalar(FuzzGen.token(&rng, allowSlash: true))
        }
    }

    /// One edit of the rendered text: truncate, cut or repeat a line, insert YAML syntax,
    /// change indentation, flip a byte.
    static func text(_ text: String, _ rng: inout SplitMix64) -> String {
        var lines = text.components(separatedBy: "\n")
        let line = Int.random(in: 0..<lines.count, using: &rng)
        switch Int.random(in: 0..<7, using: &rng) {
        case 0:
            let bytes = Array(text.utf8)
            return String(decoding: bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)), as: UTF8.self)
        case 1:
            lines.remove(at: line)
        case 2:
            lines.insert(lines[line], at: line)
        case 3:
            lines[line] = Bool.random(using: &rng) ? "  " + lines[line] : String(lines[line].dropFirst(Int.random(in: 1...3, using: &rng)))
        case 4:
            let insert = ["&a ", "*a", "!!str ", "!!binary ", "<<: ", "? ", "- ", ": ", "---\n", "...\n", "%YAML 1.1\n",
                          "%TAG ! tag:x\n", "|\n", ">-\n", "\t", "#", "'", "\"", "{", "}", "[", "]", ",", "\\", "\u{0}",
                          "\u{FEFF}", "\r\n", "\r", "\u{85}", "\u{2028}", "@", "`"].randomElement(using: &rng)!
            let target = lines[line]
            let at = target.index(target.startIndex, offsetBy: Int.random(in: 0...target.count, using: &rng))
            lines[line] = String(target[..<at]) + insert + String(target[at...])
        case 5:
            return "---\n" + text + (Bool.random(using: &rng) ? "---\n" + text : "...\n")
        default:
            var bytes = Array(text.utf8)
            if !bytes.isEmpty { bytes[Int.random(in: 0..<bytes.count, using: &rng)] = FuzzGen.byte(&rng) }
            return String(decoding: bytes, as: UTF8.self)
        }
        return lines.joined(separator: "\n")
    }
}
