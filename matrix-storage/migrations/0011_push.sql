-- matrix-storage, PostgreSQL schema 11: notifications (what users' push rules said to notify
-- them of; each user keeps the newest 1000, older rows deleted by the change set that adds
-- more) and pushers' delivery cursors.
CREATE TABLE notifications (
    user_id text NOT NULL,
    pos bigint NOT NULL,
    room_id text NOT NULL,
    event_id text NOT NULL,
    thread_id text,
    highlight boolean NOT NULL,
    actions bytea NOT NULL,
    ts bigint NOT NULL,
    PRIMARY KEY (user_id, pos)
);
CREATE INDEX notifications_by_room ON notifications (user_id, room_id, pos);

CREATE TABLE push_cursors (
    user_id text NOT NULL,
    app_id text NOT NULL,
    pushkey text NOT NULL,
    pos bigint NOT NULL,
    failures bigint NOT NULL,
    retry_at bigint NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
