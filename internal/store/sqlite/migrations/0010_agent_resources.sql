-- The machine an agent reports, which jobs' resources are placed against
-- (0: unknown).
ALTER TABLE agents ADD COLUMN cpu_millis INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN memory_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;
