//! Directories, spaces and restricted joins across our server and Synapse, both ways: room
//! aliases resolved over federation, the public room directory of the other server
//! (`publicRooms?server=` and its search filter), a space's hierarchy with children only the
//! other server has (`/_matrix/federation/v1/hierarchy`), and joins to rooms restricted to a
//! space's members (`join_authorised_via_users_server`: the resident server authorises, the
//! joining server signs), refused to a user outside the space.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Session, encode, request};
use crate::ours::OurServer;
use crate::synapse::Synapse;

const PASSWORD: &str = "a long enough password";
const WITHIN: Duration = Duration::from_secs(30);

/// Asks `attempt` again (every 250 ms, for at most [`WITHIN`]) until it answers `Some`: a
/// server may cache the other's directory, or see a new room's state a moment late.
async fn eventually<T, F: Future<Output = Result<T, String>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        match attempt().await {
            Ok(found) => return found,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {WITHIN:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A client-API `GET` of a `/_matrix/client/v1` path.
async fn get_v1(session: &Session, path: &str) -> (u16, Value) {
    let url = format!("{}/_matrix/client/v1{path}", session.base);
    request(&session.http, reqwest::Method::GET, &url, Some(&session.token), None).await
}

/// A public space named `name` (room version 11: the id names its server) with one public
/// child room, linked by `m.space.child` with `server` as `via`; answers (space, child).
async fn space_with_child(session: &Session, name: &str, server: &str) -> (String, String) {
    let space = session
        .create_room(&json!({"preset": "public_chat", "name": name, "room_version": "11",
                             "creation_content": {"type": "m.space"}}))
        .await;
    let child = session
        .create_room(&json!({"preset": "public_chat", "name": format!("{name} child"),
                             "room_version": "11"}))
        .await;
    let path = format!("/rooms/{}/state/m.space.child/{}", encode(&space), encode(&child));
    let (status, answer) = session.put(&path, &json!({"via": [server]})).await;
    assert_eq!(status, 200, "{answer}");
    (space, child)
}

/// The room ids of a `/hierarchy` answer.
fn hierarchy_ids(answer: &Value) -> Vec<String> {
    answer["rooms"]
        .as_array()
        .map(|rooms| {
            rooms.iter().filter_map(|r| r["room_id"].as_str().map(str::to_owned)).collect()
        })
        .unwrap_or_default()
}

/// Whether `answer` (a `publicRooms` answer) lists `room`, named `name`.
fn lists(answer: &Value, room: &str, name: &str) -> bool {
    answer["chunk"]
        .as_array()
        .is_some_and(|chunk| chunk.iter().any(|r| r["room_id"] == room && r["name"] == name))
}

/// `reader` finds `room`, named `name`, in `server`'s directory through its own server: in
/// the whole list (a server may cache the other's a moment), and alone when searched by name.
async fn reads_directory(reader: &Session, server: &str, room: &str, name: &str, ours: &OurServer) {
    let path = format!("/publicRooms?server={}&limit=100", encode(server));
    eventually(&format!("{room} in {server}'s directory, read by {}", reader.user_id), || async {
        let (status, answer) = reader.get(&path).await;
        if status == 200 && lists(&answer, room, name) {
            Ok(())
        } else {
            Err(format!("{status} {answer}"))
        }
    })
    .await;
    let path = format!("/publicRooms?server={}", encode(server));
    let body = json!({"filter": {"generic_search_term": name}, "limit": 5});
    let (status, answer) = reader.post(&path, &body).await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    assert!(lists(&answer, room, name), "{answer}");
    assert_eq!(answer["chunk"].as_array().map(Vec::len), Some(1), "only the match: {answer}");
}

#[tokio::test]
async fn aliases_and_public_rooms_cross_both_ways() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let theirs = synapse.register(&crate::unique("syn"), PASSWORD, false).await;
    let mine = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;

    // Each side publishes a room with an alias and a name only this run uses.
    let their_name = crate::unique("Synapse lounge");
    let their_alias = crate::unique("lounge");
    let their_room = theirs
        .create_room(&json!({"preset": "public_chat", "visibility": "public",
                             "name": their_name, "room_alias_name": their_alias}))
        .await;
    let our_name = crate::unique("Our lounge");
    let our_alias = crate::unique("lounge");
    let our_room = mine
        .create_room(&json!({"preset": "public_chat", "visibility": "public",
                             "name": our_name, "room_alias_name": our_alias}))
        .await;

    // Aliases resolve over federation (`/_matrix/federation/v1/query/directory`), with the
    // resident server among the servers to join through.
    let alias = format!("#{their_alias}:{}", synapse.server_name);
    let (status, answer) = mine.get(&format!("/directory/room/{}", encode(&alias))).await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    assert_eq!(answer["room_id"], their_room.as_str());
    assert!(answer["servers"].as_array().is_some_and(|s| s.contains(&json!(synapse.server_name))));
    let alias = format!("#{our_alias}:{}", ours.server_name);
    let (status, answer) = theirs.get(&format!("/directory/room/{}", encode(&alias))).await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    assert_eq!(answer["room_id"], our_room.as_str());
    assert!(answer["servers"].as_array().is_some_and(|s| s.contains(&json!(ours.server_name))));
    // An alias that does not exist is not found, on either side.
    let missing = format!("#{}:{}", crate::unique("nothing"), synapse.server_name);
    let (status, answer) = mine.get(&format!("/directory/room/{}", encode(&missing))).await;
    assert_eq!((status, answer["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{answer}");
    let missing = format!("#{}:{}", crate::unique("nothing"), ours.server_name);
    let (status, answer) = theirs.get(&format!("/directory/room/{}", encode(&missing))).await;
    assert_eq!((status, answer["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{answer}");

    // Each user reads the other server's directory, whole (GET) and searched (POST).
    reads_directory(&mine, &synapse.server_name, &their_room, &their_name, &ours).await;
    reads_directory(&theirs, &ours.server_name, &our_room, &our_name, &ours).await;
}

#[tokio::test]
async fn space_hierarchies_cross_both_ways() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let theirs = synapse.register(&crate::unique("syn"), PASSWORD, false).await;
    let mine = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;

    // Synapse's space, which our server has never seen: we ask Synapse for the whole tree.
    let (space, child) =
        space_with_child(&theirs, &crate::unique("Synapse space"), &synapse.server_name).await;
    let path = format!("/rooms/{}/hierarchy", encode(&space));
    let answer = eventually("Synapse's space through our server", || async {
        let (status, answer) = get_v1(&mine, &path).await;
        let ids = hierarchy_ids(&answer);
        if status == 200 && ids.contains(&space) && ids.contains(&child) {
            Ok(answer)
        } else {
            Err(format!("{status} {answer}\n{}", ours.log_text()))
        }
    })
    .await;
    let root = &answer["rooms"][0];
    assert_eq!(root["room_id"], space.as_str(), "the root first: {answer}");
    assert_eq!(root["room_type"], "m.space");
    assert!(
        root["children_state"].as_array().is_some_and(|c| c
            .iter()
            .any(|e| e["state_key"] == child && e["type"] == "m.space.child")),
        "{answer}"
    );

    // Our space, joined by Synapse's user; its child only we have: Synapse asks our
    // `/_matrix/federation/v1/hierarchy` for it.
    let (space, child) =
        space_with_child(&mine, &crate::unique("Our space"), &ours.server_name).await;
    assert_eq!(theirs.join(&space, &[&ours.server_name]).await, space);
    let path = format!("/rooms/{}/hierarchy", encode(&space));
    let answer = eventually("our space's child through Synapse", || async {
        let (status, answer) = get_v1(&theirs, &path).await;
        if status == 200 && hierarchy_ids(&answer).contains(&child) {
            Ok(answer)
        } else {
            Err(format!("{status} {answer}\n{}", ours.log_text()))
        }
    })
    .await;
    let entry = answer["rooms"]
        .as_array()
        .and_then(|rooms| rooms.iter().find(|r| r["room_id"] == child.as_str()))
        .expect("the child");
    assert_eq!(entry["join_rule"], "public", "{answer}");
    assert_eq!(entry["num_joined_members"], 1, "{answer}");
}

/// A room of `space`'s members only (`restricted`, room version 10).
fn restricted_room(space: &str) -> Value {
    json!({"preset": "private_chat", "name": "Members only", "room_version": "10",
           "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                              "content": {"join_rule": "restricted",
                                          "allow": [{"type": "m.room_membership",
                                                     "room_id": space}]}}]})
}

/// Tries to join `room` through `via`; answers the status and error code.
async fn try_join(session: &Session, room: &str, via: &str) -> (u16, Value) {
    let path = format!("/join/{}?server_name={}", encode(room), encode(via));
    session.post(&path, &json!({})).await
}

/// The `join_authorised_via_users_server` of `user`'s join in `room`, as `session` sees it.
async fn authorised_via(session: &Session, room: &str, user: &str) -> Value {
    let path = format!("/rooms/{}/state/m.room.member/{}", encode(room), encode(user));
    eventually("the join in the room's state", || async {
        let (status, content) = session.get(&path).await;
        if status == 200 && content["membership"] == "join" {
            Ok(content["join_authorised_via_users_server"].clone())
        } else {
            Err(format!("{status} {content}"))
        }
    })
    .await
}

#[tokio::test]
async fn restricted_joins_cross_both_ways() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let theirs = synapse.register(&crate::unique("syn"), PASSWORD, false).await;
    let stranger = synapse.register(&crate::unique("syn"), PASSWORD, false).await;
    let mine = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;
    let outsider = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;

    // Synapse's restricted room: our user, a member of the space, is let in with Synapse's
    // user as the authoriser; our user outside the space is not.
    let space = theirs
        .create_room(&json!({"preset": "public_chat", "room_version": "10",
                             "creation_content": {"type": "m.space"}}))
        .await;
    let room = theirs.create_room(&restricted_room(&space)).await;
    let (status, answer) = try_join(&outsider, &room, &synapse.server_name).await;
    assert_eq!(status, 403, "outside the space: {answer}\n{}", ours.log_text());
    assert_eq!(mine.join(&space, &[&synapse.server_name]).await, space);
    let (status, answer) = try_join(&mine, &room, &synapse.server_name).await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    assert_eq!(authorised_via(&theirs, &room, &mine.user_id).await, theirs.user_id.as_str());
    let sent = theirs.send_text(&room, "welcome").await;
    mine.wait_for_event(&room, WITHIN, |e| e["event_id"] == sent).await;

    // Our restricted room: Synapse's user in our space is let in, authorised by our user;
    // Synapse's user outside it is refused by us.
    let space = mine
        .create_room(&json!({"preset": "public_chat", "room_version": "10",
                             "creation_content": {"type": "m.space"}}))
        .await;
    let room = mine.create_room(&restricted_room(&space)).await;
    let (status, answer) = try_join(&stranger, &room, &ours.server_name).await;
    assert_eq!(status, 403, "outside the space: {answer}\n{}", ours.log_text());
    assert_eq!(theirs.join(&space, &[&ours.server_name]).await, space);
    let (status, answer) = try_join(&theirs, &room, &ours.server_name).await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    assert_eq!(authorised_via(&mine, &room, &theirs.user_id).await, mine.user_id.as_str());
    let sent = mine.send_text(&room, "welcome").await;
    theirs.wait_for_event(&room, WITHIN, |e| e["event_id"] == sent).await;
}
