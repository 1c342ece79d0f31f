-- matrix-storage, PostgreSQL schema 7: rooms' auth-chain indexes. Each state event of a room
-- has one entry, numbered 0, 1, 2... per room in the order they were added: its place in a
-- chain cover of the room's auth DAG, computed by the homeserver. The primary key is what
-- keeps two processes from numbering two events alike: the second insert of a number is a
-- unique violation and its whole change set rolls back.
CREATE TABLE auth_chain (
    room_id text NOT NULL,
    idx bigint NOT NULL CHECK (idx BETWEEN 0 AND 4294967295),
    event_id text NOT NULL,
    chain bigint NOT NULL CHECK (chain BETWEEN 0 AND 4294967295),
    seq bigint NOT NULL CHECK (seq BETWEEN 0 AND 4294967295),
    -- The links: 8 bytes each, the chain then the sequence number as big-endian u32.
    links bytea NOT NULL CHECK (length(links) % 8 = 0),
    PRIMARY KEY (room_id, idx)
);
