import CYaml
import Foundation
import Yams

/// A one-line error about a plan or policy file: what is wrong and where.
public struct InputError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    /// Line breaks and other control characters in `message` (it quotes the file's own
    /// keys and values) are escaped, `\n` or `\u{85}`, so the error stays one line.
    public init(_ message: String) { self.message = Self.escapingLineBreaks(message) }
    public var description: String { message }

    /// Whether `scalar` is a control character or a line or paragraph separator.
    static func breaks(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator: return true
        default: return false
        }
    }

    /// `text` with its control characters and line breaks escaped: one line.
    public static func escapingLineBreaks(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: breaks) else { return text }
        var escaped = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if breaks(scalar) { escaped.append(contentsOf: scalar.escaped(asASCII: true).unicodeScalars) } else { escaped.append(scalar) }
        }
        return String(escaped)
    }
}

/// A read-only view of a YAML node that knows where it sits, for strict parsing with
/// errors that name the file, the line and the key path.
struct StrictYAML {
    let node: Node
    /// Where this node sits, for messages: `vms[0].disks[1].device`.
    let path: String
    let source: String

    /// Parses `text` into its single document. Empty documents, syntax errors and
    /// duplicated keys are `InputError`s with a line number.
    static func parse(_ text: String, source: String) throws -> StrictYAML {
        try refuseAliases(text, source: source)
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw InputError("\(source): not valid YAML: \(describe(error))")
        } catch {
            throw InputError("\(source): not valid YAML")
        }
        guard let node else { throw InputError("\(source): the file is empty") }
        return StrictYAML(node: node, path: "", source: source)
    }

    /// Refuses YAML aliases (`*name`) before Yams composes the document. Yams copies an
    /// aliased node wherever it is used and hashes whole mapping keys to find duplicates,
    /// so a few hundred bytes of nested aliases used as a key ("billion laughs") take
    /// hours of CPU. Plans and policies have no use for aliases. Syntax errors are left to
    /// `Yams.compose`, which reports them.
    private static func refuseAliases(_ text: String, source: String) throws {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { return }
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return }
        defer { yaml_parser_delete(&parser) }
        yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
        try bytes.withUnsafeBufferPointer { buffer in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var event = yaml_event_t()
            while yaml_parser_parse(&parser, &event) == 1 {
                let type = event.type
                let line = event.start_mark.line + 1
                yaml_event_delete(&event)
                if type == YAML_ALIAS_EVENT {
                    throw InputError("\(source):\(line): YAML aliases (*name) are not allowed; write the value out")
                }
                if type == YAML_STREAM_END_EVENT { return }
            }
        }
    }

    private static func describe(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
            .composer(_, let problem, let mark, _):
            return "line \(mark.line): \(problem)"
        case .duplicatedKeysInMapping(let duplicates, _):
            return "duplicated key \(duplicates.joined(separator: ", "))"
        case .reader(let problem, _, _, _):
            return problem
        case .no, .memory, .writer, .emitter, .representer, .dataCouldNotBeDecoded:
            return String(describing: error).split(separator: "\n").first.map(String.init) ?? "unreadable"
        }
    }

    var location: String {
        let line = node.mark.map { ":\($0.line)" } ?? ""
        return "\(source)\(line)"
    }

    private var displayPath: String { path.isEmpty ? "the document" : "'\(path)'" }

    func fail(_ what: String) -> InputError {
        InputError("\(location): \(displayPath) \(what)")
    }

    /// The members of a mapping, refusing any key not in `allowed` (the error names it).
    func mapping(allowed: Set<String>) throws -> [String: StrictYAML] {
        guard case .mapping(let mapping) = node else { throw fail("must be a mapping") }
        var members: [String: StrictYAML] = [:]
        for (key, value) in mapping {
            guard let name = key.string else { throw fail("has a key that is not a string") }
            let child = StrictYAML(node: value, path: path.isEmpty ? name : "\(path).\(name)", source: source)
            guard allowed.contains(name) else {
                let here = key.mark.map { "\(source):\($0.line)" } ?? source
                let within = path.isEmpty ? "" : " in '\(path)'"
                throw InputError(
                    "\(here): unknown key '\(name)'\(within) (allowed: \(allowed.sorted().joined(separator: ", ")))")
            }
            members[name] = child
        }
        return members
    }

    func sequence() throws -> [StrictYAML] {
        guard case .sequence(let sequence) = node else { throw fail("must be a list") }
        return sequence.enumerated().map { index, item in
            StrictYAML(node: item, path: "\(path)[\(index)]", source: source)
        }
    }

    /// A non-empty scalar string.
    func string() throws -> String {
        guard case .scalar(let scalar) = node else { throw fail("must be a string") }
        let value = scalar.string.trimmingCharacters(in: .whitespaces)
        guard !value.isEmpty else { throw fail("must not be empty") }
        return value
    }

    /// A non-empty scalar string with no control characters (tabs, line breaks, NUL, …).
    func stringWithoutControlCharacters() throws -> String {
        let value = try string()
        guard !value.unicodeScalars.contains(where: InputError.breaks) else { throw fail("must not contain control characters") }
        return value
    }

    /// A scalar taken exactly as written (an argument of a command: no trimming, may be
    /// empty), without NUL, which no argument can hold.
    func argument() throws -> String {
        guard case .scalar(let scalar) = node else { throw fail("must be a string") }
        guard !scalar.string.unicodeScalars.contains("\0") else { throw fail("must not contain a NUL character") }
        return scalar.string
    }

    /// A scalar, one of `choices`.
    func choice<T: RawRepresentable & CaseIterable>(_ type: T.Type) throws -> T where T.RawValue == String {
        let raw = try string()
        guard let value = T(rawValue: raw) else {
            let options = T.allCases.map(\.rawValue).joined(separator: " | ")
            throw fail("has invalid value '\(raw)' (expected \(options))")
        }
        return value
    }
}
