import Foundation
import Logging
import LivecopyModel
import Synchronization

/// The one place a disk's record changes: every state transition, every intent before
/// a side effect and every outcome after it is checked here and persisted, with an
/// event, before the engine goes on. Every write is awaited (the store commits it on its
/// own queue), so the `fsync` of a commit never holds a thread of the concurrency pool.
final class DiskLedger: Sendable {
    private struct State {
        var disk: DiskRecord
        var lastProgressWrite = Date.distantPast
    }
    private let state: Mutex<State>
    private let store: any WorkflowStore
    private let observer: any EngineObserver
    /// The plan's hooks: a transition into a state that calls for one records it pending
    /// in the same write (`HookEvent.entering`).
    let hooks: HookSettings

    init(disk: DiskRecord, store: any WorkflowStore, observer: any EngineObserver, hooks: HookSettings) {
        self.state = Mutex(State(disk: disk))
        self.store = store
        self.observer = observer
        self.hooks = hooks
    }

    /// The disk's record as last persisted (or reloaded).
    private(set) var disk: DiskRecord {
        get { state.withLock { $0.disk } }
        set { state.withLock { $0.disk = newValue } }
    }

    /// Moves the disk to `next` if the transition table allows it, applying `update` in
    /// the same write. This is the only function that changes a disk's state.
    ///
    /// An open intent stays open only where `DiskIntent.isAllowed(in:)` lets it (its own
    /// step, `failed`, `needs_attention`): a move elsewhere is made by the reconciliation
    /// that settled it from what QEMU shows, and closes it, saying so in the event.
    ///
    /// `quarantining`: the source just moved into quarantine, recorded in the same write.
    func transition(to next: DiskState, _ detail: String, quarantining: NewQuarantinedImage? = nil,
                    update: (inout DiskRecord) -> Void = { _ in }) async throws {
        let disk = self.disk
        let previous = disk.state
        guard previous.canMove(to: next) else {
            throw IllegalTransition(subject: "disk \(disk.id)", from: previous.rawValue, to: next.rawValue)
        }
        var updated = disk
        update(&updated)
        updated.state = next
        var detail = detail
        if let open = updated.intent, !open.isAllowed(in: next) {
            updated.intent = nil
            if next != .completed && next != .rolledBack { detail += " (open intent \(open.rawValue) settled from what QEMU shows)" }
        }
        detail += call(HookEvent.entering(next), on: &updated)
        let event = NewEvent(kind: .transition, from: previous.rawValue, to: next.rawValue, detail: detail)
        if let quarantining {
            try await store.save(disk: updated, expecting: previous, event: event, quarantining: quarantining, at: Date())
        } else {
            try await store.save(disk: updated, expecting: previous, event: event, at: Date())
        }
        self.disk = updated
        logger.debug("disk transition", metadata: [
            "plan": "\(disk.planId)", "disk": "\(disk.id)", "from": "\(previous.rawValue)", "to": "\(next.rawValue)",
            "detail": "\(detail)",
        ])
        EdgeLog.record("disk", from: previous.rawValue, to: next.rawValue)
        CrashPoint.reach("transition:\(next.rawValue)")
        observer.diskMoved(updated, from: previous, detail: detail)
    }

    /// Records that `action` is about to be attempted; call before the side effect.
    func intend(_ action: DiskIntent, _ detail: String, update: (inout DiskRecord) -> Void = { _ in }) async throws {
        let disk = self.disk
        guard action.isAllowed(in: disk.state) else {
            throw IllegalTransition(subject: "disk \(disk.id)", from: disk.state.rawValue, to: "intent \(action.rawValue)")
        }
        try await record(.intent, action: action.rawValue, detail) {
            update(&$0)
            $0.intent = action
        }
    }

    /// Records `hook` pending in `record`, when the plan's policy has it, and returns what
    /// the write's event says of it: that it will run, and which hook not yet run it
    /// replaces (the newer says where the disk is now).
    private func call(_ hook: HookEvent?, on record: inout DiskRecord) -> String {
        guard let hook, hooks.command(for: hook) != nil else { return "" }
        let replaced = record.pendingHook.map { $0 == hook ? "" : "; hook \($0.rawValue) superseded before it ran" } ?? ""
        record.pendingHook = hook
        return "; hook \(hook.rawValue) to run\(replaced)"
    }

    /// Records that the pending hook's program is about to run (its start in the timeline;
    /// the pending hook itself was recorded with the step that called for it).
    func hookStarting(_ hook: HookEvent, _ detail: String) async throws {
        try await record(.intent, action: "hook:\(hook.rawValue)", detail) { _ in }
    }

