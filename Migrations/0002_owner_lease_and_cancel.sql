-- 0002: one engine drives a plan at a time (a lease), and a plan can be asked to cancel.

-- The live owner of a running plan: its pid, host and last heartbeat (NULL: no owner).
ALTER TABLE plans ADD COLUMN owner_pid INTEGER;
ALTER TABLE plans ADD COLUMN owner_host TEXT;
ALTER TABLE plans ADD COLUMN owner_heartbeat REAL;
-- Set by `livecopy cancel`; the owner (or cancel itself) rolls the plan back.
ALTER TABLE plans ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
