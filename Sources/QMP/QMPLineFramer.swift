/// Splits a QMP byte stream into lines.
///
/// QEMU ends every JSON object with `"\r\n"`. The framer splits on `"\n"`, strips one
/// trailing `"\r"`, drops empty lines, and keeps an incomplete last line until more bytes
/// arrive. A line (complete or still growing) longer than `maxLineLength` throws
/// `QMPClientError.protocolViolation`; after that the stream cannot be trusted, and the
/// framer should be discarded.
///
/// It is pure (no I/O), so it can be tested byte by byte; `QMPConnection` feeds it what
/// the socket reads.
public struct QMPLineFramer: Sendable {
    /// The longest line accepted, in bytes, not counting the line end.
    public let maxLineLength: Int

    /// Bytes received but not yet returned as a line.
    private var pending: [UInt8] = []
    /// How far `pending` is known to hold no `"\n"`, so a long line arriving in small
    /// pieces is scanned once, not once per piece.
    private var scanned = 0

    public init(maxLineLength: Int = QMPMessage.maxLineLength) {
        self.maxLineLength = maxLineLength
    }

    /// The number of buffered bytes that do not form a complete line yet.
    public var bufferedByteCount: Int { pending.count }

    /// Adds `bytes` to the stream and returns every line completed by them, in order,
    /// without line ends and without empty lines.
    public mutating func feed<Bytes: Sequence>(_ bytes: Bytes) throws -> [[UInt8]] where Bytes.Element == UInt8 {
        pending.append(contentsOf: bytes)
        var lines: [[UInt8]] = []
        var lineStart = 0
        var index = scanned
        while index < pending.count {
            if pending[index] == UInt8(ascii: "\n") {
                var lineEnd = index
                if lineEnd > lineStart, pending[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
                let length = lineEnd - lineStart
                guard length <= maxLineLength else { throw tooLong(length) }
                if length > 0 {
                    lines.append(Array(pending[lineStart..<lineEnd]))
                }
                lineStart = index + 1
            }
            index += 1
        }
        pending.removeFirst(lineStart)
        scanned = pending.count
        // The unfinished line may still lose a trailing "\r", hence the + 1.
        guard pending.count <= maxLineLength + 1 else { throw tooLong(pending.count) }
        return lines
    }

    private func tooLong(_ length: Int) -> QMPClientError {
        .protocolViolation("line of at least \(length) bytes exceeds the limit of \(maxLineLength)")
    }
}
