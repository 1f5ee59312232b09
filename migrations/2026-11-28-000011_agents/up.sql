-- Read model: agents (projector `agents`), named as in the reference.
-- `occupied_slots` is the manager's own account of what its kernels hold
-- (filled by the sessions' projector); everything else comes from the agent's
-- own stream (`agent:<id>`).
CREATE TABLE agents (
    id text PRIMARY KEY,
    status text NOT NULL,
    status_changed timestamptz NOT NULL,
    first_contact timestamptz NOT NULL,
    lost_at timestamptz,
    region text NOT NULL DEFAULT '',
    scaling_group text NOT NULL,
    schedulable boolean NOT NULL DEFAULT true,
    available_slots jsonb NOT NULL DEFAULT '{}',
    occupied_slots jsonb NOT NULL DEFAULT '{}',
    addr text NOT NULL,
    public_host text,
    version text NOT NULL DEFAULT '',
    architecture text NOT NULL DEFAULT '',
    compute_plugins jsonb NOT NULL DEFAULT '{}',
    auto_terminate_abusing_kernel boolean NOT NULL DEFAULT false,
    instance uuid NOT NULL,
    position bigint NOT NULL
);
-- `agent_list(status: ...)` (the CLI always sends one) pages by id.
CREATE INDEX agents_status ON agents (status, id);
-- `agent_list(scaling_group: ...)` and the per-group scoping of
-- `agent_summary_list`.
CREATE INDEX agents_scaling_group ON agents (scaling_group, status, id);
-- `order: "first_contact"` / `"-first_contact"`.
CREATE INDEX agents_first_contact ON agents (first_contact, id);
