// The one place a quarantined image's record changes (`purge`, `restore`).

import Foundation
import LivecopyModel

/// Records the steps of one `purge` or `restore` of a quarantined image: the intent
/// before the unlink or rename (`held` → `purging`/`restoring`, crash point
/// `intent:<action>`), then its outcome (`purged`/`restored`) or a refusal (back to
/// `held`). Each move is checked against `QuarantineState.allowedNext` and written by
/// compare-and-set with its event in the disk's timeline, as `DiskLedger` does for disks.
struct QuarantineLedger: Sendable {
    /// `purge` or `restore`: the events' prefix and the crash points' name.
    let action: String
    let store: any WorkflowStore
    let image: QuarantinedImage
    /// The disk's state, for the events' from/to (nil: the disk's record is gone).
    let diskState: String?

    /// The open state of this action's intent, and its final state.
    private var steps: (open: QuarantineState, done: QuarantineState) {
        action == "restore" ? (.restoring, .restored) : (.purging, .purged)
    }

    /// `held` → the intent's state, with an `intent` event; then the crash point.
    func intend(_ detail: String) async throws {
        try await move(from: .held, to: steps.open, .intent, detail)
        CrashPoint.reach("intent:\(action)")
    }

    /// The intent's state → the final one, with an `outcome` event.
    func finish(_ detail: String) async throws {
        try await move(from: steps.open, to: steps.done, .outcome, detail)
    }

    /// The intent's state → `held` (nothing was done), with an `outcome` event saying why.
    func refuse(_ problem: String) async throws {
        try await move(from: steps.open, to: .held, .outcome, "refused: \(problem)")
    }

    private func move(from: QuarantineState, to: QuarantineState, _ kind: EventKind, _ detail: String) async throws {
        guard from.allowedNext.contains(to) else {
            throw IllegalTransition(subject: "quarantined image \(image.id)", from: from.rawValue, to: to.rawValue)
        }
        try await store.saveQuarantine(id: image.id, state: to, expecting: from,
                                       event: NewEvent(kind: kind, from: diskState, to: diskState, detail: "\(action): \(detail)"),
                                       at: Date())
    }
}
