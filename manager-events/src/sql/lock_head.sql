-- Takes the log's single ordering lock, held until this transaction ends.
SELECT position,
       hash,
       clock_timestamp() AS now,
       pg_current_xact_id()::text::bigint AS xact_id
FROM event_log_head
FOR UPDATE
