-- Service instances herzog keeps: what is wanted of each and where it is placed, so that a
-- restarted herzog takes running instances back without restarting them. The services file
-- in force and the highest run id are settings ('services', 'max_run').
CREATE TABLE instances (
    service TEXT NOT NULL,
    -- The worker of a service on every host; '' for one placed anywhere or pinned.
    host    TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    wanted  TEXT NOT NULL CHECK (wanted IN ('up', 'down')),
    run     INTEGER,
    worker  TEXT,
    PRIMARY KEY (service, host, idx),
    CHECK ((run IS NULL) = (worker IS NULL))
);
