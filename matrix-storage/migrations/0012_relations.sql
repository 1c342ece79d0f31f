-- matrix-storage, PostgreSQL schema 12: the relations index. Each timeline event with an
-- `m.relates_to` (a rel_type and an event_id) under its room and the event it relates to (the
-- parent), at its stream position; a redaction takes its event out.
CREATE TABLE relations (
    event_id text PRIMARY KEY REFERENCES events (event_id),
    room_id text NOT NULL,
    parent text NOT NULL,
    rel_type text NOT NULL,
    kind text NOT NULL,
    sender text NOT NULL,
    pos bigint NOT NULL
);
CREATE INDEX relations_by_parent ON relations (room_id, parent, pos);
CREATE INDEX relations_threads ON relations (room_id, pos) WHERE rel_type = 'm.thread';
