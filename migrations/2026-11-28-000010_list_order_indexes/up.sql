-- The lists' default orders (newest first, ties by key), so that a page is
-- read off an index instead of sorting every row for each request.
DROP INDEX users_created_at;
CREATE INDEX users_created_at ON users (created_at DESC, uuid);
DROP INDEX keypairs_created_at;
CREATE INDEX keypairs_created_at ON keypairs (created_at DESC, access_key);
