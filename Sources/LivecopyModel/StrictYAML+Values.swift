// Typed scalar values of a StrictYAML node: byte sizes, booleans, integers, factors, durations.

import Foundation

extension StrictYAML {
    /// A byte count such as `0`, `65536`, `512K`, `64M`, `1G`, `2T` (binary units; `KiB`/`MB` spellings accepted).
    func byteSize() throws -> Int64 {
        let raw = try string()
        guard let value = ByteSize.parse(raw) else {
            throw fail("has invalid value '\(raw)' (expected bytes, such as 0, 512K, 64M or 1G)")
        }
        return value
    }

    /// `verify_sample`: a count of clusters (`512`) or a percentage (`1%`).
    func verifySample() throws -> VerifySample {
        let raw = try string()
        guard let value = VerifySample.parse(raw) else {
            throw fail("has invalid value '\(raw)' (expected a count of clusters such as 512, or a percentage such as 1% or 0.5%)")
        }
        return value
    }

    /// `true` or `false`.
    func boolean() throws -> Bool {
        let raw = try string()
        switch raw {
        case "true": return true
        case "false": return false
        default: throw fail("has invalid value '\(raw)' (expected true or false)")
        }
    }

    func positiveInteger() throws -> Int {
        try integer(in: 1...10_000)
    }

    func integer(in range: ClosedRange<Int>) throws -> Int {
        let raw = try string()
        guard let value = Int(raw), range.contains(value) else {
            throw fail("has invalid value '\(raw)' (expected a whole number from \(range.lowerBound) to \(range.upperBound))")
        }
        return value
    }

    /// A plain decimal factor such as `1.1`, within `range`.
    func factor(in range: ClosedRange<Double>) throws -> Double {
        let raw = try string()
        guard let value = Double(raw), value.isFinite, range.contains(value) else {
            throw fail("has invalid value '\(raw)' (expected a number from \(range.lowerBound) to \(range.upperBound), such as 1.1)")
        }
        return value
    }

    /// A duration such as `500ms`, `30s`, `5m`, `1h`, or a plain number of seconds.
    func duration(allowZero: Bool, atLeast minimum: Double = 0) throws -> Double {
        let raw = try string()
        guard let value = Duration.seconds(parsing: raw), allowZero || value > 0, value >= minimum else {
            let floor = minimum > 0 ? " of at least \(Int(minimum * 1000))ms" : ""
            throw fail("has invalid value '\(raw)' (expected a duration\(floor) such as 500ms, 30s, 5m or 1h)")
        }
        return value
    }
}
