-- Only actions waiting for a person or the worker (pending_approval,
-- approved) are looked up by status; executing ones have their own index
-- (actions_executing) and finished ones are listed by time. Indexing every
-- status made each audit batch rewrite an index page for finished actions.
DROP INDEX actions_status;
CREATE INDEX actions_waiting ON actions (status, created_at) WHERE status IN ('pending_approval', 'approved');
