ALTER TABLE actions ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE actions ADD COLUMN approval_id TEXT;
ALTER TABLE actions ADD COLUMN request_hash TEXT;
CREATE UNIQUE INDEX actions_approval ON actions (approval_id) WHERE approval_id IS NOT NULL;
-- One pending approval per exact request: identical proposals join it.
CREATE UNIQUE INDEX actions_pending_hash ON actions (request_hash) WHERE status = 'pending_approval';

CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    action_id   TEXT NOT NULL,
    channel     INTEGER NOT NULL,
    event       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    delivered   INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX notifications_due ON notifications (delivered, next_at);
