import Foundation

/// A value guarded by a lock: every read and write goes through `withLock`.
///
/// `NIOLockedValueBox` lives in `NIOConcurrencyHelpers`, which this target does not
/// depend on, so this is the same idea over `NSLock`. The lock is not reentrant:
/// never call back into the owner (resume continuations, finish streams, run user
/// code) while holding it.
final class LockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    /// Runs `body` with exclusive access to the value.
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
