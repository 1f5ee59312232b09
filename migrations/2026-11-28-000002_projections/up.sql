-- Projections: read models folded from the event log.

-- Where each projector is in the log. Moved in the same transaction that
-- applies a batch to the projector's tables, so every event is applied exactly
-- once even across crashes.
CREATE TABLE projection_checkpoints (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Read model: domains (projector `domains`).
CREATE TABLE domains (
    name text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    is_active boolean NOT NULL,
    total_resource_slots jsonb NOT NULL DEFAULT '{}',
    allowed_vfolder_hosts jsonb NOT NULL DEFAULT '{}',
    allowed_docker_registries jsonb NOT NULL DEFAULT '[]',
    integration_id text,
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    -- Log position of the last event applied to this row.
    position bigint NOT NULL
);
CREATE INDEX domains_is_active ON domains (is_active);
