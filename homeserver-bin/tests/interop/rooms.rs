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
