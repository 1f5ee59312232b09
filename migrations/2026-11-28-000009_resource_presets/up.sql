-- Read model: resource presets (projector `resource_presets`).
CREATE TABLE resource_presets (
    name text PRIMARY KEY,
    resource_slots jsonb NOT NULL DEFAULT '{}',
    shared_memory bigint,
    scaling_group_name text,
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    position bigint NOT NULL
);
