import Foundation
import LivecopyEngine
import LivecopyModel
import Synchronization

/// Shows the engine's progress on stderr: on a terminal, one live line per disk with a
/// bar, percent, rate and ETA; otherwise a plain line per disk every few seconds.
/// State changes are always printed as lines of their own.
final class ProgressDisplay: EngineObserver, Sendable {
    private struct Line {
        var label: String
        var state: DiskState
        var done: Int64 = 0
        var total: Int64 = 0
        var rate: Double = 0
        var lastSample: (Date, Int64)?
        var lastPlainPrint = Date.distantPast
    }

    /// What is on the screen; every change goes through `screen.withLock`.
    private struct Screen {
        var lines: [Int64: Line] = [:]
        var order: [Int64] = []
        var drawnLines = 0
        var lastDraw = Date.distantPast
    }

    private let screen = Mutex(Screen())
    private let isTerminal: Bool
    private let plainInterval: Double

    init(plainInterval: Double = 3) {
        isTerminal = isatty(STDERR_FILENO) == 1 && ProcessInfo.processInfo.environment["TERM"] != "dumb"
        self.plainInterval = plainInterval
    }

    func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String) {
        screen.withLock { screen in
            var line = screen.lines[disk.id] ?? Line(label: "\(disk.vmName)/\(disk.device)", state: disk.state)
            line.state = disk.state
            if screen.lines[disk.id] == nil { screen.order.append(disk.id) }
            screen.lines[disk.id] = line
            emit("\(line.label): \(from.rawValue) → \(disk.state.rawValue): \(detail)", &screen)
        }
    }

    func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64) {
        screen.withLock { screen in
            var line = screen.lines[disk.id] ?? Line(label: "\(disk.vmName)/\(disk.device)", state: disk.state)
            if screen.lines[disk.id] == nil { screen.order.append(disk.id) }
            let now = Date()
            if let (at, done) = line.lastSample, now.timeIntervalSince(at) > 0.2 {
                let instant = (Double(bytesDone) - Double(done)) / now.timeIntervalSince(at)
                line.rate = line.rate == 0 ? instant : 0.7 * line.rate + 0.3 * instant
                line.lastSample = (now, bytesDone)
            } else if line.lastSample == nil {
                line.lastSample = (now, bytesDone)
            }
            line.done = bytesDone
            line.total = bytesTotal
            if !isTerminal && now.timeIntervalSince(line.lastPlainPrint) >= plainInterval {
                line.lastPlainPrint = now
                screen.lines[disk.id] = line
                emit(describe(line), &screen)
                return
            }
            screen.lines[disk.id] = line
            if isTerminal && now.timeIntervalSince(screen.lastDraw) >= 0.2 { redraw(&screen) }
        }
    }

    func note(_ disk: DiskRecord?, _ message: String) {
        screen.withLock { screen in
            emit(disk.map { "\($0.vmName)/\($0.device): \(message)" } ?? message, &screen)
        }
    }

    /// Clears the live block (terminal) so later output starts on a clean line.
    func finish() {
        screen.withLock { screen in
            clearBlock(&screen)
        }
    }

    // MARK: - Rendering (lock held)

    private func emit(_ message: String, _ screen: inout Screen) {
        clearBlock(&screen)
        FileHandle.standardError.write(Data((message + "\n").utf8))
        if isTerminal { redraw(&screen) }
    }

    private func clearBlock(_ screen: inout Screen) {
        guard isTerminal, screen.drawnLines > 0 else { return }
        FileHandle.standardError.write(Data("\u{1B}[\(screen.drawnLines)A\u{1B}[J".utf8))
        screen.drawnLines = 0
    }

    private func redraw(_ screen: inout Screen) {
        clearBlock(&screen)
        let active = screen.order.compactMap { screen.lines[$0] }.filter { $0.state == .streaming && $0.total > 0 }
        guard !active.isEmpty else { return }
        let text = active.map(bar).joined(separator: "\n") + "\n"
        FileHandle.standardError.write(Data(text.utf8))
        screen.drawnLines = active.count
        screen.lastDraw = Date()
    }

    private func bar(_ line: Line) -> String {
        let fraction = line.total > 0 ? max(0, min(1, Double(line.done) / Double(line.total))) : 0
        let width = 30
        let filled = Int(fraction * Double(width))
        return "\(line.label.padding(toLength: 18, withPad: " ", startingAt: 0)) ["
            + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "] "
            + String(format: "%5.1f%%", fraction * 100) + "  \(ByteSize.format(Self.bytes(line.rate)))/s  ETA \(eta(line))"
    }

    private func describe(_ line: Line) -> String {
        let fraction = line.total > 0 ? Double(line.done) / Double(line.total) * 100 : 0
        return "\(line.label): \(line.state.rawValue) " + String(format: "%.1f%%", fraction)
            + " (\(ByteSize.format(line.done)) of \(ByteSize.format(line.total)), \(ByteSize.format(Self.bytes(line.rate)))/s, ETA \(eta(line)))"
    }

    /// A rate as whole bytes, clamped: never traps on a value that does not fit.
    static func bytes(_ rate: Double) -> Int64 {
        guard rate.isFinite, rate > 0 else { return 0 }
        return rate < 0x1p63 ? Int64(rate) : .max
    }

    private func eta(_ line: Line) -> String {
        guard line.rate > 1, line.total > line.done else { return line.total > 0 && line.done >= line.total ? "0s" : "--" }
        // In Double: sizes QEMU reports (from an image's header) may be anything.
        let left = (Double(line.total) - Double(line.done)) / line.rate
        guard left.isFinite, left < 1e9 else { return "--" }
        let seconds = Int(left)
        return seconds >= 3600 ? "\(seconds / 3600)h\(seconds % 3600 / 60)m"
            : seconds >= 60 ? "\(seconds / 60)m\(seconds % 60)s" : "\(seconds)s"
    }
}
