//! Rooms across our server and Synapse: a Synapse user joins a room of ours, our user joins a
//! room of Synapse's, and messages go both ways.

use std::time::Duration;

use serde_json::json;

use crate::client::Session;
use crate::ours::OurServer;
use crate::synapse::Synapse;

const PASSWORD: &str = "a long enough password";
const WITHIN: Duration = Duration::from_secs(30);

/// A user of ours and a user of Synapse's.
async fn users(synapse: &Synapse, ours: &OurServer) -> (Session, Session) {
    let theirs = synapse.register(&crate::unique("syn"), PASSWORD, false).await;
    let mine = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;
    (mine, theirs)
}

/// Each side sends, the other side's sync shows it.
async fn exchange(room: &str, mine: &Session, theirs: &Session) {
    let sent = mine.send_text(room, "from our server").await;
    let seen = theirs.wait_for_event(room, WITHIN, |e| e["event_id"] == sent).await;
    assert_eq!(seen["content"]["body"], "from our server");
    assert_eq!(seen["sender"], mine.user_id.as_str());
    let sent = theirs.send_text(room, "from synapse").await;
    let seen = mine.wait_for_event(room, WITHIN, |e| e["event_id"] == sent).await;
    assert_eq!(seen["content"]["body"], "from synapse");
    assert_eq!(seen["sender"], theirs.user_id.as_str());
}

/// A public room with an alias on our server; the Synapse user joins it by alias.
#[tokio::test]
async fn a_synapse_user_joins_a_room_of_ours() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let (mine, theirs) = users(&synapse, &ours).await;
    let alias_name = crate::unique("tea");
    let room = mine
        .create_room(
            &json!({"preset": "public_chat", "room_alias_name": alias_name, "name": "Tea"}),
        )
        .await;
    // A second user of ours is in the room too: Synapse joins with `omit_members` (a partial
    // state, no member events), then fetches the full state from us.
    let other = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;
    assert_eq!(other.join(&room, &[]).await, room);
    let alias = format!("#{alias_name}:{}", ours.server_name);
    assert_eq!(theirs.join(&alias, &[]).await, room, "{}", ours.log_text());
    // Our side sees the Synapse user joined.
    let joined = mine
        .wait_for_event(&room, WITHIN, |e| {
            e["type"] == "m.room.member" && e["state_key"] == theirs.user_id.as_str()
        })
        .await;
    assert_eq!(joined["content"]["membership"], "join");
    exchange(&room, &mine, &theirs).await;
    // The Synapse user sees every member once Synapse has the room's full state.
    let path = format!("/rooms/{}/joined_members", crate::client::encode(&room));
    let everyone = [&mine.user_id, &other.user_id, &theirs.user_id];
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let (status, members) = theirs.get(&path).await;
        if status == 200 && everyone.iter().all(|u| members["joined"].get(u.as_str()).is_some()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Synapse never listed every member: {status} {members}\n{}",
            ours.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A public room on Synapse; our user joins it by id, through Synapse.
#[tokio::test]
async fn our_user_joins_a_room_of_synapse() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let (mine, theirs) = users(&synapse, &ours).await;
    let room = theirs.create_room(&json!({"preset": "public_chat", "name": "Coffee"})).await;
    let joined = mine.join(&room, &[&synapse.server_name]).await;
    assert_eq!(joined, room, "{}", ours.log_text());
    let seen = theirs
        .wait_for_event(&room, WITHIN, |e| {
            e["type"] == "m.room.member" && e["state_key"] == mine.user_id.as_str()
        })
        .await;
    assert_eq!(seen["content"]["membership"], "join");
    exchange(&room, &mine, &theirs).await;
}

/// Whether `event` is a redaction of `target` (`redacts` is in the content from room version
/// 11, and also at the top for clients of older versions).
fn redacts(event: &serde_json::Value, target: &str) -> bool {
    event["type"] == "m.room.redaction"
        && (event["redacts"] == target || event["content"]["redacts"] == target)
}

/// Waits until `session` sees `user`'s membership in `room` become `membership`.
async fn wait_for_membership(session: &Session, room: &str, user: &str, membership: &str) {
    session
        .wait_for_event(room, WITHIN, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == user
                && e["content"]["membership"] == membership
        })
        .await;
}

