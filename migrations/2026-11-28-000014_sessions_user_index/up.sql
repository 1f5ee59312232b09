-- check-presets sums what a user's kernels hold per scaling group: reach the
-- user's sessions without scanning every session ever run.
CREATE INDEX sessions_user_uuid ON sessions (user_uuid, scaling_group);
