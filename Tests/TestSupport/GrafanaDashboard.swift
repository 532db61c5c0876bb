import Foundation

/// `contrib/grafana/livecopy-dashboard.json` of this checkout, read as JSON.
public enum GrafanaDashboard {
    public static let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("contrib/grafana/livecopy-dashboard.json").path

    /// The dashboard document; throws when the file is missing or not a JSON object.
    public static func document() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CocoaError(.propertyListReadCorrupt)
        }
        return object
    }

    /// The dashboard's panels.
    public static func panels() throws -> [[String: Any]] {
        try document()["panels"] as? [[String: Any]] ?? []
    }

    /// Every PromQL expression of every panel's targets.
    public static func expressions() throws -> [String] {
        try panels().flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
    }

    /// The `livecopy_…` series names the expressions use (`livecopy_x_bucket` as written).
    public static func metricNames() throws -> Set<String> {
        let pattern = try NSRegularExpression(pattern: "livecopy_[a-z_]+")
        var names: Set<String> = []
        for expression in try expressions() {
            let range = NSRange(expression.startIndex..., in: expression)
            for match in pattern.matches(in: expression, range: range) {
                if let found = Range(match.range, in: expression) { names.insert(String(expression[found])) }
            }
        }
        return names
    }
}
