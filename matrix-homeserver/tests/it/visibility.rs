//! History visibility as a table: random room histories (messages, every history visibility
//! value, and Bob invited, joining, leaving, kicked, banned, unbanned, rejoining, in any
//! order) are played against a server; then what Bob gets from every reading endpoint is
//! compared with a small model of the spec's text written here, independent of the server's
//! code.
//!
//! The model ("Room History Visibility", server behaviour), per event E, with the state
//! before E:
//! 1. history `world_readable`: allow; 2. Bob's membership `join`: allow;
//! 3. `shared` and Bob joined at any point after E: allow;
//! 4. `invited` and Bob's membership `invite`: allow; 5. otherwise deny.
//!
//! A history visibility event is allowed if the value before or after it allows it; Bob
//! always sees his own membership events. On top of the per-event rule, the endpoints'
//! access (the spec's "after a user has left a room, they may see ... no events received
//! after they left"): Bob reads a room he is joined to, or one that is world-readable now,
//! or one he left (or was kicked or banned from) after having been joined, up to that
//! departure. Anything else is 403. `/sync` shows a room Bob left up to his departure.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::rooms::{create, urlencode, user};
use crate::{Backend, Client};

const V3: &str = "/_matrix/client/v3";

#[derive(Debug, Clone, Copy)]
enum Action {
    Message,
    History(&'static str),
    Invite,
    Join,
    Leave,
    Kick,
    Ban,
    Unban,
    BobMessage,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::Message),
        2 => prop::sample::select(vec!["world_readable", "shared", "invited", "joined"])
            .prop_map(Action::History),
        2 => Just(Action::Invite),
        2 => Just(Action::Join),
        1 => Just(Action::Leave),
        1 => Just(Action::Kick),
        1 => Just(Action::Ban),
        1 => Just(Action::Unban),
        1 => Just(Action::BobMessage),
    ]
}

/// One event of the room, as Alice (the creator, always joined) sees it.
#[derive(Debug)]
struct Event {
    id: String,
    kind: String,
    state_key: Option<String>,
    content: Value,
}

/// Which of `events` Bob may see by rules 1-5 and the two special cases.
fn visible_by_spec(events: &[Event], bob: &str) -> Vec<bool> {
    // Bob's membership after each event, and the history visibility after each event.
    let mut membership: Vec<Option<String>> = Vec::with_capacity(events.len());
    let mut history: Vec<String> = Vec::with_capacity(events.len());
    let (mut m, mut h) = (None::<String>, "shared".to_owned());
    for e in events {
        if e.kind == "m.room.member" && e.state_key.as_deref() == Some(bob) {
            m = e.content["membership"].as_str().map(str::to_owned);
        }
        if e.kind == "m.room.history_visibility" && e.state_key.as_deref() == Some("") {
            h = e.content["history_visibility"].as_str().unwrap_or("shared").to_owned();
        }
        membership.push(m.clone());
        history.push(h.clone());
    }
    let joined_after = |i: usize| membership[i + 1..].iter().any(|m| m.as_deref() == Some("join"));
    (0..events.len())
        .map(|i| {
            let e = &events[i];
            if e.kind == "m.room.member" && e.state_key.as_deref() == Some(bob) {
                return true;
            }
            let m_before = if i == 0 { None } else { membership[i - 1].as_deref() };
            let allows = |h: &str| match h {
                "world_readable" => true,
                _ if m_before == Some("join") => true,
                "invited" => m_before == Some("invite"),
                "joined" => false,
                _ => joined_after(i),
            };
            let before = if i == 0 { "shared" } else { history[i - 1].as_str() };
            allows(before)
                || (e.kind == "m.room.history_visibility"
                    && e.state_key.as_deref() == Some("")
                    && allows(&history[i]))
        })
        .collect()
}

