// `MetricsObserver`: an `EngineObserver` that passes everything on to another one and
// records metrics on the way.

import LivecopyModel

/// Wraps the observer a command gives the engine (its progress display) so the same
/// reports also feed the metrics (`MetricsEndpoint.observing(_:)` makes one).
public struct MetricsObserver: EngineObserver {
    public let wrapped: any EngineObserver
    public let recorder: DiskMetricsRecorder

    public init(wrapping wrapped: any EngineObserver, recorder: DiskMetricsRecorder) {
        self.wrapped = wrapped
        self.recorder = recorder
    }

    public func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String) {
        wrapped.diskMoved(disk, from: from, detail: detail)
        recorder.moved(disk, from: from)
    }

    public func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64) {
        wrapped.diskProgress(disk, bytesDone: bytesDone, bytesTotal: bytesTotal)
        recorder.progress(disk, done: bytesDone, total: bytesTotal)
    }

    public func note(_ disk: DiskRecord?, _ message: String) {
        wrapped.note(disk, message)
    }
}
