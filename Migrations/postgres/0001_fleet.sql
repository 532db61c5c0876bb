-- postgres 0001: the fleet store. The SQLite schema's final meaning (plans, disks, events,
-- operator_requests, quarantined_images, after SQLite's 0001-0009), with BIGINT identity
-- ids, epoch seconds as double precision (the model's Date ↔ timeIntervalSince1970) and
-- booleans as boolean; plus the plan's host and the fleet's own tables (host leases,
-- limits, copy slots) and the write receipts that make a retried transaction apply once.
-- Shipped migrations are never edited; later changes go in new numbered files.

CREATE TABLE plans (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             TEXT,
    policy_reference TEXT,
    -- The policy resolved at submission, as JSON, so a later run uses the same values.
    policy_json      TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN
                       ('pending', 'running', 'completed', 'failed', 'rolled_back', 'needs_attention', 'refused')),
    created_at       DOUBLE PRECISION NOT NULL,
    finished_at      DOUBLE PRECISION,
    error            TEXT,
    -- The host whose agent drives the plan (NULL: none named).
    host             TEXT,
    -- The live owner of a running plan (NULL: no owner).
    owner_pid        INTEGER,
    owner_host       TEXT,
    owner_heartbeat  DOUBLE PRECISION,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    -- Operator settings (NULL speed_override: the policy's speed; bytes per second, 0 = unlimited).
    speed_override   BIGINT,
    paused           BOOLEAN NOT NULL DEFAULT FALSE
);
-- status (plans in some states), history by state, newest first.
CREATE INDEX plans_by_state ON plans (state, id);
-- history --since/--until and its summary: a range walks this index, never every plan.
CREATE INDEX plans_by_created_at ON plans (created_at, id);
-- claimPlan: a host's oldest plan in some states.
CREATE INDEX plans_by_host ON plans (host, state, id);

CREATE TABLE disks (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_id             BIGINT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    vm_name             TEXT NOT NULL,
    vm_address          TEXT NOT NULL,
    device              TEXT NOT NULL,
    destination         TEXT NOT NULL,
    source              TEXT,
    source_format       TEXT,
    qmp_device          TEXT,
    state               TEXT NOT NULL CHECK (state IN
                          ('pending', 'snapshotting', 'streaming', 'mirroring', 'retiring', 'completed',
                           'failed', 'rolling_back', 'rolled_back', 'needs_attention')),
    bytes_done          BIGINT NOT NULL DEFAULT 0,
    bytes_total         BIGINT NOT NULL DEFAULT 0,
    error               TEXT,
    intent              TEXT,
    destination_created BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at          DOUBLE PRECISION NOT NULL,
    strategy            TEXT NOT NULL DEFAULT 'stream' CHECK (strategy IN ('stream', 'mirror')),
    destination_format  TEXT NOT NULL DEFAULT 'qcow2' CHECK (destination_format IN ('qcow2', 'raw')),
    pivoted             BOOLEAN NOT NULL DEFAULT FALSE,
    pending_hook        TEXT
                          CHECK (pending_hook IN ('on_switch', 'on_complete', 'on_rollback', 'on_needs_attention')),
    allocated_bytes     BIGINT CHECK (allocated_bytes >= 0)
);
CREATE INDEX disks_by_plan ON disks (plan_id, id);
CREATE INDEX disks_by_vm ON disks (vm_name, plan_id);
CREATE INDEX disks_by_destination ON disks (destination);
CREATE INDEX disks_by_source ON disks (source);
-- The claim check of a new plan (PostgresStore.refuseClaimed): only disks not yet final.
CREATE INDEX disks_claiming_vm_disk ON disks (vm_address, device) WHERE state NOT IN ('completed', 'rolled_back');
CREATE INDEX disks_claiming_destination ON disks (destination) WHERE state NOT IN ('completed', 'rolled_back');

CREATE TABLE events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_id    BIGINT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    disk_id    BIGINT REFERENCES disks (id) ON DELETE CASCADE,
    at         DOUBLE PRECISION NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('transition', 'intent', 'outcome', 'note')),
    from_state TEXT,
    to_state   TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX events_by_plan ON events (plan_id, id);
CREATE INDEX events_by_disk ON events (disk_id, id);

-- One row per operator command (throttle, pause, resume); the plan's live owner applies it.
CREATE TABLE operator_requests (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_id      BIGINT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    action       TEXT NOT NULL CHECK (action IN ('throttle', 'pause', 'resume')),
    speed        BIGINT,
    requested_at DOUBLE PRECISION NOT NULL,
    requested_by TEXT NOT NULL,
    finished_at  DOUBLE PRECISION,
    ok           BOOLEAN,
    outcome      TEXT
);
CREATE INDEX operator_requests_open ON operator_requests (plan_id, finished_at, id);

-- Sources kept in quarantine until `purge` deletes them or `restore` puts them back
-- (SQLite's 0009 says each column's meaning).
CREATE TABLE quarantined_images (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    disk_id         BIGINT NOT NULL REFERENCES disks (id) ON DELETE CASCADE,
    plan_id         BIGINT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    original_path   TEXT NOT NULL,
    quarantine_path TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL CHECK (size_bytes >= 0),
    device          BIGINT NOT NULL,
    inode           BIGINT NOT NULL,
    quarantined_at  DOUBLE PRECISION NOT NULL,
    expires_at      DOUBLE PRECISION NOT NULL,
    state           TEXT NOT NULL DEFAULT 'held'
                      CHECK (state IN ('held', 'purging', 'purged', 'restoring', 'restored')),
    ended_at        DOUBLE PRECISION
);
CREATE UNIQUE INDEX quarantined_images_by_disk ON quarantined_images (disk_id);
CREATE INDEX quarantined_images_by_state_and_expiry ON quarantined_images (state, expires_at);

-- Fleet: each host's agent lease.
CREATE TABLE host_leases (
    host      TEXT PRIMARY KEY,
    instance  TEXT NOT NULL,
    machine   TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    heartbeat DOUBLE PRECISION NOT NULL
);

-- Fleet: limits of a host or a storage target (NULL: no limit of that kind).
CREATE TABLE fleet_limits (
    scope      TEXT NOT NULL CHECK (scope IN ('host', 'target')),
    name       TEXT NOT NULL,
    max_disks  INTEGER CHECK (max_disks >= 0),
    bandwidth  BIGINT CHECK (bandwidth >= 0),
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, name)
);

-- Fleet: the copy slots held now, one per copying disk.
CREATE TABLE copy_slots (
    disk_id   BIGINT PRIMARY KEY REFERENCES disks (id) ON DELETE CASCADE,
    plan_id   BIGINT NOT NULL,
    host      TEXT NOT NULL,
    -- The target whose limit it counts against (NULL: none applies).
    target    TEXT,
    speed_cap BIGINT,
    taken_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX copy_slots_by_host ON copy_slots (host);
CREATE INDEX copy_slots_by_target ON copy_slots (target);

-- One row per committed write transaction: a transaction whose COMMIT reply was lost is
-- known to have committed when its receipt is here (PostgresStore's retry checks it).
CREATE TABLE write_receipts (
    id UUID PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX write_receipts_by_age ON write_receipts (at);
