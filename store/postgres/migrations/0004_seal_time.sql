-- When the log was last sealed, by any replica: sealers space their seals
-- by it, so that more replicas do not mean more seals.
ALTER TABLE audit_seal ADD COLUMN sealed_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity';
