-- matrix-storage, PostgreSQL schema 15: the search index of room events and content reports.
-- One row per indexed timeline event (at most one text per event), its tokens (cut by the
-- crate, the same for every backend) as a tsvector of the 'simple' configuration; a
-- redaction deletes the row.
CREATE TABLE search_index (
    pos bigint PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    room_id text NOT NULL,
    sender text NOT NULL,
    kind text NOT NULL,
    key text NOT NULL,
    tokens tsvector NOT NULL
);
CREATE INDEX search_index_tokens ON search_index USING gin (tokens);
CREATE INDEX search_index_room ON search_index (room_id, pos);

-- Reports of events, rooms and users, for the server's administrators.
CREATE TABLE content_reports (
    id bigserial PRIMARY KEY,
    reporter text NOT NULL,
    target text NOT NULL CHECK (target IN ('event', 'room', 'user')),
    room_id text,
    event_id text,
    user_id text,
    reason text,
    score bigint,
    received_ts bigint NOT NULL CHECK (received_ts >= 0)
);
