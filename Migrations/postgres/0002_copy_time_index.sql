-- postgres 0002: the copy time of a disk (history's summary line: its last transition to
-- `retiring` minus its first to `streaming` or `mirroring`) read from the index alone. With
-- only events_by_disk, each completed disk cost a visit to each of its ~8 event rows in the
-- heap; at 1 million disks the summary of every plan took seconds
-- (scripts/bench fleet-store-at-scale, docs/fleet.md "Query plans at 1 million disks").
-- Partial: transitions only, about half of the events. Built in the migration's
-- transaction (it locks out event writes while it builds: seconds at a million disks).
CREATE INDEX events_disk_transitions ON events (disk_id, to_state, at) WHERE kind = 'transition';
