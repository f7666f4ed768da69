-- The IDs (kid) of the keys running replicas sign minted tokens with
-- (tokens.keys), each refreshed by its replicas every minute: a replica
-- whose key file shares none of the fresh ones (it created its own) is
-- refused at start, since its tokens would fail against the others' JWKS.
CREATE TABLE token_keys (
    kid       TEXT PRIMARY KEY,
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now()
);
