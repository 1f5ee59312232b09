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
