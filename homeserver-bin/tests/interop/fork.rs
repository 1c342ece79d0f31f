//! A fork between two of our servers, resolved the same by them and by Synapse.
//!
//! Our servers a and b each run behind a [`Link`]; cutting both links leaves a and b unable to
//! reach each other (Synapse cannot reach them either, but they still reach Synapse, which so
//! sees both sides of the fork as they are made). While cut, each side changes the power levels
//! and memberships of a room the three share; healed, every server must come to the same room
//! state, the one state resolution v2 gives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{Session, encode};
use crate::ours::OurServer;
use crate::synapse::Synapse;

const PASSWORD: &str = "a long enough password";
/// How long one step before the cut may take to be seen everywhere.
const WITHIN: Duration = Duration::from_secs(30);
/// How long the three servers may take to agree after the links are healed.
const CONVERGE_WITHIN: Duration = Duration::from_secs(45);

/// A room's current state as one server answers it: `(type, state_key)` to event id.
type StateMap = BTreeMap<(String, String), String>;

/// `GET /rooms/{room}/state` as `(type, state_key) -> event_id`.
async fn state_map(session: &Session, room: &str) -> StateMap {
    let (status, answer) = session.get(&format!("/rooms/{}/state", encode(room))).await;
    assert_eq!(status, 200, "{} reading the state of {room}: {answer}", session.user_id);
    answer
        .as_array()
        .expect("a list of state events")
        .iter()
        .map(|event| {
            let text = |name: &str| event[name].as_str().expect("a string field").to_owned();
            ((text("type"), text("state_key")), text("event_id"))
        })
        .collect()
}

/// What differs between two state maps, one line a key.
fn diff(left: &StateMap, right: &StateMap) -> String {
    let mut keys: Vec<&(String, String)> = left.keys().chain(right.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| left.get(*key) != right.get(*key))
        .map(|key| format!("  {key:?}: {:?} vs {:?}\n", left.get(key), right.get(key)))
        .collect()
}

/// A call that must answer 200; answers the body.
async fn ok(session: &Session, method: reqwest::Method, path: &str, body: &Value) -> Value {
    let (status, answer) = session.call(method, path, Some(body)).await;
    assert_eq!(status, 200, "{} {path}: {answer}", session.user_id);
    answer
}

/// `POST /rooms/{room}/{action}` (`invite`, `kick`, `ban`) about `user`.
async fn membership(session: &Session, room: &str, action: &str, user: &str) {
    let path = format!("/rooms/{}/{action}", encode(room));
    ok(session, reqwest::Method::POST, &path, &json!({"user_id": user})).await;
}

/// Sets a state event with an empty state key; answers its id.
async fn put_state(session: &Session, room: &str, kind: &str, content: &Value) -> String {
    let path = format!("/rooms/{}/state/{kind}/", encode(room));
    let answer = ok(session, reqwest::Method::PUT, &path, content).await;
    answer["event_id"].as_str().expect("an event id").to_owned()
}

