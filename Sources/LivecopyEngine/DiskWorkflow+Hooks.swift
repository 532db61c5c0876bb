// A disk's pending hook, run where the workflow stands, and what a failed `on_switch` does.

import LivecopyModel

extension DiskWorkflow {
    /// Runs the disk's pending hook, if any (`HookCall`). A failed `on_switch` with
    /// `on_switch_failure: rollback` moves the disk to `rolling_back` (the VM's manager
    /// still names the source, so the VM goes back onto it); the hook stays pending until
    /// that move is recorded, so a crash in between runs it again rather than losing the
    /// decision. Returns whether the disk's state changed.
    @discardableResult
    func runPendingHook() async throws -> Bool {
        guard let hook = disk.pendingHook else { return false }
        let call = HookCall(ledger: ledger)
        guard hook == .onSwitch && policy.hooks.onSwitchFailure == .rollback && canRollBackForHook else {
            try await call.runRecordingFailure(hook)
            return false
        }
        guard let result = try await call.run(hook, keepPendingIfFailed: true), !result.succeeded else { return false }
        let reason = "hook on_switch failed (\(result.endingText)), so the VM's manager may not know \(disk.destination); on_switch_failure: rollback"
        try await ledger.transition(to: .rollingBack, reason) {
            $0.pendingHook = nil
            $0.error = reason
        }
        return true
    }

    /// Whether a failed `on_switch` can still roll the disk back from where it stands.
    private var canRollBackForHook: Bool {
        switch disk.state {
        case .streaming, .mirroring, .failed, .needsAttention: return true
        case .pending, .snapshotting, .retiring, .completed, .rollingBack, .rolledBack: return false
        }
    }
}
