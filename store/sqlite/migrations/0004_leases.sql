ALTER TABLE actions ADD COLUMN lease_owner TEXT;
ALTER TABLE actions ADD COLUMN lease_until INTEGER;
CREATE INDEX actions_executing ON actions (status, lease_until) WHERE status = 'executing';
