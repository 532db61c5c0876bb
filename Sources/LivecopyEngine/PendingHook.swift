// A disk's pending hook, run before the disk goes on, and what a failed `on_switch` does.

import LivecopyModel

extension HookCall {
    /// Runs the disk's pending hook, if any. A failed `on_switch` with
    /// `on_switch_failure: rollback` moves the disk to `rolling_back` (the VM's manager
    /// still names the source, so the VM goes back onto it); the hook stays pending until
    /// that move is recorded, so a crash in between runs it again rather than losing the
    /// decision. Any other failure is recorded only. Returns whether the disk's state changed.
    ///
    /// Needs no VM: the engine runs a pending hook before it connects to the disk's VM,
    /// so after a host reboot the manager learns where the disk is before anyone starts
    /// the VM, even while the VM is down.
    @discardableResult
    func runPending() async throws -> Bool {
        let disk = ledger.disk
        guard let hook = disk.pendingHook else { return false }
        guard hook == .onSwitch && ledger.hooks.onSwitchFailure == .rollback && Self.canRollBack(from: disk.state) else {
            try await runRecordingFailure(hook)
            return false
        }
        guard let result = try await run(hook, keepPendingIfFailed: true), !result.succeeded else { return false }
        let reason = "hook on_switch failed (\(result.endingText)), so the VM's manager may not know \(disk.destination); on_switch_failure: rollback"
        try await ledger.transition(to: .rollingBack, reason) {
            $0.pendingHook = nil
            $0.error = reason
        }
        return true
    }

    /// Whether a failed `on_switch` can still roll a disk in `state` back.
    private static func canRollBack(from state: DiskState) -> Bool {
        switch state {
        case .streaming, .mirroring, .failed, .needsAttention: return true
        case .pending, .snapshotting, .retiring, .completed, .rollingBack, .rolledBack: return false
        }
    }
}

extension DiskWorkflow {
    /// `HookCall.runPending()` for this disk: the workflow runs it before each step.
    @discardableResult
    func runPendingHook() async throws -> Bool {
        try await HookCall(ledger: ledger).runPending()
    }
}
