-- Appends and seals are apart: appends move audit_head (positions), a
-- sealer adds hashes and signed checkpoints and moves audit_seal. Every
-- record written before this migration was sealed as it was appended.
CREATE TABLE audit_seal (
    id     INT PRIMARY KEY CHECK (id = 1),
    sealed BIGINT NOT NULL
);
INSERT INTO audit_seal (id, sealed) SELECT 1, size FROM audit_head;
