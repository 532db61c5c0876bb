-- postgres 0003: each plan's totals on its own row, kept by the store as its disks
-- complete, so that history's summary line (plans, disks, completed disks, bytes copied,
-- the timed bytes and their copy time) adds up one row per plan instead of looking up
-- every disk's transitions: at 1 million disks the summary of every plan took 2.5 s
-- (scripts/bench fleet-store-at-scale), and `history` prints it under every listing.
--   disk_count:       the plan's disks (set when the plan is recorded);
--   completed_disks:  its disks in `completed`;
--   completed_bytes:  their allocated bytes (a disk recorded without them counts 0);
--   timed_bytes, copy_seconds: of the completed disks with allocated bytes and a copy time
--     (first transition into streaming or mirroring to the last into retiring) above 0.
ALTER TABLE plans ADD COLUMN disk_count integer NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN completed_disks integer NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN completed_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN timed_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN copy_seconds double precision NOT NULL DEFAULT 0;

-- The plans recorded before this migration.
UPDATE plans SET disk_count = totals.disk_count, completed_disks = totals.completed_disks,
                 completed_bytes = totals.completed_bytes, timed_bytes = totals.timed_bytes,
                 copy_seconds = totals.copy_seconds
FROM (SELECT d.plan_id, COUNT(*) AS disk_count,
             COUNT(*) FILTER (WHERE d.state = 'completed') AS completed_disks,
             COALESCE(SUM(d.allocated_bytes) FILTER (WHERE d.state = 'completed'), 0) AS completed_bytes,
             COALESCE(SUM(d.allocated_bytes) FILTER (WHERE d.state = 'completed' AND copy.seconds > 0), 0) AS timed_bytes,
             COALESCE(SUM(copy.seconds) FILTER (WHERE d.state = 'completed' AND d.allocated_bytes IS NOT NULL
                                                AND copy.seconds > 0), 0) AS copy_seconds
      FROM disks d
      LEFT JOIN LATERAL (
          SELECT MAX(e.at) FILTER (WHERE e.to_state = 'retiring')
                 - MIN(e.at) FILTER (WHERE e.to_state IN ('streaming', 'mirroring')) AS seconds
          FROM events e
          WHERE e.disk_id = d.id AND e.kind = 'transition' AND e.to_state IN ('retiring', 'streaming', 'mirroring')) AS copy
          ON TRUE
      GROUP BY d.plan_id) AS totals
WHERE plans.id = totals.plan_id;

-- The summary reads the totals from this index alone (an index-only scan), by state and
-- creation time as history selects plans.
CREATE INDEX plans_totals ON plans (state, created_at)
    INCLUDE (disk_count, completed_disks, completed_bytes, timed_bytes, copy_seconds);
