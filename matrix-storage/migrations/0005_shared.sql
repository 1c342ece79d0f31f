-- matrix-storage, PostgreSQL schema 5: several processes on one database. Stream positions
-- are handed out by the database instead of by one writing process (postgres/stream.rs).

-- The next stream position to hand out (one row). It continues after the highest position
-- stored in any table, or marked as handed out by schema 2 and 3 (which kept the counter in
-- the writing process and left marks where it deleted positioned rows).
CREATE TABLE stream_alloc (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    next bigint NOT NULL
);
INSERT INTO stream_alloc (next) SELECT GREATEST(
    (SELECT COALESCE(MAX(stream), 0) FROM events),
    (SELECT COALESCE(MAX(pos), 0) FROM account_data),
    (SELECT COALESCE(MAX(pos), 0) FROM device_list_changes),
    (SELECT COALESCE(MAX(pos), 0) FROM to_device),
    (SELECT COALESCE(MAX(pos), 0) FROM receipts),
    (SELECT COALESCE(MAX(pos), 0) FROM stream_marks)) + 1;
DROP TABLE stream_marks;

-- Runs of positions reserved by transactions: `xid` is the reserving transaction's id
-- (pg_current_xact_id()). The readable head stays below the first position of a transaction
-- still running; rows of transactions that ended are swept.
CREATE TABLE stream_reservations (
    first bigint PRIMARY KEY,
    last bigint NOT NULL,
    xid bigint NOT NULL
);

-- Each open store's id, in the notifications it sends (so that it skips its own).
CREATE SEQUENCE store_instances;

-- What changed at a range of positions, for the processes that did not write it.
CREATE INDEX account_data_by_pos ON account_data (pos) WHERE pos IS NOT NULL;
CREATE INDEX to_device_by_pos ON to_device (pos);
CREATE INDEX receipts_by_pos_only ON receipts (pos);
