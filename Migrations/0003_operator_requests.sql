-- 0003: operator controls of a plan's jobs (livecopy throttle, pause, resume).

-- The settings in force for the plan's jobs, including jobs started later
-- (NULL speed_override: the policy's speed; bytes per second, 0 = unlimited).
ALTER TABLE plans ADD COLUMN speed_override INTEGER;
ALTER TABLE plans ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;

-- One row per operator command. The plan's live owner applies it over its own QMP
-- sessions (QEMU serves one client per monitor) and records the outcome.
CREATE TABLE operator_requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id      INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    action       TEXT NOT NULL CHECK (action IN ('throttle', 'pause', 'resume')),
    speed        INTEGER,
    requested_at REAL NOT NULL,
    requested_by TEXT NOT NULL,
    -- Set once the request is done with: applied by the owner, or only recorded.
    finished_at  REAL,
    ok           INTEGER,
    outcome      TEXT
);
CREATE INDEX operator_requests_open ON operator_requests (plan_id, finished_at, id);
