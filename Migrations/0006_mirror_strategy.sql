-- 0006: the mirror strategy. Each disk records how it is copied (the plan's policy at
-- submission), its destination's format, and whether its device pivoted onto the
-- destination (mirror only: from then on the destination is the truth). The new state
-- `mirroring` needs the state column's CHECK constraint rebuilt, which SQLite can do
-- only by rebuilding the table (its documented procedure; the migrator runs this file
-- with foreign keys off and checks them before committing). Rows of earlier releases
-- were streamed into qcow2 overlays, which the new columns' defaults say.
-- livecopy-migration: rebuilds tables
CREATE TABLE disks_0006 (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id             INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
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
    bytes_done          INTEGER NOT NULL DEFAULT 0,
    bytes_total         INTEGER NOT NULL DEFAULT 0,
    error               TEXT,
    intent              TEXT,
    destination_created INTEGER NOT NULL DEFAULT 0,
    updated_at          REAL NOT NULL,
    strategy            TEXT NOT NULL DEFAULT 'stream' CHECK (strategy IN ('stream', 'mirror')),
    destination_format  TEXT NOT NULL DEFAULT 'qcow2' CHECK (destination_format IN ('qcow2', 'raw')),
    pivoted             INTEGER NOT NULL DEFAULT 0
);
INSERT INTO disks_0006 (id, plan_id, vm_name, vm_address, device, destination, source, source_format, qmp_device,
                        state, bytes_done, bytes_total, error, intent, destination_created, updated_at)
    SELECT id, plan_id, vm_name, vm_address, device, destination, source, source_format, qmp_device,
           state, bytes_done, bytes_total, error, intent, destination_created, updated_at
    FROM disks;
DROP TABLE disks;
ALTER TABLE disks_0006 RENAME TO disks;
CREATE INDEX disks_by_plan ON disks (plan_id, id);
CREATE INDEX disks_by_vm ON disks (vm_name, plan_id);
CREATE INDEX disks_by_destination ON disks (destination);
CREATE INDEX disks_claiming_vm_disk ON disks (vm_address, device) WHERE state NOT IN ('completed', 'rolled_back');
