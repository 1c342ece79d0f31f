-- matrix-storage, PostgreSQL schema 24: administrators' decisions about users (shadow bans,
-- suspensions, rate-limit overrides) and the tokens they had made to act as users.
CREATE TABLE user_moderation (
    user_id text PRIMARY KEY,
    shadow_banned boolean NOT NULL,
    suspended boolean NOT NULL,
    messages_per_second bigint CHECK (messages_per_second >= 0),
    burst_count bigint CHECK (burst_count >= 0),
    CHECK ((messages_per_second IS NULL) = (burst_count IS NULL))
);

CREATE TABLE puppet_tokens (
    token_hash text PRIMARY KEY,
    user_id text NOT NULL,
    issued_by text NOT NULL,
    valid_until_ms bigint CHECK (valid_until_ms >= 0)
);
