-- 0007: hooks and the bytes each copy moves.
-- pending_hook: a policy hook (on_switch, on_complete, on_rollback, on_needs_attention)
--   whose run was announced and whose outcome is not recorded yet. It is set in the same
--   write as the step that calls for it (the switch, the final state) and cleared with
--   the hook's outcome; after a crash `recover` runs it again. NULL: none.
-- allocated_bytes: the bytes allocated in the source chain when preflight looked (what a
--   copy job really copies), so `validate` can learn this host's copy rates from
--   history. NULL: not known (plans recorded detached, or by an earlier release).
ALTER TABLE disks ADD COLUMN pending_hook TEXT
    CHECK (pending_hook IN ('on_switch', 'on_complete', 'on_rollback', 'on_needs_attention'));
ALTER TABLE disks ADD COLUMN allocated_bytes INTEGER CHECK (allocated_bytes >= 0);
