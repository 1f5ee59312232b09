-- Read model: images and their aliases (projector `images`), named as in
-- the reference: one row per canonical name and architecture.
-- `id` is md5 of the image's stream id (`image:<canonical>@<arch>`) read as
-- a uuid, so it is the same after every rebuild. Forgotten images have no
-- row (registering one again brings it back).
CREATE TABLE images (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    architecture text NOT NULL,
    registry text NOT NULL,
    image text NOT NULL,
    tag text NOT NULL,
    config_digest text,
    size_bytes bigint NOT NULL DEFAULT 0,
    is_local boolean NOT NULL DEFAULT false,
    type text NOT NULL DEFAULT 'compute',
    labels jsonb NOT NULL DEFAULT '{}',
    resources jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    position bigint NOT NULL
);
-- `images` lists by name; `image(reference)` finds a canonical name.
CREATE UNIQUE INDEX images_name ON images (name, architecture);
-- The allowed-registries filter of non-superadmins.
CREATE INDEX images_registry ON images (registry);

-- An alias names one image at a time: the write side's reservations make it
-- so. The key is (image, alias) so that the read model follows the log even
-- if it ever says otherwise, rather than stop.
CREATE TABLE image_aliases (
    image_id uuid NOT NULL,
    alias text NOT NULL,
    PRIMARY KEY (image_id, alias)
);
-- Aliases compare without regard to case, as the reservations do.
CREATE INDEX image_aliases_alias ON image_aliases (lower(alias));
