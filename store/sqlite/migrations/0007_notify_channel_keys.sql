-- A queued notification names its channel by a key of the channel's
-- definition (notify.Channel.key), not by its position in the config, which
-- a restart, a reload or another replica's config may give to another
-- channel. Rows queued before keep their position in channel (and an empty
-- key); new rows have channel -1.
ALTER TABLE notifications ADD COLUMN channel_key TEXT NOT NULL DEFAULT '';
