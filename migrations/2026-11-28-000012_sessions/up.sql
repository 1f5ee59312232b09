-- Read models of compute sessions (projector `sessions`), named and shaped
-- as the reference's `sessions` and `kernels` tables, so that GraphQL's
-- `ComputeSession` and `ComputeContainer` read them column for column.
--
-- Owners are kept as ids (domain, project, user, keypair); names and
-- e-mails are joined from `groups` and `users` at query time.
-- Statuses are the wire names (`PENDING`, …); `session_type` is as the
-- events spell it (`interactive`), upper-cased by GraphQL.
-- `status_history` is an object {STATUS: ISO timestamp}; re-entering a
-- status overwrites its time.
CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    creation_id text NOT NULL,
    name text NOT NULL,
    session_type text NOT NULL,
    tag text,
    main_kernel_id uuid,
    image text NOT NULL,
    architecture text NOT NULL,
    registry text NOT NULL,
    cluster_mode text NOT NULL,
    cluster_size integer NOT NULL,
    domain_name text NOT NULL,
    group_id uuid NOT NULL,
    user_uuid uuid NOT NULL,
    access_key text NOT NULL,
    scaling_group text NOT NULL,
    -- The agents its kernels were placed on, in placement order.
    agent_ids text[] NOT NULL DEFAULT '{}',
    status text NOT NULL,
    status_changed timestamptz NOT NULL,
    status_info text,
    status_data jsonb,
    status_history jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    terminated_at timestamptz,
    starts_at timestamptz,
    scheduled_at timestamptz,
    startup_command text,
    callback_url text,
    result text NOT NULL DEFAULT 'UNDEFINED',
    -- Per kernel hostname, the resource options (as the reference shows them).
    resource_opts jsonb NOT NULL DEFAULT '{}',
    -- The main kernel's service ports, once it runs.
    service_ports jsonb,
    mounts text[] NOT NULL DEFAULT '{}',
    -- Slots each kernel asks for, and all kernels together.
    requested_slots jsonb NOT NULL DEFAULT '{}',
    occupying_slots jsonb NOT NULL DEFAULT '{}',
    -- What its kernels hold now (those whose status holds agent slots).
    occupied_slots jsonb NOT NULL DEFAULT '{}',
    position bigint NOT NULL
);
-- The default order (the reference's): most recently created or ended
-- first, ties by id; one index per scope a list is narrowed to.
CREATE INDEX sessions_recent ON sessions ((greatest(created_at, terminated_at)) DESC, id);
CREATE INDEX sessions_access_key ON sessions (access_key, (greatest(created_at, terminated_at)) DESC, id);
CREATE INDEX sessions_domain_name ON sessions (domain_name, (greatest(created_at, terminated_at)) DESC, id);
CREATE INDEX sessions_group_id ON sessions (group_id, (greatest(created_at, terminated_at)) DESC, id);
CREATE INDEX sessions_status ON sessions (status, (greatest(created_at, terminated_at)) DESC, id);
-- `order: "-created_at"` (what `backend.ai ps --order` is mostly given).
CREATE INDEX sessions_created_at ON sessions (created_at DESC, id);

CREATE TABLE kernels (
    id uuid PRIMARY KEY,
    session_id uuid NOT NULL,
    cluster_role text NOT NULL,
    cluster_idx integer NOT NULL,
    local_rank integer NOT NULL,
    cluster_hostname text NOT NULL,
    image text NOT NULL,
    architecture text NOT NULL,
    registry text NOT NULL,
    agent text,
    agent_addr text,
    container_id text,
    kernel_host text,
    repl_in_port integer,
    repl_out_port integer,
    service_ports jsonb,
    status text NOT NULL,
    status_changed timestamptz NOT NULL,
    status_info text,
    status_data jsonb,
    status_history jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    terminated_at timestamptz,
    starts_at timestamptz,
    scheduled_at timestamptz,
    exit_code integer,
    resource_opts jsonb NOT NULL DEFAULT '{}',
    requested_slots jsonb NOT NULL DEFAULT '{}',
    -- As requested at enqueue, as placed on its agent, then as the agent
    -- really allocated once it started.
    occupied_slots jsonb NOT NULL DEFAULT '{}',
    preopen_ports integer[] NOT NULL DEFAULT '{}',
    position bigint NOT NULL
);
CREATE INDEX kernels_session_id ON kernels (session_id, local_rank);
-- The kernels holding their agent's slots (every status but these four,
-- see `KernelStatus::holds_agent_slots`), by agent: what an agent's
-- occupancy is summed from. The projector's query repeats this predicate
-- word for word, so that the planner can use the index.
CREATE INDEX kernels_holding_agent ON kernels (agent)
    WHERE status NOT IN ('PENDING', 'TERMINATED', 'ERROR', 'CANCELLED');

-- Sessions that must have succeeded before a session starts.
CREATE TABLE session_dependencies (
    session_id uuid NOT NULL,
    depends_on uuid NOT NULL,
    PRIMARY KEY (session_id, depends_on)
);

-- What the kernels placed on each agent hold now: the sum of the
-- `occupied_slots` of its kernels whose status holds agent slots. Kept by
-- the sessions' projector (the `agents` table belongs to the agents'
-- projector); an agent holding nothing has no row.
CREATE TABLE agent_occupancy (
    agent_id text PRIMARY KEY,
    occupied_slots jsonb NOT NULL
);
