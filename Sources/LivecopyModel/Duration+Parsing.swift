// Durations as policies write them (`500ms`, `30s`, `5m`, `1h`), in seconds.

import Foundation

extension Duration {
    /// Parses `500ms`, `30s`, `5m`, `1h` or a plain number of seconds into seconds.
    public static func seconds(parsing text: String) -> Double? {
        let raw = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where raw.hasSuffix(suffix) {
            guard let number = Double(raw.dropLast(suffix.count)) else { return nil }
            return bounded(number * scale)
        }
        return Double(raw).flatMap(bounded)
    }

    /// The longest duration accepted, in seconds (about 31 years): far above any sane
    /// wait, far below where `Duration.seconds(_:)` (about 1.7e20 s) and `Int(_:)`
    /// (about 9.2e18 s) trap when the engine uses the value.
    static let maxPolicySeconds: Double = 1_000_000_000

    private static func bounded(_ seconds: Double) -> Double? {
        seconds.isFinite && seconds >= 0 && seconds <= maxPolicySeconds ? seconds : nil
    }
}