async fn play(actions: Vec<Action>) -> Result<(), TestCaseError> {
    let Some(server) = crate::start(Backend::Memory).await else { return Ok(()) };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    let target = json!({"user_id": bob_id});
    for (i, action) in actions.iter().enumerate() {
        // Moves the server refuses (joining while banned, ...) are simply not in the room.
        let _ = match action {
            Action::Message => crate::rooms::send(&alice, &room, &format!("a{i}"), "m").await,
            Action::BobMessage => crate::rooms::send(&bob, &room, &format!("b{i}"), "m").await,
            Action::History(value) => {
                let path = format!("{V3}/rooms/{room}/state/m.room.history_visibility/");
                let body = json!({"history_visibility": value});
                alice.send(reqwest::Method::PUT, &path, Some(&body)).await
            }
            Action::Invite => alice.post(&format!("{V3}/rooms/{room}/invite"), &target).await,
            Action::Join => bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await,
            Action::Leave => bob.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await,
            Action::Kick => alice.post(&format!("{V3}/rooms/{room}/kick"), &target).await,
            Action::Ban => alice.post(&format!("{V3}/rooms/{room}/ban"), &target).await,
            Action::Unban => alice.post(&format!("{V3}/rooms/{room}/unban"), &target).await,
        };
    }

    // The whole room, oldest first, from Alice.
    let (status, body) = alice.get(&format!("{V3}/rooms/{room}/messages?dir=f&limit=1000")).await;
    prop_assert_eq!(status, 200);
    let events: Vec<Event> = body["chunk"]
        .as_array()
        .expect("a chunk")
        .iter()
        .map(|e| Event {
            id: e["event_id"].as_str().unwrap_or_default().to_owned(),
            kind: e["type"].as_str().unwrap_or_default().to_owned(),
            state_key: e["state_key"].as_str().map(str::to_owned),
            content: e["content"].clone(),
        })
        .collect();
    let by_spec = visible_by_spec(&events, &bob_id);

    // Bob's standing now.
    let bob_events: Vec<(usize, &str)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == "m.room.member" && e.state_key.as_deref() == Some(&bob_id))
        .map(|(i, e)| (i, e.content["membership"].as_str().unwrap_or_default()))
        .collect();
    let now = bob_events.last().copied();
    let ever_joined = bob_events.iter().any(|(_, m)| *m == "join");
    let world_readable_now = events
        .iter()
        .rev()
        .find(|e| e.kind == "m.room.history_visibility")
        .is_some_and(|e| e.content["history_visibility"] == "world_readable");
    let joined_now = matches!(now, Some((_, "join")));
    let departed = match now {
        Some((i, "leave" | "ban")) if ever_joined => Some(i),
        _ => None,
    };
    // What the reading endpoints give: (allowed at all, the last event index readable).
    let (access, upto) = if joined_now || world_readable_now {
        (true, events.len())
    } else if let Some(i) = departed {
        (true, i + 1)
    } else {
        (false, 0)
    };
    let expected: Vec<&str> =
        (0..upto).filter(|i| by_spec[*i]).map(|i| events[i].id.as_str()).collect();
    let context = format!("actions {actions:?}\nevents {events:#?}\nby spec {by_spec:?}");

    // /messages.
    let (status, body) = bob.get(&format!("{V3}/rooms/{room}/messages?dir=f&limit=1000")).await;
    if access {
        prop_assert_eq!(status, 200, "{}", context);
        let got: Vec<&str> = ids(&body["chunk"]);
        prop_assert_eq!(&got, &expected, "/messages\n{}", context);
    } else {
        prop_assert_eq!(status, 403, "{}", context);
    }
    // /event and /context for every event.
    for (i, e) in events.iter().enumerate() {
        let seen = access && i < upto && by_spec[i];
        let (status, _) = bob.get(&format!("{V3}/rooms/{room}/event/{}", e.id)).await;
        prop_assert_eq!(status == 200, seen, "/event {} ({})\n{}", i, status, context);
        let (status, _) = bob.get(&format!("{V3}/rooms/{room}/context/{}?limit=0", e.id)).await;
        prop_assert_eq!(status == 200, seen, "/context {} ({})\n{}", i, status, context);
    }
    // /state and /members: the room at all.
    for path in ["state", "members"] {
        let (status, _) = bob.get(&format!("{V3}/rooms/{room}/{path}")).await;
        prop_assert_eq!(status == 200, access, "/{} ({})\n{}", path, status, context);
    }
    // /sync: the joined room whole, a left room up to the departure.
    let filter = urlencode(r#"{"room":{"timeline":{"limit":100},"include_leave":true}}"#);
    let (status, body) = bob.get(&format!("{V3}/sync?filter={filter}")).await;
    prop_assert_eq!(status, 200);
    match now {
        Some((_, "join")) => {
            let got = ids(&body["rooms"]["join"][&room]["timeline"]["events"]);
            let expected: Vec<&str> =
                (0..events.len()).filter(|i| by_spec[*i]).map(|i| events[i].id.as_str()).collect();
            prop_assert_eq!(got, expected, "/sync join\n{}", context);
        }
        Some((i, "leave" | "ban")) => {
            let got = ids(&body["rooms"]["leave"][&room]["timeline"]["events"]);
            let expected: Vec<&str> =
                (0..=i).filter(|i| by_spec[*i]).map(|i| events[i].id.as_str()).collect();
            prop_assert_eq!(got, expected, "/sync leave\n{}", context);
            if !ever_joined {
                prop_assert_eq!(
                    &body["rooms"]["leave"][&room]["state"]["events"],
                    &json!([]),
                    "/sync leave state\n{}",
                    context
                );
            }
        }
        Some((_, "invite")) => {
            prop_assert!(body["rooms"]["invite"][&room].is_object(), "/sync invite\n{}", context);
        }
        _ => {
            let text = body["rooms"].to_string();
            prop_assert!(!text.contains(&room), "/sync shows a room Bob was never in\n{}", context);
        }
    }
    let _: &Client = &bob;
    Ok(())
}

fn ids(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["event_id"].as_str()).collect())
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn history_visibility_matches_the_spec_on_every_endpoint(
        actions in prop::collection::vec(action(), 1..18)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(play(actions))?;
    }
}
