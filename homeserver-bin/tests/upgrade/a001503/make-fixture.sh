#!/usr/bin/env bash
# Regenerates the a001503 storage fixtures: runs the `homeserver` binary built at commit a001503
# on loopback, drives the client-server API with curl, stops it with SIGTERM and keeps what it
# wrote.
#
#   make-fixture.sh sled     OUT_DIR   -> OUT_DIR/sled-a001503/ (the whole data_dir: sled/,
#                                         media/, signing.key), OUT_DIR/config-sled.toml,
#                                         OUT_DIR/ids-sled.json, OUT_DIR/server-sled.log
#   make-fixture.sh postgres OUT_DIR   -> OUT_DIR/postgres-a001503.sql (pg_dump),
#                                         OUT_DIR/postgres-data-a001503/ (the data_dir: media/,
#                                         signing.key), OUT_DIR/config-postgres.toml,
#                                         OUT_DIR/ids-postgres.json, OUT_DIR/server-postgres.log
#
# Environment: BIN (default /work/target-fixture/debug/homeserver, built with
#   git worktree add /work/wt-fixture a001503 &&
#   CARGO_TARGET_DIR=/work/target-fixture cargo build -p homeserver-bin),
# PORT (default 18448), PGHOST/PGPORT/PGUSER (default 127.0.0.1/5432/postgres, trust auth),
# PGDB (default fixture_a001503; dropped and re-created, dumped, then dropped again).
#
# The config files written into OUT_DIR name the temporary data_dir of the run that made them;
# a test that reuses them must point server.data_dir (and storage.postgres_url) at its own copy.
# After both runs: python3 make-manifest.py OUT_DIR (merges ids-*.json into manifest.json);
# check-fixture.sh sled|postgres OUT_DIR reads the fixture back (on a copy).
set -euo pipefail

BACKEND=${1:?usage: make-fixture.sh sled|postgres OUT_DIR}
OUT=$(realpath -m "${2:?usage: make-fixture.sh sled|postgres OUT_DIR}")
BIN=${BIN:-/work/target-fixture/debug/homeserver}
PORT=${PORT:-18448}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
PGDB=${PGDB:-fixture_a001503}
SERVER_NAME=fixture.test
HS="http://127.0.0.1:$PORT"
ALICE_PASSWORD=alice-fixture-password
BOB_PASSWORD=bob-fixture-password

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/fixture-a001503-$BACKEND.XXXXXX)
DATA="$WORK/data"
CONFIG="$WORK/homeserver.toml"

{
    echo '[server]'
    echo "name = \"$SERVER_NAME\""
    echo "listen = \"127.0.0.1:$PORT\""
    echo "data_dir = \"$DATA\""
    echo
    echo '[storage]'
    echo "backend = \"$BACKEND\""
    if [ "$BACKEND" = postgres ]; then
        echo "postgres_url = \"postgres://$PGUSER@$PGHOST:$PGPORT/$PGDB\""
    fi
    echo
    echo '[registration]'
    echo '# closed: the accounts are made with `homeserver register-user`'
    echo 'mode = "closed"'
    echo
    echo '[rate_limits]'
    echo '# off, so that the script never waits for a bucket (it changes nothing that is stored)'
    echo 'enabled = false'
} >"$CONFIG"

if [ "$BACKEND" = postgres ]; then
    psql -qX -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -c "DROP DATABASE IF EXISTS $PGDB"
    psql -qX -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -c "CREATE DATABASE $PGDB"
fi

# --- accounts, made with the admin CLI while the server is stopped -----------------------
"$BIN" register-user --config "$CONFIG" alice --password "$ALICE_PASSWORD"
"$BIN" register-user --config "$CONFIG" bob --password "$BOB_PASSWORD"

# --- the server -----------------------------------------------------------------------------
"$BIN" serve --config "$CONFIG" 2>"$WORK/server.log" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -sf "$HS/_matrix/client/versions" >/dev/null && break
    sleep 0.2
done

