-- 0005: a disk's VM is reached at an address, no longer only at a QMP socket.
-- The column holds VMAddress's stored form: a QMP socket path as before (so the rows of
-- earlier releases keep their meaning), or libvirt:<uri>#<domain>. SQLite renames the
-- column in the indexes too: 0004's partial index disks_claiming_vm_disk now covers
-- (vm_address, device), with its WHERE clause unchanged.
ALTER TABLE disks RENAME COLUMN qmp_socket TO vm_address;
