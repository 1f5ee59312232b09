-- Key material, deliberately outside the event log (docs/decisions/002-secrets.md):
-- each keypair's data key, wrapped by the cluster key. Deleting a row makes that
-- keypair's secret, sealed in the immutable log, unreadable forever.
CREATE TABLE keypair_data_keys (
    access_key text PRIMARY KEY,
    wrapped_key bytea NOT NULL,
    -- Which cluster key wrapped it (for rotation).
    cluster_key_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Read model: keypairs (projector `keypairs`).
CREATE TABLE keypairs (
    access_key text PRIMARY KEY,
    user_uuid uuid NOT NULL,
    user_email text NOT NULL,
    is_active boolean NOT NULL,
    is_admin boolean NOT NULL,
    resource_policy text NOT NULL,
    rate_limit bigint NOT NULL,
    sealed_secret_key text NOT NULL,
    num_queries bigint NOT NULL DEFAULT 0,
    last_used timestamptz,
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX keypairs_user_uuid ON keypairs (user_uuid);
CREATE INDEX keypairs_user_email ON keypairs (lower(user_email));
CREATE INDEX keypairs_created_at ON keypairs (created_at);