# req METHOD PATH TOKEN [JSON]: answers the body; fails on a non-2xx status.
req() {
    local method=$1 path=$2 token=$3 body=${4-}
    local args=(-sS -X "$method" -H 'Content-Type: application/json' -w '\n%{http_code}')
    [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
    [ -n "$body" ] && args+=(--data "$body")
    local out code
    out=$(curl "${args[@]}" "$HS$path")
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    if [ "${code:0:1}" != 2 ]; then
        echo "$method $path -> $code $out" >&2
        return 1
    fi
    printf '%s' "$out"
}
enc() { jq -rn --arg v "$1" '$v|@uri'; }
C=/_matrix/client/v3

# --- logins with known device ids -----------------------------------------------------------
login() { # user password device display_name
    req POST /_matrix/client/r0/login '' "$(jq -cn --arg u "$1" --arg p "$2" --arg d "$3" --arg n "$4" \
        '{type:"m.login.password",identifier:{type:"m.id.user",user:$u},password:$p,device_id:$d,initial_device_display_name:$n}')" |
        jq -r .access_token
}
ALICE_TOKEN=$(login alice "$ALICE_PASSWORD" ALICEDEV "Alice fixture device")
BOB_TOKEN=$(login bob "$BOB_PASSWORD" BOBDEV "Bob fixture device")
ALICE="@alice:$SERVER_NAME"
BOB="@bob:$SERVER_NAME"
A=$(enc "$ALICE")
B=$(enc "$BOB")
# A device renamed after login.
req PUT "$C/devices/ALICEDEV" "$ALICE_TOKEN" '{"display_name":"Alice laptop (renamed)"}' >/dev/null

# --- media: two uploads by alice (an avatar PNG, a text file), one by bob ------------------
upload() { # token file content_type filename
    curl -sSf -X POST -H "Authorization: Bearer $1" -H "Content-Type: $3" \
        --data-binary @"$2" "$HS/_matrix/media/v3/upload?filename=$4" | jq -r .content_uri
}
# A 1x1 transparent PNG, 70 bytes.
printf '%s' 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==' |
    base64 -d >"$WORK/avatar.png"
printf 'hello from the a001503 fixture\n' >"$WORK/alice.txt"
printf 'bob was here\n' >"$WORK/bob.txt"
AVATAR_MXC=$(upload "$ALICE_TOKEN" "$WORK/avatar.png" image/png avatar.png)
ALICE_TXT_MXC=$(upload "$ALICE_TOKEN" "$WORK/alice.txt" text/plain alice.txt)
BOB_TXT_MXC=$(upload "$BOB_TOKEN" "$WORK/bob.txt" text/plain bob.txt)

# --- profiles (global; before the rooms, so alice's member events carry them) ---------------
req PUT "$C/profile/$A/displayname" "$ALICE_TOKEN" '{"displayname":"Alice Fixture"}' >/dev/null
req PUT "$C/profile/$A/avatar_url" "$ALICE_TOKEN" "$(jq -cn --arg u "$AVATAR_MXC" '{avatar_url:$u}')" >/dev/null

# --- the public room: alias #fixture, second alias #second, published ----------------------
PUBLIC_ROOM=$(req POST "$C/createRoom" "$ALICE_TOKEN" \
    '{"preset":"public_chat","visibility":"public","room_alias_name":"fixture","name":"Fixture Room","topic":"made by make-fixture.sh at a001503"}' |
    jq -r .room_id)
P=$(enc "$PUBLIC_ROOM")
req PUT "$C/directory/room/$(enc "#second:$SERVER_NAME")" "$ALICE_TOKEN" \
    "$(jq -cn --arg r "$PUBLIC_ROOM" '{room_id:$r}')" >/dev/null
req PUT "$C/directory/list/room/$P" "$ALICE_TOKEN" '{"visibility":"public"}' >/dev/null
# An alias made and deleted again: its record stays, as JSON null.
req PUT "$C/directory/room/$(enc "#deleted:$SERVER_NAME")" "$ALICE_TOKEN" \
    "$(jq -cn --arg r "$PUBLIC_ROOM" '{room_id:$r}')" >/dev/null
req DELETE "$C/directory/room/$(enc "#deleted:$SERVER_NAME")" "$ALICE_TOKEN" >/dev/null

# bob joins by alias, then sets his display name (a member event in the room, and a record).
req POST "$C/join/$(enc "#fixture:$SERVER_NAME")" "$BOB_TOKEN" '{}' >/dev/null
req PUT "$C/profile/$B/displayname" "$BOB_TOKEN" '{"displayname":"Bob Fixture"}' >/dev/null

send() { # token room txn body
    req PUT "$C/rooms/$(enc "$2")/send/m.room.message/$3" "$1" \
        "$(jq -cn --arg b "$4" '{msgtype:"m.text",body:$b}')" | jq -r .event_id
}
MSG_ALICE_1=$(send "$ALICE_TOKEN" "$PUBLIC_ROOM" txn-a1 "Hello from alice")
MSG_BOB_1=$(send "$BOB_TOKEN" "$PUBLIC_ROOM" txn-b1 "Hello from bob")
MSG_BOB_2=$(send "$BOB_TOKEN" "$PUBLIC_ROOM" txn-b2 "This message of bob's gets redacted")
MSG_ALICE_2=$(send "$ALICE_TOKEN" "$PUBLIC_ROOM" txn-a2 "Second message from alice")
# alice (creator, power 100) redacts bob's second message.
REDACTION=$(req PUT "$C/rooms/$P/redact/$(enc "$MSG_BOB_2")/txn-redact-1" "$ALICE_TOKEN" \
    '{"reason":"fixture redaction"}' | jq -r .event_id)
# A state change after the messages.
TOPIC_EVENT=$(req PUT "$C/rooms/$P/state/m.room.topic/" "$ALICE_TOKEN" \
    '{"topic":"Fixture Room, topic changed"}' | jq -r .event_id)
# An image message pointing at alice's uploaded avatar.
IMAGE_EVENT=$(req PUT "$C/rooms/$P/send/m.room.message/txn-a3" "$ALICE_TOKEN" \
    "$(jq -cn --arg u "$AVATAR_MXC" '{msgtype:"m.image",body:"avatar.png",url:$u,info:{mimetype:"image/png",size:($s|tonumber),w:1,h:1}}' --arg s "$(stat -c %s "$WORK/avatar.png")")" |
    jq -r .event_id)

# --- the private room: bob invited, joins, leaves, forgets ---------------------------------
PRIVATE_ROOM=$(req POST "$C/createRoom" "$ALICE_TOKEN" '{"preset":"private_chat","name":"Private Fixture Room"}' |
    jq -r .room_id)
Q=$(enc "$PRIVATE_ROOM")
req POST "$C/rooms/$Q/invite" "$ALICE_TOKEN" "$(jq -cn --arg u "$BOB" '{user_id:$u}')" >/dev/null
req POST "$C/rooms/$Q/join" "$BOB_TOKEN" '{}' >/dev/null
MSG_PRIVATE_BOB=$(send "$BOB_TOKEN" "$PRIVATE_ROOM" txn-p1 "bob in the private room")
req POST "$C/rooms/$Q/leave" "$BOB_TOKEN" '{}' >/dev/null
req POST "$C/rooms/$Q/forget" "$BOB_TOKEN" '{}' >/dev/null
# The private room is explicitly not published (the directory record is written as null).
req PUT "$C/directory/list/room/$Q" "$ALICE_TOKEN" '{"visibility":"private"}' >/dev/null

# --- account data ----------------------------------------------------------------------------
req PUT "$C/user/$A/account_data/org.example.fixture" "$ALICE_TOKEN" '{"n":1}' >/dev/null
req PUT "$C/user/$B/account_data/org.example.fixture" "$BOB_TOKEN" '{"n":2}' >/dev/null
req PUT "$C/user/$A/rooms/$P/account_data/org.example.room" "$ALICE_TOKEN" '{"r":1}' >/dev/null
req PUT "$C/user/$A/rooms/$P/tags/m.favourite" "$ALICE_TOKEN" '{"order":0.5}' >/dev/null
req PUT "$C/user/$B/rooms/$P/tags/u.work" "$BOB_TOKEN" '{}' >/dev/null
# m.fully_read is stored as room account data (the m.read receipt is in memory only).
req POST "$C/rooms/$P/read_markers" "$BOB_TOKEN" \
    "$(jq -cn --arg e "$IMAGE_EVENT" '{"m.fully_read":$e,"m.read":$e}')" >/dev/null

# --- a few reads, so that a broken run shows here and not in the test ---------------------
req GET "$C/directory/room/$(enc "#second:$SERVER_NAME")" "" | jq -e --arg r "$PUBLIC_ROOM" '.room_id==$r' >/dev/null
req GET "$C/publicRooms" "" | jq -e --arg r "$PUBLIC_ROOM" '[.chunk[].room_id]==[$r]' >/dev/null
req GET "$C/rooms/$P/event/$(enc "$MSG_BOB_2")" "$ALICE_TOKEN" | jq -e '.content=={}' >/dev/null
req GET "$C/profile/$A" "" | jq -e '.displayname=="Alice Fixture"' >/dev/null

# --- stop cleanly -----------------------------------------------------------------------------
kill -TERM "$SERVER"
wait "$SERVER" || { echo "the server exited with $?" >&2; cat "$WORK/server.log" >&2; exit 1; }
trap - EXIT

# --- results ---------------------------------------------------------------------------------
media_entry() { # mxc uploader file content_type filename
    jq -cn --arg mxc "$1" --arg u "$2" --arg ct "$4" --arg n "$5" --argjson s "$(stat -c %s "$3")" \
        --arg sha "$(sha256sum "$3" | cut -d' ' -f1)" \
        '{mxc:$mxc, media_id:($mxc|split("/")|last), uploader:$u, size:$s, sha256:$sha, content_type:$ct, upload_name:$n}'
}
jq -n \
    --arg backend "$BACKEND" \
    --arg public "$PUBLIC_ROOM" --arg private "$PRIVATE_ROOM" \
    --arg alice_token "$ALICE_TOKEN" --arg bob_token "$BOB_TOKEN" \
    --arg a1 "$MSG_ALICE_1" --arg a2 "$MSG_ALICE_2" --arg b1 "$MSG_BOB_1" --arg b2 "$MSG_BOB_2" \
    --arg redaction "$REDACTION" --arg topic "$TOPIC_EVENT" --arg image "$IMAGE_EVENT" \
    --arg pb "$MSG_PRIVATE_BOB" --arg avatar "$AVATAR_MXC" \
    --argjson m1 "$(media_entry "$AVATAR_MXC" "$ALICE" "$WORK/avatar.png" image/png avatar.png)" \
    --argjson m2 "$(media_entry "$ALICE_TXT_MXC" "$ALICE" "$WORK/alice.txt" text/plain alice.txt)" \
    --argjson m3 "$(media_entry "$BOB_TXT_MXC" "$BOB" "$WORK/bob.txt" text/plain bob.txt)" \
    '{backend:$backend,
      rooms:{public:$public, private:$private},
      access_tokens:{"@alice:fixture.test":$alice_token, "@bob:fixture.test":$bob_token},
      events:{public_room:{alice_1:$a1, bob_1:$b1, bob_2_redacted:$b2, alice_2:$a2,
                           redaction_of_bob_2:$redaction, topic_change:$topic, alice_image:$image},
              private_room:{bob_1:$pb}},
      redactions:{($b2):$redaction},
      profiles:{"@alice:fixture.test":{displayname:"Alice Fixture", avatar_url:$avatar},
                "@bob:fixture.test":{displayname:"Bob Fixture"}},
      media:[$m1,$m2,$m3]}' >"$OUT/ids-$BACKEND.json"

sed "s#$WORK#/tmp/fixture-a001503-$BACKEND#g" "$CONFIG" >"$OUT/config-$BACKEND.toml"
cp "$WORK/server.log" "$OUT/server-$BACKEND.log"
if [ "$BACKEND" = sled ]; then
    # The whole data_dir: sled/ (the store), media/ (the uploads), signing.key.
    rm -rf "$OUT/sled-a001503"
    cp -a "$DATA" "$OUT/sled-a001503"
else
    pg_dump --no-owner --no-privileges -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" "$PGDB" >"$OUT/postgres-a001503.sql"
    psql -qX -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -c "DROP DATABASE $PGDB"
    # The rest of the data_dir: media/ (the uploads), signing.key.
    rm -rf "$OUT/postgres-data-a001503"
    cp -a "$DATA" "$OUT/postgres-data-a001503"
fi
rm -rf "$WORK"
echo "done: $BACKEND -> $OUT"
