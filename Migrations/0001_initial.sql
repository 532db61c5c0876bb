-- 0001: plans, their disks, and the events table (the transition log).
-- Shipped migrations are never edited; later changes go in new numbered files.

CREATE TABLE plans (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT,
    policy_reference TEXT,
    -- The policy resolved at submission, as JSON, so a later run uses the same values.
    policy_json      TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN
                       ('pending', 'running', 'completed', 'failed', 'rolled_back', 'needs_attention', 'refused')),
    created_at       REAL NOT NULL,
    finished_at      REAL,
    error            TEXT
);
CREATE INDEX plans_by_state ON plans (state, id);

CREATE TABLE disks (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id             INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    vm_name             TEXT NOT NULL,
    qmp_socket          TEXT NOT NULL,
    device              TEXT NOT NULL,
    destination         TEXT NOT NULL,
    source              TEXT,
    source_format       TEXT,
    qmp_device          TEXT,
    state               TEXT NOT NULL CHECK (state IN
                          ('pending', 'snapshotting', 'streaming', 'retiring', 'completed', 'failed',
                           'rolling_back', 'rolled_back', 'needs_attention')),
    bytes_done          INTEGER NOT NULL DEFAULT 0,
    bytes_total         INTEGER NOT NULL DEFAULT 0,
    error               TEXT,
    intent              TEXT,
    destination_created INTEGER NOT NULL DEFAULT 0,
    updated_at          REAL NOT NULL
);
CREATE INDEX disks_by_plan ON disks (plan_id, id);
CREATE INDEX disks_by_vm ON disks (vm_name, plan_id);
CREATE INDEX disks_by_destination ON disks (destination);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id    INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    disk_id    INTEGER REFERENCES disks (id) ON DELETE CASCADE,
    at         REAL NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('transition', 'intent', 'outcome', 'note')),
    from_state TEXT,
    to_state   TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX events_by_plan ON events (plan_id, id);
