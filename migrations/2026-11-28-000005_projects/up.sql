-- Read model: projects, named "groups" as in the reference (projector `projects`).
CREATE TABLE groups (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    domain_name text NOT NULL,
    description text NOT NULL DEFAULT '',
    is_active boolean NOT NULL,
    total_resource_slots jsonb NOT NULL DEFAULT '{}',
    allowed_vfolder_hosts jsonb NOT NULL DEFAULT '{}',
    integration_id text,
    resource_policy text NOT NULL,
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX groups_domain_name ON groups (domain_name, name);

CREATE TABLE association_groups_users (
    group_id uuid NOT NULL,
    user_id uuid NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX association_groups_users_user_id ON association_groups_users (user_id);
