-- 0008: plans indexed by creation time, for `history --since/--until` and its summary.
-- Without it a range of dates reads every plan (or every plan of the states asked for);
-- the summary's query names the state with a unary + when a range is given, so that
-- SQLite walks this index rather than plans_by_state.
CREATE INDEX plans_by_created_at ON plans (created_at);
