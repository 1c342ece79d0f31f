-- matrix-storage, PostgreSQL schema 6: backfilled history. Events fetched from other servers
-- that are older than a room's timeline here get a backfill position per room, counting
-- backwards from the timeline's start (1 is just before the first timeline event, higher is
-- older). They take no stream position: /sync never sees them, /messages reads them after the
-- timeline's first event.
CREATE TABLE backfill (
    room_id text NOT NULL,
    pos bigint NOT NULL CHECK (pos > 0),
    event_id text NOT NULL UNIQUE REFERENCES events (event_id),
    PRIMARY KEY (room_id, pos)
);
