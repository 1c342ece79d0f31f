//! Backfill from Synapse: our user joins a Synapse room with a long history, and `/messages`
//! backwards on our server returns all of it (fetched with `/backfill` as it pages).

use serde_json::json;

use crate::client::{Session, encode};
use crate::ours::OurServer;
use crate::synapse::Synapse;

const PASSWORD: &str = "a long enough password";

#[tokio::test]
async fn our_user_pages_back_through_the_history_of_a_synapse_room() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let theirs = synapse.register(&crate::unique("syn"), PASSWORD, false).await;
    let mine = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;
    let room = theirs.create_room(&json!({"preset": "public_chat", "name": "Archive"})).await;
    for i in 0..200 {
        theirs.send_text(&room, &format!("old {i}")).await;
    }
    assert_eq!(mine.join(&room, &[&synapse.server_name]).await, room, "{}", ours.log_text());

    let mut bodies: Vec<String> = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    let mut from = String::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 12, "the history did not end within 12 pages");
        let path = format!("/rooms/{}/messages?dir=b&limit=50{from}", encode(&room));
        let (status, answer) = mine.get(&path).await;
        assert_eq!(status, 200, "{answer}\n{}", ours.log_text());
        for event in answer["chunk"].as_array().expect("a chunk") {
            assert!(ids.insert(event["event_id"].as_str().expect("an id").to_owned()), "twice");
            if event["type"] == "m.room.message" {
                bodies.push(event["content"]["body"].as_str().unwrap_or_default().to_owned());
            }
        }
        match answer["end"].as_str() {
            Some(end) => from = format!("&from={}", encode(end)),
            None => break,
        }
    }
    let expected: Vec<String> = (0..200).rev().map(|i| format!("old {i}")).collect();
    assert_eq!(bodies, expected, "{}", ours.log_text());
    assert!(ids.len() > 200, "the room's state events came too");
}
