-- When kinski really started an attempt (it may wait in the worker's queue after dispatch,
-- which `started_at` records); NULL while it waits, or if it never ran.
ALTER TABLE attempts ADD COLUMN ran_at INTEGER;
-- How many of a fragment's attempts failed (`hz action --retries N` retries up to N of them).
ALTER TABLE fragments ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
-- Run-time controls of a project: `hz pause`, `hz limit`, `hz action --after`.
ALTER TABLE projects ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN max_running INTEGER;
ALTER TABLE projects ADD COLUMN after TEXT;  -- JSON list of project names
-- `hz drain`, and a worker whose kinski said it was stopping (a clean shutdown, not a loss).
ALTER TABLE workers ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;
