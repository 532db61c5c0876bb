// What one disk's progress line says, and how it is written: `ProgressLine`.

import LivecopyModel

/// One disk's progress as the display prints it, on a terminal as a live bar:
///
///     web01/drive0       [############------------------]  42.0%  1.2 GiB of 4.0 GiB  32.0 MiB/s  ETA 1m02s
///
/// and elsewhere as a plain line every few seconds:
///
///     web01/drive0: streaming 42.0% (1.2 GiB of 4.0 GiB, 32.0 MiB/s, ETA 1m02s)
///
/// Every number measures the bytes the job really copies: with the source's allocation
/// map, the allocated bytes below the job's offset, of all the allocated bytes (QEMU's
/// stream skips holes almost at once, so offset-based numbers run far ahead on a sparse
/// disk); without a map (not read yet, unreadable, or a job other than the stream), the
/// job's offset of its length (`current-progress` / `total-progress`).
struct ProgressLine: Sendable, Equatable {
    /// `vm/device`.
    var label: String
    var state: DiskState
    /// `bytesCopied` over `bytesToCopy`, 0 to 1.
    var fraction: Double
    /// Bytes copied so far (see the type's comment for which bytes).
    var bytesCopied: Int64
    /// Bytes the whole copy does.
    var bytesToCopy: Int64
    /// Bytes per second of `bytesCopied`; nil while unknown.
    var rate: Double?
    /// Time left; nil while unknown.
    var timeLeft: Duration?

    /// The terminal's live line.
    var bar: String {
        let width = 30
        let filled = Int(Self.clamped(fraction) * Double(width))
        return label.padding(toLength: 18, withPad: " ", startingAt: 0) + " ["
            + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "] "
            + Self.percent(fraction).leftPadded(to: 6)
            + "  \(ByteSize.format(bytesCopied)) of \(ByteSize.format(bytesToCopy))  \(rateText)  ETA \(etaText)"
    }

    /// The line printed every few seconds when stderr is not a terminal.
    var plain: String {
        "\(label): \(state.rawValue) \(Self.percent(fraction))"
            + " (\(ByteSize.format(bytesCopied)) of \(ByteSize.format(bytesToCopy)), \(rateText), ETA \(etaText))"
    }

    /// `32.0 MiB/s`, or `--/s` while unknown.
    var rateText: String {
        rate.map { "\(ByteSize.format(Self.bytes($0)))/s" } ?? "--/s"
    }

    /// `42s`, `1m02s`, `3h07m` (to the nearest second), or `--` while unknown.
    var etaText: String {
        guard let timeLeft else { return "--" }
        // To the nearest second: 0.7 s left is "1s", not "0s".
        let (whole, attoseconds) = timeLeft.components
        return Self.durationText(whole + (attoseconds >= 500_000_000_000_000_000 ? 1 : 0))
    }

    /// `42s`, `1m02s`, `3h07m` for whole `seconds` (0 below 0).
    static func durationText(_ seconds: Int64) -> String {
        let seconds = max(0, seconds)
        func twoDigits(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        if seconds >= 3600 { return "\(seconds / 3600)h\(twoDigits(seconds % 3600 / 60))m" }
        if seconds >= 60 { return "\(seconds / 60)m\(twoDigits(seconds % 60))s" }
        return "\(seconds)s"
    }

    /// A rate as whole bytes, clamped: never traps on a value that does not fit.
    static func bytes(_ rate: Double) -> Int64 {
        guard rate.isFinite, rate > 0 else { return 0 }
        return rate < 0x1p63 ? Int64(rate) : .max
    }

    /// `fraction` within 0 ... 1 (0 for NaN).
    static func clamped(_ fraction: Double) -> Double {
        fraction.isNaN ? 0 : max(0, min(1, fraction))
    }

    /// `42.0%`.
    static func percent(_ fraction: Double) -> String {
        let tenths = Int((clamped(fraction) * 1000).rounded())
        return "\(tenths / 10).\(tenths % 10)%"
    }
}

extension String {
    /// The string with spaces in front up to `width` characters.
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
