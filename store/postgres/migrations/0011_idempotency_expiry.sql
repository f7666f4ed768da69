-- Idempotency records are kept for limits.idempotency_ttl, counted by
-- created_at: the answer's time once answered, and for a claim given up
-- after a store failure an hour back (so it reads as abandoned)
-- instead of 0. Claims given up before this version are dated so now.
UPDATE idempotency SET created_at = (EXTRACT(EPOCH FROM now()) * 1000000000)::bigint - 3600000000000 WHERE created_at = 0;
CREATE INDEX idempotency_created ON idempotency (created_at);
