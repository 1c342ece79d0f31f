-- matrix-storage, PostgreSQL schema 1. Reads that sort say COLLATE "C" (byte order, as every
-- backend sorts), whatever the database's locale.

CREATE TABLE snapshots (
    id bigint PRIMARY KEY,
    parent bigint REFERENCES snapshots (id),
    -- Deltas since the last snapshot stored whole (0: this one is whole).
    depth integer NOT NULL
);
CREATE SEQUENCE snapshot_ids MINVALUE 0 START 0;

-- (type, state_key) and event ids interned to short integers.
CREATE TABLE state_keys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    state_key text NOT NULL,
    UNIQUE (kind, state_key)
);
CREATE TABLE event_nids (
    nid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id text NOT NULL UNIQUE
);

-- The delta of a snapshot against its parent; a NULL event removes the key.
CREATE TABLE snapshot_entries (
    snapshot bigint NOT NULL REFERENCES snapshots (id),
    key bigint NOT NULL,
    event bigint,
    PRIMARY KEY (snapshot, key)
);

CREATE TABLE events (
    event_id text PRIMARY KEY,
    room_id text NOT NULL,
    json bytea NOT NULL,
    status smallint NOT NULL,
    stream bigint UNIQUE,
    state_after bigint REFERENCES snapshots (id),
    auth_events text[] NOT NULL,
    prev_events text[] NOT NULL
);
CREATE INDEX events_timeline ON events (room_id, stream) WHERE stream IS NOT NULL;

CREATE TABLE rooms (
    room_id text PRIMARY KEY,
    version text NOT NULL,
    current_state bigint REFERENCES snapshots (id),
    forward_extremities text[] NOT NULL
);
CREATE TABLE memberships (
    room_id text NOT NULL,
    user_id text NOT NULL,
    membership text NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id, room_id);

CREATE TABLE users (
    user_id text PRIMARY KEY,
    password_hash text,
    admin boolean NOT NULL,
    deactivated boolean NOT NULL
);
CREATE TABLE devices (
    user_id text NOT NULL,
    device_id text NOT NULL,
    display_name text,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE access_tokens (
    token text PRIMARY KEY,
    user_id text NOT NULL,
    device_id text NOT NULL
);
CREATE INDEX access_tokens_by_device ON access_tokens (user_id, device_id);

CREATE TABLE our_keys (
    key_id text PRIMARY KEY,
    seed text NOT NULL,
    expired_ts bigint
);
CREATE TABLE remote_keys (
    server text NOT NULL,
    key_id text NOT NULL,
    public_key text NOT NULL,
    valid_until_ts bigint NOT NULL,
    PRIMARY KEY (server, key_id)
);

CREATE TABLE inbound_transactions (
    origin text NOT NULL,
    txn_id text NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
-- The next queue id of each destination; its row lock orders a destination's ids by commit.
CREATE TABLE outbound_heads (
    destination text PRIMARY KEY,
    next_id bigint NOT NULL
);
CREATE TABLE outbound_queue (
    destination text NOT NULL,
    id bigint NOT NULL,
    payload bytea NOT NULL,
    PRIMARY KEY (destination, id)
);
CREATE TABLE destination_retries (
    destination text PRIMARY KEY,
    failures bigint NOT NULL,
    retry_after_ts bigint NOT NULL
);

-- Global account data has the room '' (no room id is empty).
CREATE TABLE account_data (
    user_id text NOT NULL,
    room_id text NOT NULL,
    kind text NOT NULL,
    content bytea NOT NULL,
    PRIMARY KEY (user_id, room_id, kind)
);

CREATE TABLE media (
    media_id text PRIMARY KEY,
    content_type text,
    size bigint NOT NULL,
    upload_name text,
    uploader text NOT NULL,
    created_ts bigint NOT NULL
);
