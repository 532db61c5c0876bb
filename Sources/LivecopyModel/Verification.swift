// The policy's data verification before retirement (docs/retirement.md): `verify`,
// `verify_sample` and `on_unverifiable`.

import Foundation

/// How much of a copy's data is compared with its source before the source is retired.
public enum VerifyMode: String, Codable, CaseIterable, Sendable {
    /// No comparison: the destination's structure is checked (no backing file, nothing
    /// holds the source), as always, but not its data.
    case none
    /// The first and last cluster of every allocated extent the guest left alone, plus a
    /// seeded random sample (`verify_sample`) of the others.
    case sample
    /// Every allocated cluster the guest left alone.
    case full
}

/// How many clusters `verify: sample` draws besides each extent's first and last: a
/// count (`512`) or a share of the clusters the guest left alone (`1%`).
public enum VerifySample: Sendable, Equatable, Codable, CustomStringConvertible {
    case count(Int)
    /// A share from 0 (exclusive) to 1.
    case fraction(Double)

    /// `512` or `1%` (up to two decimals: `0.25%`).
    public static func parse(_ text: String) -> VerifySample? {
        if text.hasSuffix("%") {
            guard let percent = Double(text.dropLast()), percent.isFinite, percent > 0, percent <= 100 else { return nil }
            return .fraction(percent / 100)
        }
        guard let count = Int(text), count >= 0, count <= 100_000_000 else { return nil }
        return .count(count)
    }

    public var description: String {
        switch self {
        case .count(let count): return "\(count)"
        case .fraction(let share):
            let percent = share * 100
            return percent == percent.rounded() ? "\(Int(percent))%" : String(format: "%.2f%%", percent)
        }
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self.parse(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad verify_sample '\(text)'"))
        }
        self = value
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// What becomes of the source when its data cannot be compared exactly: the dirty bitmap
/// that tells the guest's writes from the copy's was lost (QEMU restarted since the
/// switch), or the hypervisor cannot export the destination.
public enum OnUnverifiable: String, Codable, CaseIterable, Sendable {
    /// The disk completes with its source left where it is, untouched, and a warning.
    case keepSource = "keep_source"
    /// The disk stops in `needs_attention`; nothing is touched.
    case needsAttention = "needs_attention"
    /// The source is retired as `retire_source` says, unverified (a warning is recorded).
    case retire
}
