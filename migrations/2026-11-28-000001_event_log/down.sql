DROP TABLE snapshots;
DROP TABLE event_idempotency;
DROP TABLE events;
DROP TABLE event_log_head;
DROP FUNCTION event_log_refuse_change();
DROP FUNCTION event_log_lock(text[], text[]);
