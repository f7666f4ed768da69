-- Tree hashes are stored in runs, one row per seal holding the hashes of
-- consecutive indexes from start, instead of one row per hash: a seal
-- writes one row, not two per record.
CREATE TABLE audit_hash_runs (
    start  BIGINT PRIMARY KEY,
    hashes BYTEA NOT NULL  -- consecutive 32-byte hashes from start
);
-- Hashes do not compress; stored uncompressed, one can be read out of a
-- long run without reading the whole run.
ALTER TABLE audit_hash_runs ALTER COLUMN hashes SET STORAGE EXTERNAL;
INSERT INTO audit_hash_runs (start, hashes)
SELECT min(idx), string_agg(hash, ''::bytea ORDER BY idx)
FROM (SELECT idx, hash, idx - row_number() OVER (ORDER BY idx) AS run FROM audit_hashes) h
GROUP BY run, idx / 8192;
DROP TABLE audit_hashes;
