-- 0006: the mirror strategy. Each disk records how it is copied (the plan's policy at
-- submission), its destination's format, and whether its device pivoted onto the
-- destination (mirror only: from then on the destination is the truth). Rows of earlier
-- releases were streamed into qcow2 overlays, which the defaults say.
ALTER TABLE disks ADD COLUMN strategy TEXT NOT NULL DEFAULT 'stream';
ALTER TABLE disks ADD COLUMN destination_format TEXT NOT NULL DEFAULT 'qcow2';
ALTER TABLE disks ADD COLUMN pivoted INTEGER NOT NULL DEFAULT 0;
