-- What ended an attempt at a limit (`hz action --mem/--time`), as JSON (LimitHit), and its
-- cgroup's peak memory (page cache included), beside wait4's peak_rss_kb.
ALTER TABLE attempts ADD COLUMN limit_hit TEXT;
ALTER TABLE attempts ADD COLUMN peak_memory_bytes INTEGER;
