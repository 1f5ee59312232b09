-- The event log: the only source of truth of the cluster.
--
-- Positions are dense and in commit order because every append transaction
-- takes the single row of event_log_head FOR UPDATE before it assigns them and
-- holds that lock until it commits (see docs/decisions/001-event-log.md).

CREATE TABLE event_log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Position of the last committed event (0 when the log is empty).
    position bigint NOT NULL CHECK (position >= 0),
    -- Chain hash of that event (32 zero bytes when the log is empty).
    hash bytea NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO event_log_head (singleton, position, hash)
VALUES (true, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE events (
    position bigint PRIMARY KEY CHECK (position > 0),
    stream_id text NOT NULL,
    stream_type text NOT NULL,
    stream_version bigint NOT NULL CHECK (stream_version > 0),
    event_id uuid NOT NULL UNIQUE,
    event_type text NOT NULL,
    schema_version integer NOT NULL CHECK (schema_version > 0),
    -- json, not jsonb: the exact bytes that were hashed are the bytes kept.
    payload json NOT NULL,
    actor_access_key text,
    request_id text,
    causation_id uuid,
    correlation_id uuid,
    idempotency_key text,
    recorded_at timestamptz NOT NULL,
    xact_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    hash bytea NOT NULL CHECK (length(hash) = 32),
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_correlation_id ON events (correlation_id) WHERE correlation_id IS NOT NULL;

-- One row per idempotency key ever used: a retried append returns this result.
CREATE TABLE event_idempotency (
    idempotency_key text PRIMARY KEY,
    result jsonb NOT NULL,
    recorded_at timestamptz NOT NULL
);

-- Snapshots are derived data (a cache of an aggregate's state at a version):
-- they may be replaced or thrown away, unlike events.
CREATE TABLE snapshots (
    stream_id text PRIMARY KEY,
    stream_type text NOT NULL,
    stream_version bigint NOT NULL CHECK (stream_version > 0),
    schema_version integer NOT NULL CHECK (schema_version > 0),
    state jsonb NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);

-- The first step of every append transaction, in one round trip: take the
-- log's ordering lock (held until the transaction ends), then read — each in a
-- statement with a fresh snapshot, so seeing every commit made before the lock
-- was granted — the head, the current version and type of each named stream
-- that exists, and the stored result of each idempotency key seen before.
CREATE FUNCTION event_log_lock(stream_ids text[], idempotency_keys text[])
RETURNS TABLE (kind text, key text, value text, version bigint, at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM event_log_head FOR UPDATE;
    RETURN QUERY
        SELECT 'head'::text, pg_current_xact_id()::text, encode(h.hash, 'hex'), h.position,
               clock_timestamp()
        FROM event_log_head h;
    RETURN QUERY
        SELECT 'stream'::text, s.id, e.stream_type, e.stream_version, NULL::timestamptz
        FROM unnest(stream_ids) AS s(id)
        CROSS JOIN LATERAL (
            SELECT ev.stream_type, ev.stream_version
            FROM events ev
            WHERE ev.stream_id = s.id
            ORDER BY ev.stream_version DESC
            LIMIT 1
        ) AS e;
    RETURN QUERY
        SELECT 'key'::text, k.idempotency_key, k.result::text, 0::bigint, NULL::timestamptz
        FROM event_idempotency k
        WHERE k.idempotency_key = ANY(idempotency_keys);
END
$$;

CREATE FUNCTION event_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Events are never updated or deleted; append a compensating event instead.';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION event_log_refuse_change();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION event_log_refuse_change();
CREATE TRIGGER event_idempotency_append_only
    BEFORE UPDATE OR DELETE ON event_idempotency
    FOR EACH ROW EXECUTE FUNCTION event_log_refuse_change();
CREATE TRIGGER event_idempotency_no_truncate
    BEFORE TRUNCATE ON event_idempotency
    FOR EACH STATEMENT EXECUTE FUNCTION event_log_refuse_change();
