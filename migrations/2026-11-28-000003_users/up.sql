-- Read model: users (projector `users`).
CREATE TABLE users (
    uuid uuid PRIMARY KEY,
    username text NOT NULL,
    email text NOT NULL,
    password_hash text NOT NULL,
    need_password_change boolean NOT NULL,
    full_name text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    status text NOT NULL,
    role text NOT NULL,
    domain_name text NOT NULL,
    resource_policy text NOT NULL,
    allowed_client_ip jsonb,
    totp_activated boolean NOT NULL DEFAULT false,
    sudo_session_enabled boolean NOT NULL DEFAULT false,
    main_access_key text,
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    position bigint NOT NULL
);
-- Uniqueness is enforced by the log (reservations); these serve lookups.
CREATE INDEX users_email ON users (lower(email));
CREATE INDEX users_username ON users (lower(username));
CREATE INDEX users_domain_name ON users (domain_name, created_at);
CREATE INDEX users_created_at ON users (created_at);
