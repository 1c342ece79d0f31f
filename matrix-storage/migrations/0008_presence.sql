-- matrix-storage, PostgreSQL schema 8: presence. One row per user (of this server or
-- another), replaced whole by each change set that sets it.
CREATE TABLE presence (
    user_id text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('online', 'unavailable', 'offline')),
    status_msg text,
    last_active_ts bigint NOT NULL CHECK (last_active_ts >= 0),
    currently_active boolean NOT NULL
);
