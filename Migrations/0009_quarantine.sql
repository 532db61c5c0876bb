-- 0009: sources kept in quarantine (`retire_source: quarantine`) until `livecopy purge`
-- deletes them or `livecopy restore` puts them back.
-- One row per quarantined source, written in the same transaction as its disk's move to
-- `completed`. device and inode: the file's numbers when it was moved (purge and restore
-- act only on that very file; stored as signed 64-bit, the bits of the unsigned values).
-- size_bytes: the space the file held (allocated blocks). expires_at: quarantined_at plus
-- the policy's quarantine_for. state: held, then purging → purged or restoring →
-- restored (purging and restoring are the intents, recorded before the unlink or the
-- rename; a refusal returns the row to held); ended_at: when it was purged or restored.
CREATE TABLE quarantined_images (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    disk_id         INTEGER NOT NULL REFERENCES disks (id) ON DELETE CASCADE,
    plan_id         INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    original_path   TEXT NOT NULL,
    quarantine_path TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    device          INTEGER NOT NULL,
    inode           INTEGER NOT NULL,
    quarantined_at  REAL NOT NULL,
    expires_at      REAL NOT NULL,
    state           TEXT NOT NULL DEFAULT 'held'
                      CHECK (state IN ('held', 'purging', 'purged', 'restoring', 'restored')),
    ended_at        REAL
);
-- A disk completes once, so it quarantines at most one source; a resumed retirement
-- can never record it twice.
CREATE UNIQUE INDEX quarantined_images_by_disk ON quarantined_images (disk_id);
-- `purge`: the images held whose time is up (state = 'held' AND expires_at <= now), and
-- those with an intent left open (state IN ('purging', 'restoring')); `status`: what is
-- still in quarantine and the next expiry.
CREATE INDEX quarantined_images_by_state_and_expiry ON quarantined_images (state, expires_at);
