import Foundation
import LivecopyEngine
import LivecopyModel
import Synchronization

/// Shows the engine's progress on stderr: on a terminal, one live line per disk with a
/// bar, percent, bytes copied, rate and ETA; otherwise a plain line per disk every few
/// seconds (`ProgressLine` says what each number means). State changes are always
/// printed as lines of their own.
///
/// Rate and ETA come from a `CopyRateEstimator` per disk. When a disk is first seen
/// streaming, the display asks the inspector (once per disk per process, on a task of
/// its own: nothing waits for it) where the source's chain holds data; until that
/// answer, and for good when it fails, they are measured on the job's offset.
final class ProgressDisplay: EngineObserver, Sendable {
    private struct Line {
        var label: String
        var state: DiskState
        var done: Int64 = 0
        var total: Int64 = 0
        /// The source chain's allocation map, once read.
        var allocationMap: AllocationMap?
        /// Measures the current job; its map is `allocationMap` only while the disk streams.
        var estimator: CopyRateEstimator?
        /// Whether `estimator` measures a stream job (and so may use the map).
        var estimatorMeasuresStream = false
        var lastPlainPrint: Duration?
    }

    /// What is on the screen; every change goes through `screen.withLock`.
    private struct Screen {
        var lines: [Int64: Line] = [:]
        var order: [Int64] = []
        var drawnLines = 0
        var lastDraw: Duration?
        /// Disks whose allocation map was asked for (at most once each).
        var mapsAsked: Set<Int64> = []
    }

    private let screen = Mutex(Screen())
    private let isTerminal: Bool
    private let plainInterval: Duration
    private let inspector: any ImageInspector
    /// Time since the display was made, on a monotonic clock.
    private let elapsed: @Sendable () -> Duration

    /// `elapsed` is the clock (time since some fixed origin); by default a monotonic one.
    init(plainInterval: Double = 3, inspector: any ImageInspector = QemuImgInspector(),
         elapsed: (@Sendable () -> Duration)? = nil) {
        isTerminal = isatty(STDERR_FILENO) == 1 && ProcessInfo.processInfo.environment["TERM"] != "dumb"
        self.plainInterval = .milliseconds(Int64(max(0, min(plainInterval, 1e9)) * 1000))
        self.inspector = inspector
        let start = ContinuousClock.now
        self.elapsed = elapsed ?? { start.duration(to: ContinuousClock.now) }
    }

    func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String) {
        screen.withLock { screen in
            var line = screen.lines[disk.id] ?? Line(label: "\(disk.vmName)/\(disk.device)", state: disk.state)
            line.state = disk.state
            if screen.lines[disk.id] == nil { screen.order.append(disk.id) }
            screen.lines[disk.id] = line
            askForAllocationMap(of: disk, &screen)
            emit("\(line.label): \(from.rawValue) → \(disk.state.rawValue): \(detail)", &screen)
        }
    }

    func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64) {
        let now = elapsed()
        screen.withLock { screen in
            var line = screen.lines[disk.id] ?? Line(label: "\(disk.vmName)/\(disk.device)", state: disk.state)
            if screen.lines[disk.id] == nil { screen.order.append(disk.id) }
            askForAllocationMap(of: disk, &screen)
            // The map tells where a stream job copies; a commit or mirror walks another image.
            let streaming = disk.state == .streaming
            if line.estimator?.total != bytesTotal || line.estimatorMeasuresStream != streaming {
                line.estimator = CopyRateEstimator(total: bytesTotal, map: streaming ? line.allocationMap : nil)
                line.estimatorMeasuresStream = streaming
            }
            line.estimator?.record(offset: bytesDone, at: now)
            line.done = bytesDone
            line.total = bytesTotal
            if !isTerminal && line.lastPlainPrint.map({ now - $0 >= plainInterval }) ?? true {
                line.lastPlainPrint = now
                screen.lines[disk.id] = line
                emit(progressLine(line).plain, &screen)
                return
            }
            screen.lines[disk.id] = line
            if isTerminal && screen.lastDraw.map({ now - $0 >= .milliseconds(200) }) ?? true { redraw(&screen) }
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

    /// What the disk's line says now; nil before any news of the disk.
    func progressLine(ofDisk id: Int64) -> ProgressLine? {
        screen.withLock { screen in screen.lines[id].map(progressLine) }
    }

    // MARK: - The allocation map

    /// Asks, once per disk, for the map of a streaming disk's source chain; the answer
    /// arrives later (`adopt`). Lock held.
    private func askForAllocationMap(of disk: DiskRecord, _ screen: inout Screen) {
        guard disk.state == .streaming, let source = disk.source, let format = disk.sourceFormat,
              screen.mapsAsked.insert(disk.id).inserted else { return }
        let inspector = self.inspector
        Task { [weak self] in
            // A map that cannot be read leaves the offset-based estimate in place.
            guard let map = try? await inspector.allocationMap(of: source, format: format) else { return }
            self?.adopt(map, forDisk: disk.id)
        }
    }

    private func adopt(_ map: AllocationMap, forDisk id: Int64) {
        screen.withLock { screen in
            guard var line = screen.lines[id] else { return }
            line.allocationMap = map
            if line.estimatorMeasuresStream { line.estimator?.adopt(map) }
            screen.lines[id] = line
        }
    }

    // MARK: - Rendering (lock held)

    private func progressLine(_ line: Line) -> ProgressLine {
        let estimator = line.estimator ?? CopyRateEstimator(total: line.total, map: nil)
        return ProgressLine(
            label: line.label, state: line.state,
            // The bar and percent measure what the bytes, rate and ETA measure, so the
            // line never shows 31% beside "49 MiB of 120 MiB".
            fraction: estimator.bytesToCopy > 0 ? Double(estimator.bytesCopied) / Double(estimator.bytesToCopy)
                : (line.total > 0 ? Double(line.done) / Double(line.total) : 0),
            bytesCopied: estimator.bytesCopied, bytesToCopy: estimator.bytesToCopy,
            rate: estimator.rate, timeLeft: estimator.timeLeft)
    }

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
        let text = active.map { progressLine($0).bar }.joined(separator: "\n") + "\n"
        FileHandle.standardError.write(Data(text.utf8))
        screen.drawnLines = active.count
        screen.lastDraw = elapsed()
    }
}
