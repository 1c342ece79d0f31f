-- matrix-storage, PostgreSQL schema 3: layered state snapshots (see src/layers.rs). A
-- snapshot's record (its rows in snapshot_entries) is a delta on a short stack of records,
-- the bottom one a whole state. `layers` lists the stack, bottom first and the snapshot itself
-- last, and `sizes` the entries of each, so that a read learns every record it needs from one
-- row; `parent` is the record just below (NULL for a whole state) and `depth` the number of
-- records below. Snapshots written before are delta chains with a whole state every 64: their
-- stack is their chain, filled in here.
ALTER TABLE snapshots ADD COLUMN layers bigint[], ADD COLUMN sizes bigint[];

WITH RECURSIVE counts AS (
    SELECT snapshot, count(*) AS n FROM snapshot_entries GROUP BY snapshot
), chain(id, layers, sizes) AS (
    SELECT s.id, ARRAY[s.id], ARRAY[COALESCE(c.n, 0)]
    FROM snapshots s LEFT JOIN counts c ON c.snapshot = s.id
    WHERE s.parent IS NULL
    UNION ALL
    SELECT s.id, ch.layers || s.id, ch.sizes || COALESCE(c.n, 0)
    FROM chain ch JOIN snapshots s ON s.parent = ch.id
    LEFT JOIN counts c ON c.snapshot = s.id
)
UPDATE snapshots s SET layers = chain.layers, sizes = chain.sizes
FROM chain WHERE s.id = chain.id;

ALTER TABLE snapshots ALTER COLUMN layers SET NOT NULL, ALTER COLUMN sizes SET NOT NULL;
