-- postgres 0004: the totals of all the plans in each state, kept by the store in the same
-- transactions as the plans' own totals (0003): a plan recorded, a plan's move to another
-- state, a disk completed. history's summary line with no time range and no VM (what
-- `history` prints under every listing) adds up these few rows instead of one index entry
-- per plan: 0003 alone left it at 120 ms at a million disks, as a whole process.
-- One row per plan state, made here, so that every update finds its row.
CREATE TABLE plan_state_totals (
    state           text PRIMARY KEY CHECK (state IN
                      ('pending', 'running', 'completed', 'failed', 'rolled_back', 'needs_attention', 'refused')),
    plans           bigint NOT NULL DEFAULT 0,
    disks           bigint NOT NULL DEFAULT 0,
    completed_disks bigint NOT NULL DEFAULT 0,
    completed_bytes bigint NOT NULL DEFAULT 0,
    timed_bytes     bigint NOT NULL DEFAULT 0,
    copy_seconds    double precision NOT NULL DEFAULT 0
);

INSERT INTO plan_state_totals (state, plans, disks, completed_disks, completed_bytes, timed_bytes, copy_seconds)
SELECT states.state, COALESCE(t.plans, 0), COALESCE(t.disks, 0), COALESCE(t.completed_disks, 0),
       COALESCE(t.completed_bytes, 0), COALESCE(t.timed_bytes, 0), COALESCE(t.copy_seconds, 0)
FROM (VALUES ('pending'), ('running'), ('completed'), ('failed'), ('rolled_back'), ('needs_attention'), ('refused'))
     AS states (state)
LEFT JOIN (SELECT state, COUNT(*) AS plans, SUM(disk_count) AS disks, SUM(completed_disks) AS completed_disks,
                  SUM(completed_bytes) AS completed_bytes, SUM(timed_bytes) AS timed_bytes, SUM(copy_seconds) AS copy_seconds
           FROM plans GROUP BY state) AS t ON t.state = states.state;
