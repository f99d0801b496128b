-- herzog's store: everything herzog knows is recoverable from this file.

CREATE TABLE projects (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL,
    dir          TEXT    NOT NULL,
    spec         TEXT    NOT NULL,  -- RunSpec as JSON
    results_dir  TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    removed_at   INTEGER             -- NULL while the project exists
) STRICT;
-- Names are unique among existing projects; a removed name may be used again.
CREATE UNIQUE INDEX projects_live_name ON projects(name) WHERE removed_at IS NULL;

CREATE TABLE fragments (
    id          INTEGER PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    idx         INTEGER NOT NULL,     -- position in the sorted directory listing
    name        TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    attempt_id  INTEGER,              -- running, accepted, or failing attempt
    worker      TEXT,                 -- where the running attempt runs
    since       INTEGER,              -- when it started running
    reason      TEXT,                 -- why it failed
    UNIQUE (project_id, idx)
) STRICT;
CREATE INDEX fragments_by_name ON fragments(project_id, name);

CREATE TABLE attempts (
    id           INTEGER PRIMARY KEY,
    fragment_id  INTEGER NOT NULL REFERENCES fragments(id),
    worker       TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'lost', 'stopped', 'late')),
    ended_at     INTEGER,
    exit_kind    TEXT CHECK (exit_kind IN ('code', 'signal', 'start_failed')),
    exit_value   INTEGER,
    exit_detail  TEXT,
    wall_ms      INTEGER,
    cpu_ms       INTEGER,
    peak_rss_kb  INTEGER,
    -- A completion that arrived after the attempt was lost or stopped.
    late_exit    TEXT,
    note         TEXT
) STRICT;
CREATE INDEX attempts_by_fragment ON attempts(fragment_id);

CREATE TABLE workers (
    name        TEXT PRIMARY KEY,
    resources   TEXT    NOT NULL,  -- Resources as JSON
    last_seen   INTEGER NOT NULL
) STRICT;

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) STRICT;
