//! A fork between two of our servers, resolved the same by them and by Synapse.
//!
//! Our servers a and b each run behind a [`Link`](crate::link::Link); cutting both links
//! leaves a and b unable to reach each other (Synapse cannot reach them either, but they still
//! reach Synapse, which so sees both sides of the fork as they are made). While cut, each side
//! changes the power levels and memberships of three rooms the three servers share, and
//! Synapse's side adds a rename and more messages than one `/get_missing_events` of ours
//! fetches; healed, every server must come to the same room state, the one state resolution
//! gives (v2 in room version 11, v2.1 in 12), each must authorize by it, and our servers'
//! clients must learn it from an incremental `/sync` (`use_state_after`).

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

/// A sync token of `session`'s, for now.
async fn since(session: &Session) -> String {
    let (status, answer) = session.get("/sync?timeout=0").await;
    assert_eq!(status, 200, "{} syncing: {answer}", session.user_id);
    answer["next_batch"].as_str().expect("a next_batch").to_owned()
}

/// The state of `room` as a client that knew `known` at `since` learns it from one
/// incremental sync with `use_state_after` (spec 1.16): `known`, then `state_after`. A
/// server that does not give `state_after` is read as the spec says a client must then:
/// `known`, then `state`, then the timeline's state events in order.
async fn state_by_sync(session: &Session, room: &str, since: &str, known: &StateMap) -> StateMap {
    let filter = encode(r#"{"room":{"timeline":{"limit":100}}}"#);
    let path =
        format!("/sync?timeout=0&use_state_after=true&since={}&filter={filter}", encode(since));
    let (status, answer) = session.get(&path).await;
    assert_eq!(status, 200, "{} syncing: {answer}", session.user_id);
    let joined = &answer["rooms"]["join"][room];
    let sections = match joined.get("state_after") {
        Some(after) => vec![&after["events"]],
        None => vec![&joined["state"]["events"], &joined["timeline"]["events"]],
    };
    let mut state = known.clone();
    for section in sections {
        for event in section.as_array().into_iter().flatten() {
            if let (Some(kind), Some(key), Some(id)) =
                (event["type"].as_str(), event["state_key"].as_str(), event["event_id"].as_str())
            {
                state.insert((kind.to_owned(), key.to_owned()), id.to_owned());
            }
        }
    }
    state
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

/// A room of alice's (`preset`, room `version`) that carol, bob, dave and syn joined; bob's
/// power is `bob_level`, and the power levels need only `levels_level` to be changed. Answers
/// once a, b and Synapse agree on its state.
async fn room(
    people: &People,
    a: &OurServer,
    version: &str,
    preset: &str,
    bob_level: i64,
    levels_level: i64,
    logs: &impl Fn() -> String,
) -> Room {
    let People { alice, carol, bob, dave, syn, .. } = people;
    let id = alice
        .create_room(&json!({"preset": preset, "name": "Fork", "room_version": version}))
        .await;
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
        assert!(before.contains_key(&member(&user.user_id)), "{}: {before:?}", user.user_id);
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
async fn a_fork_between_two_of_our_servers_resolves_the_same_on_synapse_too_v11() {
    fork_resolves_the_same_everywhere("11").await;
}

/// Room version 12: state resolution v2.1, and alice, the creator, above any power level.
#[tokio::test]
async fn a_fork_between_two_of_our_servers_resolves_the_same_on_synapse_too_v12() {
    fork_resolves_the_same_everywhere("12").await;
}

/// The scenario of both tests, in rooms of `version`.
async fn fork_resolves_the_same_everywhere(version: &str) {
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
    let equal = room(&people, &a, version, "private_chat", 100, 100, &logs).await;
    let demoted = room(&people, &a, version, "private_chat", 90, 50, &logs).await;
    let public = room(&people, &a, version, "public_chat", 100, 100, &logs).await;

    // Where each of a, b and Synapse's clients are before the cut.
    let mut tokens = Vec::new();
    for (_, session) in sessions(&people) {
        tokens.push(since(session).await);
    }

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
    // Synapse's side: a change of syn's display name (a member event in each room), then
    // more messages than one `/get_missing_events` of ours asks for (20), all of which go
    // nowhere until the links heal. Synapse then sends only the newest (its catch-up), and
    // our servers fill the gap before it.
    // erin, invited on a's side, joins through Synapse: a join whose auth events hold an
    // invite b has not seen.
    erin.wait_for_invite(Some(&equal.id), WITHIN).await;
    assert_eq!(erin.join(&equal.id, &[&synapse.server_name]).await, equal.id);
    let path = format!("/profile/{}/displayname", encode(&syn.user_id));
    ok(syn, reqwest::Method::PUT, &path, &json!({"displayname": "syn, renamed"})).await;
    for i in 0..25 {
        syn.send_text(&equal.id, &format!("syn, while a and b are cut off ({i})")).await;
    }

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
    let healed = Instant::now();
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
    eprintln!("the three servers agreed {:?} after the links healed", healed.elapsed());
    // Our servers' clients learn the resolved state from their incremental sync, also where
    // the resolution went back to an event older than their token (a state reset), or the
    // timeline's last event of a key is not the resolved one (what `state` and the timeline
    // cannot tell). Not asked of Synapse: 1.163 has `use_state_after` only under MSC4222's
    // unstable name, behind an experimental flag.
    for ((name, session), token) in sessions(&people).into_iter().zip(&tokens).take(2) {
        for (room, state) in [&equal, &demoted, &public].into_iter().zip(&states) {
            let told = state_by_sync(session, &room.id, token, &room.before).await;
            assert_eq!(&told, state, "{name}'s sync:\n{}", diff(&told, state));
        }
    }
    let [(equal_a, equal_b), (demoted_a, _), (public_a, public_b)] = &forks[..] else {
        unreachable!("three rooms")
    };

    // What state resolution gives.
    // equal: both power levels pass the checks, so the one applied last stands: b's. In
    // version 11 both senders have power 100 (by the levels before the fork), so they are
    // ordered by timestamp, and b's is the later; in 12, alice, the creator, outranks bob, so
    // hers is applied first.
    let resolved = &states[0];
    let levels = key(LEVELS.0, LEVELS.1);
    assert_eq!(resolved[&levels], levels_b_id, "{}", diff(equal_b, resolved));
    // The kick (a) and the ban (b) pass against the resolved power levels; the old joins
    // they conflict with do not pass again in an invite-only room.
    let dave_key = member(&dave.user_id);
    let carol_key = member(&carol.user_id);
    assert_eq!(resolved[&dave_key], equal_a[&dave_key]);
    assert_eq!(resolved[&carol_key], equal_b[&carol_key]);
    // The invite made on a's side and taken on Synapse's, the name set on a's, the topic set
    // on b's.
    let erin_key = member(&erin.user_id);
    let erin_member = ok(
        syn,
        reqwest::Method::GET,
        &format!("/rooms/{}/state/m.room.member/{}", encode(&equal.id), encode(&erin.user_id)),
        &json!({}),
    )
    .await;
    assert_eq!(erin_member["membership"], "join");
    assert_ne!(resolved[&erin_key], equal_a[&erin_key], "erin's join replaced her invite");
    assert_eq!(resolved[&key("m.room.name", "")], equal_a[&key("m.room.name", "")]);
    assert_eq!(resolved[&key("m.room.topic", "")], equal_b[&key("m.room.topic", "")]);
    // syn's rename, made on Synapse's side only, in every room.
    let syn_key = member(&syn.user_id);
    for (room, state) in [&equal, &demoted, &public].into_iter().zip(&states) {
        assert_ne!(state[&syn_key], room.before[&syn_key], "syn's rename is not in the state");
    }
    // Nothing else changed on either side.
    for (key, id) in &equal.before {
        if equal_a.get(key) == Some(id) && equal_b.get(key) == Some(id) && *key != syn_key {
            assert_eq!(resolved.get(key), Some(id), "{key:?} was not changed on either side");
        }
    }

    // Each server goes by the resolved state: the kicked and the banned may not send, the
    // joined may.
    for (session, room) in [(dave, &equal), (carol, &equal), (dave, &public), (carol, &public)] {
        let path =
            format!("/rooms/{}/send/m.room.message/{}", encode(&room.id), crate::unique("t"));
        let (status, answer) =
            session.put(&path, &json!({"msgtype": "m.text", "body": "no"})).await;
        assert_eq!(status, 403, "{} sent to a room it is out of: {answer}", session.user_id);
    }
    let sent = erin.send_text(&equal.id, "erin, joined").await;
    bob.wait_for_event(&equal.id, WITHIN, |e| e["event_id"] == sent.as_str()).await;
    alice.wait_for_event(&equal.id, WITHIN, |e| e["event_id"] == sent.as_str()).await;

    // demoted: alice (100) outranks bob (90), so her levels are applied first: bob's power is
    // then 0 and every change of his side fails; the room is as a made it.
    let mut expected = demoted_a.clone();
    expected.insert(syn_key.clone(), states[1][&syn_key].clone());
    assert_eq!(states[1], expected, "{}", diff(&expected, &states[1]));

    // public: the kick (a) and the ban (b) pass. dave's join from before the fork, conflicted
    // with the kick, would pass again in a public room, but it is in the kick's auth chain, so
    // it is sorted with the power events, before the kick, which stands.
    let resolved = &states[2];
    assert_eq!(resolved[&dave_key], public_a[&dave_key], "{}", diff(public_a, resolved));
    assert_eq!(resolved[&carol_key], public_b[&carol_key], "{}", diff(public_b, resolved));
}
