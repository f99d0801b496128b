-- The services' event log: what happened to each instance (started, exited, backoff, fatal,
-- stopped, placed, lost, refused) and to each service (reloads). An event a worker reported
-- is named by its placement and number, so one sent twice is kept once.
CREATE TABLE events (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    service  TEXT NOT NULL,
    instance TEXT NOT NULL,
    worker   TEXT,
    run      INTEGER,
    n        INTEGER,
    -- The event as JSON (common::instances::EventKind).
    kind     TEXT NOT NULL
);
CREATE UNIQUE INDEX events_origin ON events (run, n) WHERE run IS NOT NULL;
CREATE INDEX events_service ON events (service, id);
