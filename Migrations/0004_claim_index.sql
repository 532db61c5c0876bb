-- 0004: the claim check of a new plan, made in the transaction that records it.
-- A plan is refused when a disk not yet final (of a plan not yet final) already has the
-- same VM disk (QMP socket and device) or destination. Destinations are indexed since
-- 0001; this partial index holds only disks not yet final, so the check costs the same
-- with 100 000 finished plans in the store. Its WHERE clause is repeated word for word by
-- the query (SQLiteStore.refuseClaimed), which SQLite requires to use it.
CREATE INDEX disks_claiming_vm_disk ON disks (qmp_socket, device) WHERE state NOT IN ('completed', 'rolled_back');
