-- Moves the head and wakes subscribers: one NOTIFY per append transaction,
-- delivered when (and only if) it commits.
WITH moved AS (
    UPDATE event_log_head SET position = $1, hash = $2 RETURNING position
)
SELECT pg_notify('event_log', position::text) FROM moved
