-- matrix-storage, PostgreSQL schema 4: cross-signing keys and the signatures uploaded on keys,
-- server-side key backups, and pushers. JSON is stored as the bytes given (bytea), as in the
-- other domains. Text keys that reads return sorted are declared COLLATE "C" (byte order, as
-- every backend sorts).

-- kind: 'master', 'self_signing' or 'user_signing'.
CREATE TABLE cross_signing_keys (
    user_id text NOT NULL,
    kind text NOT NULL,
    key bytea NOT NULL,
    PRIMARY KEY (user_id, kind)
);

-- target_key: a device id or a cross-signing key's id; deleting a device deletes the
-- signatures on it.
CREATE TABLE key_signatures (
    target_user text NOT NULL,
    target_key text COLLATE "C" NOT NULL,
    signer_user text COLLATE "C" NOT NULL,
    signer_key_id text COLLATE "C" NOT NULL,
    signature text NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key_id)
);

-- The last version handed out per user: its row is locked by the change set that creates a
-- version, so concurrent change sets get successive numbers, never one twice.
CREATE TABLE backup_heads (
    user_id text PRIMARY KEY,
    last_version bigint NOT NULL
);
-- A deleted version keeps its row, marked, without sessions. etag counts the change sets that
-- wrote or deleted its sessions.
CREATE TABLE backup_versions (
    user_id text NOT NULL,
    version bigint NOT NULL,
    algorithm text NOT NULL,
    auth_data bytea NOT NULL,
    etag bigint NOT NULL,
    deleted boolean NOT NULL,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE backup_sessions (
    user_id text NOT NULL,
    version bigint NOT NULL,
    room_id text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES backup_versions (user_id, version)
);

-- device_id: the device of the access token that created the pusher (deleting the device
-- does not delete it).
CREATE TABLE pushers (
    user_id text COLLATE "C" NOT NULL,
    app_id text COLLATE "C" NOT NULL,
    pushkey text COLLATE "C" NOT NULL,
    device_id text NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_by_key ON pushers (app_id, pushkey);
