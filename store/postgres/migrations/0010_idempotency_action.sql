-- A claim names the action ID its request gives the action it creates, so
-- a retry after the request died (a crash, the store lost) finds that
-- action, or proposes again under the same ID (which only one attempt can
-- create). '' for claims made before.
ALTER TABLE idempotency ADD COLUMN action_id TEXT NOT NULL DEFAULT '';
