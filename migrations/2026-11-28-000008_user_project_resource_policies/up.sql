-- Read models: user and project resource policies (projectors
-- `user_resource_policies` and `project_resource_policies`).
CREATE TABLE user_resource_policies (
    name text PRIMARY KEY,
    max_vfolder_count integer NOT NULL,
    max_quota_scope_size bigint NOT NULL,
    max_session_count_per_model_session integer NOT NULL,
    max_customized_image_count integer NOT NULL,
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE TABLE project_resource_policies (
    name text PRIMARY KEY,
    max_vfolder_count integer NOT NULL,
    max_quota_scope_size bigint NOT NULL,
    max_network_count integer NOT NULL,
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    position bigint NOT NULL
);
