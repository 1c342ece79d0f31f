-- matrix-storage, PostgreSQL schema 17: OpenID tokens and delayed events (MSC4140).
CREATE TABLE openid_tokens (
    token_hash text PRIMARY KEY,
    user_id text NOT NULL,
    expires_ts bigint NOT NULL CHECK (expires_ts >= 0)
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);

CREATE TABLE delayed_events (
    user_id text NOT NULL,
    delay_id text NOT NULL,
    device_id text NOT NULL,
    room_id text NOT NULL,
    event_type text NOT NULL,
    state_key text,
    content bytea NOT NULL,
    delay_ms bigint NOT NULL CHECK (delay_ms >= 0),
    scheduled_at bigint NOT NULL CHECK (scheduled_at >= 0),
    send_ts bigint NOT NULL CHECK (send_ts >= 0),
    PRIMARY KEY (user_id, delay_id)
);
CREATE INDEX delayed_events_due ON delayed_events (send_ts, user_id, delay_id);
