-- Console sign-ins, shared by replicas. The cookie's token is kept only as
-- its SHA-256: reading the database does not give a live session.
CREATE TABLE console_sessions (
    token_hash BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL,
    principal  BYTEA NOT NULL,  -- JSON
    csrf       TEXT NOT NULL,
    expires_at BIGINT NOT NULL  -- Unix nanoseconds
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
CREATE INDEX console_sessions_user ON console_sessions (user_id);
