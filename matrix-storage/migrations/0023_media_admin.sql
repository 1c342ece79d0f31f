-- matrix-storage, PostgreSQL schema 23: the media administration of Synapse's admin API.
-- A media row says who quarantined it (quarantined media is not served) and whether it is
-- protected from quarantine by room or by user; rows are listed by uploader and found by
-- content hash (a file is removed with the last row naming it).
ALTER TABLE media
    ADD COLUMN quarantined_by text,
    ADD COLUMN safe_from_quarantine boolean NOT NULL DEFAULT false;

CREATE INDEX media_uploader ON media (uploader, media_id COLLATE "C");
CREATE INDEX media_sha256 ON media (sha256, media_id COLLATE "C") WHERE sha256 IS NOT NULL;

-- The log of quarantine changes (GET /_synapse/admin/v1/media/quarantine_changes), by id.
-- Best effort, as Synapse's: with several writing processes an id can commit after a higher
-- one was read.
CREATE TABLE quarantine_changes (
    id bigserial PRIMARY KEY,
    media_key text NOT NULL,
    quarantined boolean NOT NULL
);
