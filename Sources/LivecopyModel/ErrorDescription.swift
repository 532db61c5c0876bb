/// Any error in one line, as every message of livecopy quotes one: its description
/// with line breaks turned into spaces. The engine and the CLI both use this one.
public func describe(_ error: Error) -> String {
    String(describing: error).replacingOccurrences(of: "\n", with: " ")
}
