//! Nothing acknowledged is lost across a crash: events queued for a server that is down are
//! delivered after our server is killed (SIGKILL) and started again. Two of our servers, no
//! Synapse needed.

use std::time::Duration;

use serde_json::json;

use crate::client::Session;
use crate::ours::OurServer;

const PASSWORD: &str = "a long enough password";

#[tokio::test]
async fn events_queued_for_a_server_that_is_down_survive_a_kill() {
    let mut a = OurServer::start().await;
    let mut b = OurServer::start().await;
    let alice = Session::register_open(&a.client_url, &crate::unique("alice"), PASSWORD).await;
    let bob = Session::register_open(&b.client_url, &crate::unique("bob"), PASSWORD).await;
    let room = alice.create_room(&json!({"preset": "public_chat", "name": "Crash"})).await;
    assert_eq!(bob.join(&room, &[&a.server_name]).await, room, "{}", b.log_text());

    // b is down while alice sends: a answers 200 for each and queues them for b.
    b.kill();
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(alice.send_text(&room, &format!("while b is down {i}")).await);
    }
    // a dies before it could deliver anything; both come back.
    a.kill();
    a.restart().await;
    b.restart().await;
    let last = sent.last().expect("five events").clone();
    bob.sync_until(Duration::from_secs(90), |sync| {
        let events = sync["rooms"]["join"][room.as_str()]["timeline"]["events"].as_array()?;
        events.iter().any(|e| e["event_id"] == last.as_str()).then_some(())
    })
    .await;

    // Every one of them is there, in order.
    let (status, messages) =
        bob.get(&format!("/rooms/{}/messages?dir=b&limit=20", crate::client::encode(&room))).await;
    assert_eq!(status, 200, "{messages}");
    let ids: Vec<&str> = messages["chunk"]
        .as_array()
        .expect("a chunk")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    for id in &sent {
        assert!(ids.contains(&id.as_str()), "{id} is missing on b: {ids:?}\n{}", a.log_text());
    }
}
