-- The alert outbox: one row per alert and recipient, written in the same transaction as the
-- event that raised it; the sender delivers it off the event loop and marks it delivered
-- (`delivered_at`) through the loop, so it is never sent again. `origin` names the event for
-- ever (a service event by its placement and number, a failed fragment by its attempt, ...),
-- so an event reported twice makes one row per recipient.
-- AUTOINCREMENT: ids are never reused once old delivered rows are pruned (the sender reads
-- past the last id it saw, and a message's id is made from its row's).
CREATE TABLE alerts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    origin       TEXT NOT NULL,
    -- `mailto:ADDR`, or the webhook's URL.
    recipient    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    at           INTEGER NOT NULL,
    -- The alert as JSON (herzog's machine::Alert).
    body         TEXT NOT NULL,
    delivered_at INTEGER
);
CREATE UNIQUE INDEX alerts_origin ON alerts (origin, recipient);
CREATE INDEX alerts_undelivered ON alerts (id) WHERE delivered_at IS NULL;
CREATE INDEX alerts_delivered ON alerts (delivered_at) WHERE delivered_at IS NOT NULL;
