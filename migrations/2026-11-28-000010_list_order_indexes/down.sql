DROP INDEX users_created_at;
CREATE INDEX users_created_at ON users (created_at);
DROP INDEX keypairs_created_at;
CREATE INDEX keypairs_created_at ON keypairs (created_at);
