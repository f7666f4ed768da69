-- The IDs (kid) of the keys replicas sign minted tokens with (tokens.keys):
-- a replica whose key file shares none of them (it created its own) is
-- refused at start, since its tokens would fail against the others' JWKS.
CREATE TABLE token_keys (
    kid           TEXT PRIMARY KEY,
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
