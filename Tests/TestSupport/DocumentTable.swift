import Foundation

/// A table of a page in `docs/`, between `<!-- name -->` and `<!-- /name -->`: the doc
/// tests read it back and compare it with the code.
public enum DocumentTable {
    /// The page `docs/<page>` of this checkout ("" when it cannot be read).
    public static func page(_ page: String) -> String {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/\(page)").path
        return (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    /// The body rows of table `name` of `document` (lines starting "| `"), as trimmed
    /// cells; `stripBackquotes` removes the backquotes from the cells. Nil without such a table.
    public static func rows(_ name: String, of document: String, stripBackquotes: Bool) -> [[String]]? {
        guard let text = document.components(separatedBy: "<!-- \(name) -->").dropFirst().first?
            .components(separatedBy: "<!-- /\(name) -->").first else { return nil }
        return text.split(separator: "\n").filter { $0.hasPrefix("| `") }.map { line in
            line.split(separator: "|").map { cell in
                let trimmed = cell.trimmingCharacters(in: .whitespaces)
                return stripBackquotes ? trimmed.replacingOccurrences(of: "`", with: "") : trimmed
            }
        }
    }
}
