-- matrix-storage, PostgreSQL schema 21: the rooms application services publish in the room
-- lists of their networks (`PUT /_matrix/client/v3/directory/list/appservice/{network}/{room}`).
CREATE TABLE appservice_room_list (
    appservice_id text NOT NULL,
    network_id text NOT NULL,
    room_id text NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
);
