DROP INDEX sessions_user_uuid;
