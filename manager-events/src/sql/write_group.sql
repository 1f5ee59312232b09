-- Writes a whole group in one statement: its events, its new idempotency keys,
-- the moved head, and one NOTIFY (delivered when, and only if, it commits).
WITH inserted AS (
    INSERT INTO events (
        position, stream_id, stream_type, stream_version, event_id, event_type,
        schema_version, payload, actor_access_key, request_id, causation_id,
        correlation_id, idempotency_key, recorded_at, hash
    )
    SELECT p, s, st, v, id, et, sv, pl::json, ak, rq, ca, co, ik, $15, h
    FROM unnest(
        $1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::uuid[], $6::text[],
        $7::integer[], $8::text[], $9::text[], $10::text[], $11::uuid[], $12::uuid[],
        $13::text[], $14::bytea[]
    ) AS t(p, s, st, v, id, et, sv, pl, ak, rq, ca, co, ik, h)
), keys AS (
    INSERT INTO event_idempotency (idempotency_key, result, recorded_at)
    SELECT k, r::jsonb, $15 FROM unnest($16::text[], $17::text[]) AS t(k, r)
), moved AS (
    UPDATE event_log_head SET position = $18, hash = $19 RETURNING position
)
SELECT pg_notify('event_log', position::text) FROM moved
