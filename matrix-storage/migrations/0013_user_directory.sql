-- matrix-storage, PostgreSQL schema 13: the user directory. One row per user known to the
-- directory (of this server or another), with the lowercased id and display name it is
-- searched by (lowercased by the writer, as the other backends compare them); one row per
-- room whose join rule is public.
CREATE TABLE user_directory (
    user_id text PRIMARY KEY,
    displayname text,
    avatar_url text,
    search_id text NOT NULL,
    search_name text
);
CREATE TABLE public_join_rooms (
    room_id text PRIMARY KEY
);
