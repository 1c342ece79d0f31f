-- matrix-storage, PostgreSQL schema 8: content-addressed media and asynchronous uploads.
-- A media row names the SHA-256 of its content (the name its bytes are kept under; NULL for
-- rows written before) and whether it came while unauthenticated media was frozen. Media ids
-- handed out by POST /_matrix/media/v1/create wait in pending_media until their content is
-- uploaded: the upload deletes the row in its transaction, and a second upload, finding no
-- row, fails (exactly one of two commits).
ALTER TABLE media
    ADD COLUMN sha256 text,
    ADD COLUMN authenticated boolean NOT NULL DEFAULT false;

CREATE TABLE pending_media (
    media_id text PRIMARY KEY,
    creator text NOT NULL,
    created_ts bigint NOT NULL,
    expires_ts bigint NOT NULL
);
CREATE INDEX pending_media_creator ON pending_media (creator, media_id);
