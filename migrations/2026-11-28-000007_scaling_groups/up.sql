-- Read models: scaling groups and their associations, named as in the
-- reference (projector `scaling_groups`).
CREATE TABLE scaling_groups (
    name text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    is_active boolean NOT NULL,
    is_public boolean NOT NULL,
    driver text NOT NULL,
    driver_opts jsonb NOT NULL DEFAULT '{}',
    scheduler text NOT NULL,
    scheduler_opts jsonb NOT NULL DEFAULT '{}',
    use_host_network boolean NOT NULL DEFAULT false,
    wsproxy_addr text,
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE TABLE sgroups_for_domains (
    scaling_group text NOT NULL,
    domain text NOT NULL,
    PRIMARY KEY (scaling_group, domain)
);
CREATE TABLE sgroups_for_groups (
    scaling_group text NOT NULL,
    "group" uuid NOT NULL,
    PRIMARY KEY (scaling_group, "group")
);
CREATE TABLE sgroups_for_keypairs (
    scaling_group text NOT NULL,
    access_key text NOT NULL,
    PRIMARY KEY (scaling_group, access_key)
);
CREATE INDEX sgroups_for_domains_domain ON sgroups_for_domains (domain);
CREATE INDEX sgroups_for_groups_group ON sgroups_for_groups ("group");
CREATE INDEX sgroups_for_keypairs_access_key ON sgroups_for_keypairs (access_key);
