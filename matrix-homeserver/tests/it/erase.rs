//! Erasure (`POST /account/deactivate` with `erase: true`, v1.10) on every backend: the
//! erased user's events are served redacted, with no redaction event, to members who saw
//! them and to newcomers, by id and in pages; a deactivation without `erase` keeps them.

use serde_json::{Value, json};

use crate::Client;
use crate::rooms::{create, send, user};

const V3: &str = "/_matrix/client/v3";

crate::on_every_backend!(erased_users_events_are_served_redacted_to_everyone);

async fn deactivate(client: &Client, user_id: &str, erase: bool) {
    let body = json!({"auth": {"type": "m.login.password", "user": user_id, "password": "pw"},
                      "erase": erase});
    let (status, answer) = client.post(&format!("{V3}/account/deactivate"), &body).await;
    assert_eq!(status, 200, "{answer}");
}

/// The event `id` as `client` gets it by id and in the room's latest page.
async fn as_seen(client: &Client, room: &str, id: &str) -> (Value, Value) {
    let (status, by_id) = client.get(&format!("{V3}/rooms/{room}/event/{id}")).await;
    assert_eq!(status, 200, "{by_id}");
    let (status, page) = client.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await;
    assert_eq!(status, 200, "{page}");
    let in_page = page["chunk"]
        .as_array()
        .and_then(|chunk| chunk.iter().find(|e| e["event_id"] == id))
        .cloned()
        .expect("in the page");
    (by_id, in_page)
}

async fn erased_users_events_are_served_redacted_to_everyone(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (carol, carol_id) = user(&server, "carol").await;
    let (dave, _) = user(&server, "dave").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    for member in [&bob, &carol] {
        let (status, body) = member.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, sent) = send(&bob, &room, "b1", "bob's secret").await;
    let bobs = sent["event_id"].as_str().expect("an id").to_owned();
    let (_, sent) = send(&carol, &room, "c1", "carol's words").await;
    let carols = sent["event_id"].as_str().expect("an id").to_owned();

    deactivate(&bob, &bob_id, true).await;
    deactivate(&carol, &carol_id, false).await;
    let (status, body) = dave.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");

    // Alice saw it before; Dave joined after: both get it redacted, by id and in a page.
    for viewer in [&alice, &dave] {
        for event in <[Value; 2]>::from(as_seen(viewer, &room, &bobs).await) {
            assert_eq!(event["content"], json!({}), "{event}");
            assert_eq!(event["sender"], bob_id.as_str());
            assert!(event["unsigned"].get("redacted_because").is_none(), "{event}");
        }
        // Nor is it found by what it said.
        let search = json!({"search_categories": {"room_events": {"search_term": "secret"}}});
        let (status, found) = viewer.post(&format!("{V3}/search"), &search).await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["search_categories"]["room_events"]["results"], json!([]), "{found}");
        // Carol deactivated without erasing: her words stay.
        for event in <[Value; 2]>::from(as_seen(viewer, &room, &carols).await) {
            assert_eq!(event["content"]["body"], "carol's words", "{event}");
        }
    }
}
