//! Knocking across our server and Synapse, both ways: a Synapse user knocks on a room of ours
//! (our `make_knock`/`send_knock`) and is let in; our user knocks on a room of Synapse's (we
//! as the knocking server: the `knock_room_state` Synapse answers, `rooms.knock` in our
//! `/sync`), is let in by an invite, and joins.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Session, encode};
use crate::ours::OurServer;
use crate::synapse::Synapse;

const PASSWORD: &str = "a long enough password";
const WITHIN: Duration = Duration::from_secs(30);

/// A room whose join rule is knock, of version 12, named `name`.
fn knock_room(name: &str) -> Value {
    json!({"preset": "private_chat", "name": name, "room_version": "12",
           "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                              "content": {"join_rule": "knock"}}]})
}

/// Waits until `session` sees `user`'s membership in the joined `room` become `membership`.
async fn wait_for_membership(session: &Session, room: &str, user: &str, membership: &str) {
    session
        .wait_for_event(room, WITHIN, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == user
                && e["content"]["membership"] == membership
        })
        .await;
}

#[tokio::test]
async fn knocks_cross_both_ways() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let theirs = synapse.register(&crate::unique("syn"), PASSWORD, false).await;
    let mine = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;

    // A Synapse user knocks on our room; we accept with an invite; they join.
    let room = mine.create_room(&knock_room("Our porch")).await;
    let path = format!("/knock/{}?via={}", encode(&room), encode(&ours.server_name));
    let (status, answer) = theirs.post(&path, &json!({"reason": "hi from synapse"})).await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    wait_for_membership(&mine, &room, &theirs.user_id, "knock").await;
    let (status, answer) = mine
        .post(&format!("/rooms/{}/invite", encode(&room)), &json!({"user_id": theirs.user_id}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(theirs.wait_for_invite(Some(&room), WITHIN).await, room);
    assert_eq!(theirs.join(&room, &[&ours.server_name]).await, room);
    wait_for_membership(&mine, &room, &theirs.user_id, "join").await;

    // Our user knocks on Synapse's room: our sync shows the knock with Synapse's stripped
    // state; Synapse's user sees it and invites; ours joins.
    let room = theirs.create_room(&knock_room("Synapse porch")).await;
    let path = format!("/knock/{}?via={}", encode(&room), encode(&synapse.server_name));
    let (status, answer) = mine.post(&path, &json!({"reason": "hi from us"})).await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    let events = mine
        .sync_until(WITHIN, |s| {
            s["rooms"]["knock"][&room]["knock_state"]["events"].as_array().cloned()
        })
        .await;
    assert!(events.iter().any(|e| e["content"]["name"] == "Synapse porch"), "{events:?}");
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == mine.user_id.as_str()
            && e["content"]["membership"] == "knock"),
        "{events:?}"
    );
    wait_for_membership(&theirs, &room, &mine.user_id, "knock").await;
    let (status, answer) = theirs
        .post(&format!("/rooms/{}/invite", encode(&room)), &json!({"user_id": mine.user_id}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(mine.wait_for_invite(Some(&room), WITHIN).await, room);
    assert_eq!(mine.join(&room, &[&synapse.server_name]).await, room, "{}", ours.log_text());
    wait_for_membership(&theirs, &room, &mine.user_id, "join").await;

    // Our user knocks on a second room of Synapse's and rescinds: Synapse sees the leave.
    let room = theirs.create_room(&knock_room("Another porch")).await;
    let path = format!("/knock/{}?via={}", encode(&room), encode(&synapse.server_name));
    let (status, answer) = mine.post(&path, &json!({})).await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    wait_for_membership(&theirs, &room, &mine.user_id, "knock").await;
    let (status, answer) = mine.post(&format!("/rooms/{}/leave", encode(&room)), &json!({})).await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    wait_for_membership(&theirs, &room, &mine.user_id, "leave").await;
}