/// Invites both ways, a rejection, a leave and a ban each way, an edit and a redaction.
#[tokio::test]
async fn invites_leaves_bans_edits_and_redactions_cross_both_ways() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let (mine, theirs) = users(&synapse, &ours).await;
    let (mine2, theirs2) = users(&synapse, &ours).await;

    // Our private room; the Synapse user is invited, sees it, joins.
    let room = mine.create_room(&json!({"preset": "private_chat", "name": "Ours"})).await;
    let (status, answer) = mine
        .post(
            &format!("/rooms/{}/invite", crate::client::encode(&room)),
            &json!({"user_id": theirs.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    assert_eq!(theirs.wait_for_invite(Some(&room), WITHIN).await, room);
    assert_eq!(theirs.join(&room, &[&ours.server_name]).await, room);
    wait_for_membership(&mine, &room, &theirs.user_id, "join").await;

    // An edit and a redaction from Synapse reach us; ours reach Synapse.
    let original = theirs.send_text(&room, "tyop").await;
    let path = format!(
        "/rooms/{}/send/m.room.message/{}",
        crate::client::encode(&room),
        crate::unique("e")
    );
    let edit = json!({"msgtype": "m.text", "body": "* typo", "m.new_content": {"msgtype": "m.text", "body": "typo"},
                      "m.relates_to": {"rel_type": "m.replace", "event_id": original}});
    let (status, answer) = theirs.put(&path, &edit).await;
    assert_eq!(status, 200, "{answer}");
    mine.wait_for_event(&room, WITHIN, |e| {
        e["content"]["m.relates_to"]["event_id"] == original.as_str()
    })
    .await;
    let path = format!(
        "/rooms/{}/redact/{}/{}",
        crate::client::encode(&room),
        crate::client::encode(&original),
        crate::unique("r")
    );
    let (status, answer) = theirs.put(&path, &json!({"reason": "oops"})).await;
    assert_eq!(status, 200, "{answer}");
    mine.wait_for_event(&room, WITHIN, |e| redacts(e, &original)).await;
    let mine_sent = mine.send_text(&room, "to be redacted").await;
    theirs.wait_for_event(&room, WITHIN, |e| e["event_id"] == mine_sent).await;
    let path = format!(
        "/rooms/{}/redact/{}/{}",
        crate::client::encode(&room),
        crate::client::encode(&mine_sent),
        crate::unique("r")
    );
    let (status, answer) = mine.put(&path, &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    theirs.wait_for_event(&room, WITHIN, |e| redacts(e, &mine_sent)).await;

    // The Synapse user leaves; we see it.
    let (status, answer) =
        theirs.post(&format!("/rooms/{}/leave", crate::client::encode(&room)), &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    wait_for_membership(&mine, &room, &theirs.user_id, "leave").await;

    // A second Synapse user is invited and rejects (Synapse is no longer in the room).
    let (status, answer) = mine
        .post(
            &format!("/rooms/{}/invite", crate::client::encode(&room)),
            &json!({"user_id": theirs2.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    theirs2.wait_for_invite(Some(&room), WITHIN).await;
    let (status, answer) =
        theirs2.post(&format!("/rooms/{}/leave", crate::client::encode(&room)), &json!({})).await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    wait_for_membership(&mine, &room, &theirs2.user_id, "leave").await;

    // Synapse's private room; our user is invited, joins, and is banned: we see the ban.
    let theirs_room =
        theirs.create_room(&json!({"preset": "private_chat", "name": "Theirs"})).await;
    let (status, answer) = theirs
        .post(
            &format!("/rooms/{}/invite", crate::client::encode(&theirs_room)),
            &json!({"user_id": mine2.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
    assert_eq!(mine2.wait_for_invite(Some(&theirs_room), WITHIN).await, theirs_room);
    assert_eq!(mine2.join(&theirs_room, &[]).await, theirs_room, "{}", ours.log_text());
    wait_for_membership(&theirs, &theirs_room, &mine2.user_id, "join").await;
    // Our user bans... no: the Synapse user bans ours, and ours sees it as a leave section.
    let (status, answer) = theirs
        .post(
            &format!("/rooms/{}/ban", crate::client::encode(&theirs_room)),
            &json!({"user_id": mine2.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    mine2.sync_until(WITHIN, |s| s["rooms"]["leave"].get(theirs_room.as_str()).map(|_| ())).await;
    // And we ban a Synapse user from our room: Synapse sees it.
    let (status, answer) = mine
        .post(
            &format!("/rooms/{}/invite", crate::client::encode(&room)),
            &json!({"user_id": theirs.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    theirs.wait_for_invite(Some(&room), WITHIN).await;
    assert_eq!(theirs.join(&room, &[&ours.server_name]).await, room);
    let (status, answer) = mine
        .post(
            &format!("/rooms/{}/ban", crate::client::encode(&room)),
            &json!({"user_id": theirs.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    theirs.sync_until(WITHIN, |s| s["rooms"]["leave"].get(room.as_str()).map(|_| ())).await;
}
