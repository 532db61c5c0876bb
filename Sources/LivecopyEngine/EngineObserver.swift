// What the engine tells its caller about progress: `EngineObserver` and the silent default.

import LivecopyModel

/// Told what the engine does, for progress display. Calls arrive from many tasks.
public protocol EngineObserver: Sendable {
    /// A disk moved from `from` to its current state.
    func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String)
    /// A running job reported progress.
    func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64)
    /// Something worth telling the operator that changes no state.
    func note(_ disk: DiskRecord?, _ message: String)
}

/// An observer that ignores everything.
public struct SilentObserver: EngineObserver {
    public init() {}
    public func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String) {}
    public func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64) {}
    public func note(_ disk: DiskRecord?, _ message: String) {}
}
