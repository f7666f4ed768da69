CREATE TABLE actions (
    id          TEXT PRIMARY KEY,
    principal   TEXT NOT NULL,
    task        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    data        BLOB NOT NULL
) STRICT;
CREATE INDEX actions_principal_created ON actions (principal, created_at);
CREATE INDEX actions_created ON actions (created_at);
CREATE INDEX actions_status ON actions (status);

CREATE TABLE idempotency (
    agent         TEXT NOT NULL,
    key           TEXT NOT NULL,
    payload_hash  TEXT NOT NULL,
    result        BLOB,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (agent, key)
) STRICT;

CREATE TABLE audit_records (
    seq        INTEGER PRIMARY KEY,
    action_id  TEXT NOT NULL,
    data       BLOB NOT NULL
) STRICT;
CREATE INDEX audit_records_action ON audit_records (action_id, seq);

CREATE TABLE audit_hashes (
    idx   INTEGER PRIMARY KEY,
    hash  BLOB NOT NULL
) STRICT;

CREATE TABLE audit_checkpoints (
    size  INTEGER PRIMARY KEY,
    note  BLOB NOT NULL
) STRICT;
