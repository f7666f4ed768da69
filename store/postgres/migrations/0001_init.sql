CREATE TABLE actions (
    id           TEXT PRIMARY KEY,
    principal    TEXT NOT NULL,
    task         TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    data         BYTEA NOT NULL,
    version      BIGINT NOT NULL DEFAULT 1,
    approval_id  TEXT,
    request_hash TEXT,
    lease_owner  TEXT,
    lease_until  TIMESTAMPTZ
);
CREATE INDEX actions_principal_created ON actions (principal, created_at);
CREATE INDEX actions_created ON actions (created_at);
CREATE INDEX actions_status ON actions (status);
CREATE UNIQUE INDEX actions_approval ON actions (approval_id) WHERE approval_id IS NOT NULL;
CREATE UNIQUE INDEX actions_pending_hash ON actions (request_hash) WHERE status = 'pending_approval';
CREATE INDEX actions_executing ON actions (lease_until) WHERE status = 'executing';

CREATE TABLE idempotency (
    agent        TEXT NOT NULL,
    key          TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    result       BYTEA,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (agent, key)
);

-- One row: the log's size, locked by each appending batch.
CREATE TABLE audit_head (
    id   INT PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL
);
INSERT INTO audit_head (id, size) VALUES (1, 0);

CREATE TABLE audit_records (
    seq       BIGINT PRIMARY KEY,
    action_id TEXT NOT NULL,
    data      BYTEA NOT NULL
);
CREATE INDEX audit_records_action ON audit_records (action_id, seq);

CREATE TABLE audit_hashes (
    idx  BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL
);

CREATE TABLE audit_checkpoints (
    size BIGINT PRIMARY KEY,
    note BYTEA NOT NULL
);

CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    action_id  TEXT NOT NULL,
    channel    INT NOT NULL,
    event      TEXT NOT NULL,
    payload    BYTEA NOT NULL,
    attempts   INT NOT NULL DEFAULT 0,
    next_at    BIGINT NOT NULL,
    delivered  BOOLEAN NOT NULL DEFAULT false,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX notifications_due ON notifications (delivered, next_at);

CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);
