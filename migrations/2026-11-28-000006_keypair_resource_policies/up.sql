-- Read model: keypair resource policies (projector `keypair_resource_policies`).
CREATE TABLE keypair_resource_policies (
    name text PRIMARY KEY,
    default_for_unspecified text NOT NULL,
    total_resource_slots jsonb NOT NULL DEFAULT '{}',
    max_session_lifetime bigint NOT NULL,
    max_concurrent_sessions bigint NOT NULL,
    max_concurrent_sftp_sessions bigint NOT NULL,
    max_containers_per_session bigint NOT NULL,
    idle_timeout bigint NOT NULL,
    allowed_vfolder_hosts jsonb NOT NULL DEFAULT '{}',
    max_vfolder_count bigint NOT NULL,
    max_vfolder_size bigint NOT NULL,
    max_quota_scope_size bigint NOT NULL,
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    position bigint NOT NULL
);
