-- matrix-storage, PostgreSQL schema 2: end-to-end encryption keys, the device-list stream,
-- to-device queues, receipts, client transaction ids, aliases and the directory, redactions,
-- profiles, forgotten rooms, the media quota, and stream positions of account data.
--
-- Text keys that reads return sorted or scan by prefix are declared COLLATE "C" (byte order,
-- as every backend sorts), so their indexes serve those reads whatever the database's locale.
-- As in schema 1, "no value" in a key column is the sentinel '' (no room id, thread id or
-- event id is empty).

-- Account data takes a stream position at each write; rows written by schema 1 have none and
-- appear in no range of changes.
ALTER TABLE account_data ADD COLUMN pos bigint;
CREATE INDEX account_data_changes ON account_data (user_id, pos) WHERE pos IS NOT NULL;

-- The highest stream position handed out when a change set deleted positioned rows (delivered
-- to-device messages, deleted receipts or account data, deleted devices), so that the stream
-- head found at open never goes back below a position a reader may have seen.
CREATE TABLE stream_marks (
    pos bigint PRIMARY KEY
);

CREATE TABLE device_keys (
    user_id text NOT NULL,
    device_id text COLLATE "C" NOT NULL,
    keys bytea NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE one_time_keys (
    user_id text NOT NULL,
    device_id text NOT NULL,
    -- `algorithm:id`: claims scan a device's keys of one algorithm in key-id order.
    key_id text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id)
);
CREATE TABLE fallback_keys (
    user_id text NOT NULL,
    device_id text NOT NULL,
    algorithm text COLLATE "C" NOT NULL,
    key_id text NOT NULL,
    key bytea NOT NULL,
    used boolean NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm)
);
CREATE TABLE device_list_changes (
    pos bigint PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL
);

CREATE TABLE to_device (
    user_id text NOT NULL,
    device_id text NOT NULL,
    pos bigint NOT NULL,
    sender text NOT NULL,
    kind text NOT NULL,
    content bytea NOT NULL,
    PRIMARY KEY (user_id, device_id, pos)
);

-- An unthreaded receipt has the thread ''.
CREATE TABLE receipts (
    room_id text NOT NULL,
    user_id text NOT NULL,
    kind text COLLATE "C" NOT NULL,
    thread text COLLATE "C" NOT NULL,
    event_id text NOT NULL,
    event_pos bigint NOT NULL,
    ts bigint NOT NULL,
    -- The position of the receipt's last change.
    pos bigint NOT NULL,
    PRIMARY KEY (room_id, user_id, kind, thread)
);
CREATE INDEX receipts_by_pos ON receipts (room_id, pos);

-- A duplicate key is the conflict that refuses a change set reusing a transaction id.
CREATE TABLE transaction_ids (
    user_id text NOT NULL,
    device_id text NOT NULL,
    scope text NOT NULL,
    txn_id text NOT NULL,
    result text NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);

CREATE TABLE aliases (
    alias text COLLATE "C" PRIMARY KEY,
    room_id text NOT NULL,
    creator text NOT NULL
);
CREATE INDEX aliases_by_room ON aliases (room_id, alias);
CREATE TABLE directory (
    room_id text COLLATE "C" PRIMARY KEY
);

CREATE TABLE redactions (
    event_id text PRIMARY KEY,
    redaction_id text NOT NULL
);
CREATE TABLE profiles (
    user_id text PRIMARY KEY,
    displayname text,
    avatar_url text
);
CREATE TABLE forgotten (
    room_id text NOT NULL,
    user_id text NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE media_usage (
    user_id text PRIMARY KEY,
    bytes bigint NOT NULL
);
