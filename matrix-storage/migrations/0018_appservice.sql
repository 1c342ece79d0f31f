-- matrix-storage, PostgreSQL schema 18: application services' delivery cursors.
CREATE TABLE appservice_cursors (
    appservice_id text PRIMARY KEY,
    pos bigint NOT NULL CHECK (pos >= 0),
    txn_id bigint NOT NULL CHECK (txn_id >= 0),
    in_flight bigint CHECK (in_flight >= 0),
    failures bigint NOT NULL CHECK (failures >= 0),
    retry_at bigint NOT NULL CHECK (retry_at >= 0)
);
