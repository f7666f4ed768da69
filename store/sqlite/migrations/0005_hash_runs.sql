-- A batch's tree hashes have consecutive indexes: store them as one run
-- (one row per batch instead of one per hash; the audit writer every action
-- waits on spent a fifth of its statements on them).
CREATE TABLE audit_hash_runs (
    start   INTEGER PRIMARY KEY,  -- index of the first hash in the run
    hashes  BLOB NOT NULL         -- consecutive 32-byte hashes from start
) STRICT;
INSERT INTO audit_hash_runs (start, hashes) SELECT idx, hash FROM audit_hashes;
DROP TABLE audit_hashes;