/// The three sessions' state maps, once they are all equal and each server has every event of
/// `events`; panics with the differences after [`CONVERGE_WITHIN`].
async fn converged(
    sessions: &[(&str, &Session)],
    room: &str,
    events: &[String],
    logs: impl Fn() -> String,
) -> StateMap {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let mut maps = Vec::new();
        for (_, session) in sessions {
            maps.push(state_map(session, room).await);
        }
        let mut missing = Vec::new();
        for (name, session) in sessions {
            for id in events {
                let path = format!("/rooms/{}/event/{}", encode(room), encode(id));
                if session.get(&path).await.0 != 200 {
                    missing.push(format!("{name} lacks {id}"));
                }
            }
        }
        if missing.is_empty() && maps.iter().all(|map| *map == maps[0]) {
            return maps.swap_remove(0);
        }
        if Instant::now() >= deadline {
            let mut report = String::new();
            for ((name, _), map) in sessions.iter().zip(&maps).skip(1) {
                report.push_str(&format!("{} vs {name}:\n{}", sessions[0].0, diff(&maps[0], map)));
            }
            panic!(
                "the servers did not agree within {CONVERGE_WITHIN:?}; {missing:?}\n{report}\n{}",
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The users: alice and carol on a, bob and dave on b, syn and erin on Synapse.
struct People {
    alice: Session,
    carol: Session,
    bob: Session,
    dave: Session,
    syn: Session,
    erin: Session,
}

/// One room of the test, as it was before the cut.
struct Room {
    id: String,
    /// Its power levels' content before the cut.
    levels: Value,
    before: StateMap,
}

/// A room of alice's (`preset`, room version 11) that carol, bob, dave and syn joined; bob's
/// power is `bob_level`, and the power levels need only `levels_level` to be changed. Answers
/// once a, b and Synapse agree on its state.
async fn room(
    people: &People,
    a: &OurServer,
    preset: &str,
    bob_level: i64,
    levels_level: i64,
    logs: &impl Fn() -> String,
) -> Room {
    let People { alice, carol, bob, dave, syn, .. } = people;
    let id =
        alice.create_room(&json!({"preset": preset, "name": "Fork", "room_version": "11"})).await;
    for user in [carol, bob, dave, syn] {
        membership(alice, &id, "invite", &user.user_id).await;
    }
    assert_eq!(carol.join(&id, &[]).await, id);
    for user in [bob, dave, syn] {
        user.wait_for_invite(Some(&id), WITHIN).await;
        assert_eq!(user.join(&id, &[&a.server_name]).await, id, "{}", logs());
    }
    let path = format!("/rooms/{}/state/m.room.power_levels/", encode(&id));
    let mut levels = ok(alice, reqwest::Method::GET, &path, &json!({})).await;
    levels["users"][&bob.user_id] = json!(bob_level);
    levels["events"]["m.room.power_levels"] = json!(levels_level);
    put_state(alice, &id, "m.room.power_levels", &levels).await;
    let before = converged(&sessions(people), &id, &[], logs).await;
    for user in [carol, dave, syn] {
        assert_eq!(
            before.get(&member(&user.user_id)).is_some(),
            true,
            "{}: {before:?}",
            user.user_id
        );
    }
    Room { id, levels, before }
}

fn sessions(people: &People) -> [(&'static str, &Session); 3] {
    [("a", &people.alice), ("b", &people.bob), ("synapse", &people.syn)]
}

fn key(kind: &str, state_key: &str) -> (String, String) {
    (kind.to_owned(), state_key.to_owned())
}

fn member(user: &str) -> (String, String) {
    key("m.room.member", user)
}

const LEVELS: (&str, &str) = ("m.room.power_levels", "");

#[tokio::test]
async fn a_fork_between_two_of_our_servers_resolves_the_same_on_synapse_too() {
    let Some(synapse) = Synapse::from_env() else { return };
    let (a, link_a) = OurServer::start_behind_link().await;
    let (b, link_b) = OurServer::start_behind_link().await;
    let logs = || format!("--- a's log:\n{}\n--- b's log:\n{}", a.log_text(), b.log_text());
    let people = People {
        alice: Session::register_open(&a.client_url, &crate::unique("alice"), PASSWORD).await,
        carol: Session::register_open(&a.client_url, &crate::unique("carol"), PASSWORD).await,
        bob: Session::register_open(&b.client_url, &crate::unique("bob"), PASSWORD).await,
        dave: Session::register_open(&b.client_url, &crate::unique("dave"), PASSWORD).await,
        syn: synapse.register(&crate::unique("syn"), PASSWORD, false).await,
        erin: synapse.register(&crate::unique("erin"), PASSWORD, false).await,
    };
    let People { alice, carol, bob, dave, syn, erin } = &people;
    // Three rooms, forked by the same cut:
    // - equal: invite only, bob as powerful as alice (a kicked user cannot simply join again);
    // - demoted: invite only, bob below alice, who demotes him on her side;
    // - public: bob as powerful as alice, in a public room.
    let equal = room(&people, &a, "private_chat", 100, 100, &logs).await;
    let demoted = room(&people, &a, "private_chat", 90, 50, &logs).await;
    let public = room(&people, &a, "public_chat", 100, 100, &logs).await;

    // Cut: a and b each change the rooms on their own.
    link_a.cut();
    link_b.cut();
    // In `demoted`, b's side first: Synapse takes b's changes, then has to resolve a's.
    let mut levels = demoted.levels.clone();
    levels["users"][&dave.user_id] = json!(50);
    put_state(bob, &demoted.id, "m.room.power_levels", &levels).await;
    membership(bob, &demoted.id, "ban", &carol.user_id).await;
    put_state(bob, &demoted.id, "m.room.topic", &json!({"topic": "set on b"})).await;
    let mut levels = demoted.levels.clone();
    levels["users"][&bob.user_id] = json!(0);
    put_state(alice, &demoted.id, "m.room.power_levels", &levels).await;
    put_state(alice, &demoted.id, "m.room.name", &json!({"name": "Fork (a)"})).await;

    // In `equal` and `public`, a's side first.
    let mut levels_a = equal.levels.clone();
    levels_a["users"][&carol.user_id] = json!(50);
    let levels_a_id = put_state(alice, &equal.id, "m.room.power_levels", &levels_a).await;
    membership(alice, &equal.id, "kick", &dave.user_id).await;
    // Across to Synapse, which a still reaches.
    membership(alice, &equal.id, "invite", &erin.user_id).await;
    put_state(alice, &equal.id, "m.room.name", &json!({"name": "Fork (a)"})).await;
    carol.send_text(&equal.id, "carol, on a's side").await;
    membership(alice, &public.id, "kick", &dave.user_id).await;

    let mut levels_b = equal.levels.clone();
    levels_b["users"][&dave.user_id] = json!(50);
    levels_b["events"]["m.room.topic"] = json!(50);
    let levels_b_id = put_state(bob, &equal.id, "m.room.power_levels", &levels_b).await;
    membership(bob, &equal.id, "ban", &carol.user_id).await;
    put_state(bob, &equal.id, "m.room.topic", &json!({"topic": "set on b"})).await;
    dave.send_text(&equal.id, "dave, on b's side").await;
    membership(bob, &public.id, "ban", &carol.user_id).await;
    // Synapse's goes nowhere until the links heal.
    syn.send_text(&equal.id, "syn, while a and b are cut off").await;

    let mut forks = Vec::new();
    for room in [&equal, &demoted, &public] {
        let fork_a = state_map(alice, &room.id).await;
        let fork_b = state_map(bob, &room.id).await;
        assert_ne!(fork_a, fork_b, "the two sides forked");
        forks.push((fork_a, fork_b));
    }
    assert_eq!(forks[0].0[&key(LEVELS.0, LEVELS.1)], levels_a_id);
    assert_eq!(forks[0].1[&key(LEVELS.0, LEVELS.1)], levels_b_id);

    // Healed: each side says something after, so that every extremity is built upon.
    link_a.heal();
    link_b.heal();
    let mut resolved = Vec::new();
    for room in [&equal, &demoted, &public] {
        let after = [
            alice.send_text(&room.id, "alice, healed").await,
            bob.send_text(&room.id, "bob, healed").await,
            syn.send_text(&room.id, "syn, healed").await,
        ];
        resolved.push(after);
    }
    let mut states = Vec::new();
    for (room, after) in [&equal, &demoted, &public].into_iter().zip(&resolved) {
        states.push(converged(&sessions(&people), &room.id, after, &logs).await);
    }
    let [(equal_a, equal_b), (demoted_a, _), (public_a, public_b)] = &forks[..] else {
        unreachable!("three rooms")
    };

    // What state resolution v2 gives.
    // equal: both power levels were sent by users of power 100 (by the levels before the
    // fork), so they are ordered by timestamp and b's, the later, is applied last; both pass
    // the checks, so b's stands.
    let resolved = &states[0];
    let levels = key(LEVELS.0, LEVELS.1);
    assert_eq!(resolved[&levels], levels_b_id, "{}", diff(equal_b, resolved));
    // The kick (a) and the ban (b) pass against the resolved power levels; the old joins
    // they conflict with do not pass again in an invite-only room.
    let dave_key = member(&dave.user_id);
    let carol_key = member(&carol.user_id);
    assert_eq!(resolved[&dave_key], equal_a[&dave_key]);
    assert_eq!(resolved[&carol_key], equal_b[&carol_key]);
    // The invite made on a's side, the name set on a's, the topic set on b's.
    let erin_key = member(&erin.user_id);
    assert_eq!(resolved[&erin_key], equal_a[&erin_key]);
    assert_eq!(resolved[&key("m.room.name", "")], equal_a[&key("m.room.name", "")]);
    assert_eq!(resolved[&key("m.room.topic", "")], equal_b[&key("m.room.topic", "")]);
    // Nothing else changed on either side.
    for (key, id) in &equal.before {
        if equal_a.get(key) == Some(id) && equal_b.get(key) == Some(id) {
            assert_eq!(resolved.get(key), Some(id), "{key:?} was not changed on either side");
        }
    }

    // demoted: alice (100) outranks bob (90), so her levels are applied first: bob's power is
    // then 0 and every change of his side fails; the room is as a made it.
    assert_eq!(states[1], *demoted_a, "{}", diff(demoted_a, &states[1]));

    // public: the kick (a) and the ban (b) pass. dave's join from before the fork, conflicted
    // with the kick, would pass again in a public room, but it is in the kick's auth chain, so
    // it is sorted with the power events, before the kick, which stands.
    let resolved = &states[2];
    assert_eq!(resolved[&dave_key], public_a[&dave_key], "{}", diff(public_a, resolved));
    assert_eq!(resolved[&carol_key], public_b[&carol_key], "{}", diff(public_b, resolved));
}