    /// Records how the hook's run ended. `keepPending` leaves it pending, for a
    /// consequence recorded by the next write (a rollback) that clears it.
    func hookFinished(_ hook: HookEvent, _ detail: String, keepPending: Bool) async throws {
        try await record(.outcome, action: "hook:\(hook.rawValue)", detail) {
            if !keepPending { $0.pendingHook = nil }
        }
        observer.note(disk, "hook \(hook.rawValue): \(detail)")
    }

    /// The disk's plan, as recorded.
    func plan() throws -> PlanRecord? { try store.plan(id: disk.planId) }

    /// The disk's events, oldest first.
    func events() throws -> [EventRecord] { try store.events(ofDisk: disk.id, planId: disk.planId) }

    /// Marks the end of the side effect announced by the pending intent (for crash tests).
    func sent() {
        CrashPoint.reach("sent:\(disk.intent?.rawValue ?? "check")")
    }

    /// Records the outcome of the pending intent; call after the side effect. `next`
    /// records the following intent in the same write, when the outcome proves it safe;
    /// `calling` a hook the outcome calls for (a mirror's pivot: `on_switch`), pending in
    /// the same write when the policy has it.
    func outcome(_ detail: String, next: DiskIntent? = nil, calling hook: HookEvent? = nil,
                 update: (inout DiskRecord) -> Void = { _ in }) async throws {
        let disk = self.disk
        if let next, !next.isAllowed(in: disk.state) {
            throw IllegalTransition(subject: "disk \(disk.id)", from: disk.state.rawValue, to: "intent \(next.rawValue)")
        }
        var updated = disk
        let called = call(hook, on: &updated)
        try await record(.outcome, action: disk.intent?.rawValue ?? "check",
                         detail + called + (next.map { "; next: \($0.rawValue)" } ?? "")) {
            update(&$0)
            $0.intent = next
            $0.pendingHook = updated.pendingHook
        }
        if let next { CrashPoint.reach("intent:\(next.rawValue)") }
    }

    /// Writes an intent or outcome: the disk's new columns and the event, in one transaction.
    private func record(_ kind: EventKind, action: String, _ detail: String, update: (inout DiskRecord) -> Void) async throws {
        let disk = self.disk
        var updated = disk
        update(&updated)
        try await store.save(disk: updated, expecting: disk.state,
                       event: NewEvent(kind: kind, from: disk.state.rawValue, to: disk.state.rawValue,
                                       detail: "\(action): \(detail)"),
                       at: Date())
        self.disk = updated
        logger.debug("disk \(kind.rawValue)", metadata: [
            "plan": "\(disk.planId)", "disk": "\(disk.id)", "state": "\(disk.state.rawValue)", "action": "\(action)",
            "detail": "\(detail)",
        ])
        CrashPoint.reach("\(kind.rawValue):\(action)")
    }

    /// Reads the disk's record again (another ledger, such as the VM's snapshot, may have
    /// moved it meanwhile).
    func reload() throws {
        guard let fresh = try store.disk(id: disk.id) else {
            throw StoreFailure("disk \(disk.id) of plan \(disk.planId) is gone from the database")
        }
        disk = fresh
    }

    /// Records a problem the disk has now (for `status`), with a note in the timeline, and
    /// no state change. The next transition that settles the problem clears it.
    func report(_ problem: String) async throws {
        var updated = disk
        updated.error = problem
        try await store.save(disk: updated, expecting: updated.state, event: NewEvent(kind: .note, detail: problem), at: Date())
        disk = updated
        observer.note(updated, problem)
    }

    /// Appends a note to the timeline (no state change).
    func note(_ detail: String) async throws {
        let disk = self.disk
        try await store.appendEvent(planId: disk.planId, diskId: disk.id, event: NewEvent(kind: .note, detail: detail), at: Date())
        observer.note(disk, detail)
    }

    /// Reports progress; persisted at most every `persistEvery` seconds.
    func progress(done: Int64, total: Int64, persistEvery: Double) async {
        let disk = state.withLock { state in
            state.disk.bytesDone = done
            state.disk.bytesTotal = total
            return state.disk
        }
        observer.diskProgress(disk, bytesDone: done, bytesTotal: total)
        let now = Date()
        let persist = state.withLock { state -> Bool in
            guard now.timeIntervalSince(state.lastProgressWrite) >= persistEvery || done == total else { return false }
            state.lastProgressWrite = now
            return true
        }
        guard persist else { return }
        try? await store.saveProgress(diskId: disk.id, bytesDone: done, bytesTotal: total, at: now)
    }
}
