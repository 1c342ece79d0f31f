-- matrix-storage, PostgreSQL schema 22: registration tokens made by the administrators.
CREATE TABLE registration_tokens (
    token text PRIMARY KEY,
    uses_allowed bigint CHECK (uses_allowed >= 0),
    pending bigint NOT NULL CHECK (pending >= 0),
    completed bigint NOT NULL CHECK (completed >= 0),
    expiry_time bigint CHECK (expiry_time >= 0)
);
