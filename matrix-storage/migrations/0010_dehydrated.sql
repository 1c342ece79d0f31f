-- matrix-storage, PostgreSQL schema 8: dehydrated devices (MSC3814). At most one per user;
-- the device itself, its keys and its to-device queue are in the tables of every device.
-- Deleting the device deletes its row here (in the change set that deletes the device).
CREATE TABLE dehydrated_devices (
    user_id text PRIMARY KEY,
    device_id text NOT NULL,
    device_data bytea NOT NULL
);
