-- Per-agent token buckets shared by every replica. Unlogged: no WAL, no
-- fsync per proposal; a crash empties it, which only refills the buckets.
CREATE UNLOGGED TABLE rate_limits (
    agent  TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    at     TIMESTAMPTZ NOT NULL
);
