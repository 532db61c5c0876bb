// Stopping an engine's runs on purpose (`livecopy serve` on SIGTERM): no new step starts,
// QEMU's jobs run on, and the next owner re-attaches to them as after a crash.

import Foundation
import LivecopyModel
import Synchronization

/// A run stopped because its engine was halted (`Engine.halt`): its disks were left as
/// they stood, with QEMU's jobs running, and its lease was released for the next owner.
public struct DrivingHalted: Error, CustomStringConvertible {
    public let planId: Int64
    public let reason: String

    public var description: String {
        "plan \(planId): stopped driving (\(reason)); QEMU's jobs run on, and the next run re-attaches to them"
    }
}

extension Engine {
    /// Stops every run of this engine at its next await: each records why in its plan's
    /// timeline, releases its lease and throws `DrivingHalted`. Jobs in QEMU are not
    /// touched; a step between its intent and its outcome is reconciled by the next run,
    /// as after a crash. Runs started afterwards stop at once.
    public func halt(reason: String) {
        halting.halt(reason: reason)
    }

    /// Records that the run of `planId` stopped for `reason`, and returns the error to throw.
    func halted(_ planId: Int64, reason: String) async throws -> DrivingHalted {
        let stopped = DrivingHalted(planId: planId, reason: reason)
        try await store.appendEvent(planId: planId, diskId: nil, event: NewEvent(kind: .note, detail: stopped.description), at: Date())
        observer.note(nil, stopped.description)
        return stopped
    }
}

/// Whether an engine was halted, and what to do when it is (stop each run's tasks).
final class Halting: Sendable {
    private struct State {
        var reason: String?
        var handlers: [Int: @Sendable () -> Void] = [:]
        var next = 0
    }
    private let state = Mutex(State())

    /// Why the engine was halted; nil while it runs.
    var reason: String? { state.withLock { $0.reason } }

    /// Calls `handler` when the engine is halted (at once if it is already); returns a
    /// token for `remove`.
    func onHalt(_ handler: @escaping @Sendable () -> Void) -> Int {
        let (token, halted) = state.withLock { state -> (Int, Bool) in
            let token = state.next
            state.next += 1
            if state.reason == nil { state.handlers[token] = handler }
            return (token, state.reason != nil)
        }
        if halted { handler() }
        return token
    }

    func remove(_ token: Int) {
        state.withLock { _ = $0.handlers.removeValue(forKey: token) }
    }

    func halt(reason: String) {
        let handlers = state.withLock { state -> [@Sendable () -> Void] in
            guard state.reason == nil else { return [] }
            state.reason = reason
            return Array(state.handlers.values)
        }
        for handler in handlers { handler() }
    }
}
