-- Notifications are deleted once delivered or given up (after 12 attempts,
-- action.maxNotifyAttempts): their payload carries the request's input and
-- preview, which the audit log keeps. Rows left by earlier versions go too.
DELETE FROM notifications WHERE delivered OR attempts >= 12;
