//! State resolution v1 (room version 1), on hand-made rooms whose answers follow from the
//! algorithm as the spec states it and Synapse implements it.

use std::collections::HashMap;

use matrix_core::{Pdu, RoomVersionRules, json};
use matrix_stateres::{resolve, state_map_from_ids};

const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";

/// `(event_id, type, sender, content, depth, auth_events)`; members are their sender's.
type Spec = (&'static str, &'static str, &'static str, &'static str, i64, &'static [&'static str]);

fn room(extra: &[Spec]) -> HashMap<String, Pdu> {
    let rules = &RoomVersionRules::V1;
    let mut events = HashMap::new();
    let base: [Spec; 4] = [
        (
            "$create:example.org",
            "m.room.create",
            ALICE,
            r#"{"creator":"@alice:example.org"}"#,
            1,
            &[],
        ),
        (
            "$alice:example.org",
            "m.room.member",
            ALICE,
            r#"{"membership":"join"}"#,
            2,
            &["$create:example.org"],
        ),
        (
            "$pl:example.org",
            "m.room.power_levels",
            ALICE,
            r#"{"users":{"@alice:example.org":100,"@bob:example.org":50}}"#,
            3,
            &["$create:example.org", "$alice:example.org"],
        ),
        (
            "$bob:example.org",
            "m.room.member",
            BOB,
            r#"{"membership":"join"}"#,
            4,
            &["$create:example.org", "$pl:example.org"],
        ),
    ];
    for (id, kind, sender, content, depth, auth) in base.iter().chain(extra) {
        let state_key = match *kind {
            "m.room.member" => *sender,
            _ => "",
        };
        let auth: Vec<String> =
            auth.iter().map(|a| format!(r#"["{a}",{{"sha256":"x"}}]"#)).collect();
        let text = format!(
            r#"{{"event_id":"{id}","room_id":"!r:example.org","type":"{kind}","sender":"{sender}","state_key":"{state_key}","content":{content},"depth":{depth},"origin_server_ts":{depth},"prev_events":[],"auth_events":[{}],"hashes":{{"sha256":"x"}},"signatures":{{}}}}"#,
            auth.join(",")
        );
        let object = json::parse_strict(text.as_bytes())
            .expect("json")
            .as_object()
            .cloned()
            .expect("object");
        events.insert((*id).to_owned(), Pdu::with_event_id(object, (*id).to_owned(), rules));
    }
    events
}

fn resolved(events: &HashMap<String, Pdu>, sets: &[&[&str]]) -> HashMap<(String, String), String> {
    let maps: Vec<_> =
        sets.iter().map(|ids| state_map_from_ids(ids, events).expect("state")).collect();
    resolve(&RoomVersionRules::V1, &maps, events)
        .expect("resolves")
        .into_iter()
        .map(|((k, s), id)| ((k.to_owned(), s.to_owned()), id.to_owned()))
        .collect()
}

const BASE: [&str; 4] =
    ["$create:example.org", "$alice:example.org", "$pl:example.org", "$bob:example.org"];
const AUTH: &[&str] = &["$create:example.org", "$pl:example.org", "$alice:example.org"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    BASE.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn other_events_take_the_deepest_allowed_candidate() {
    let events = room(&[
        ("$t1:example.org", "m.room.topic", ALICE, r#"{"topic":"a"}"#, 5, AUTH),
        ("$t2:example.org", "m.room.topic", ALICE, r#"{"topic":"b"}"#, 6, AUTH),
        // Deepest, but a stranger's: the rules refuse it.
        ("$t3:example.org", "m.room.topic", "@eve:example.org", r#"{"topic":"c"}"#, 7, AUTH),
    ]);
    let state = resolved(&events, &[&with(&["$t1:example.org"]), &with(&["$t2:example.org"])]);
    assert_eq!(state[&("m.room.topic".into(), String::new())], "$t2:example.org");
    let state = resolved(&events, &[&with(&["$t1:example.org"]), &with(&["$t3:example.org"])]);
    assert_eq!(state[&("m.room.topic".into(), String::new())], "$t1:example.org");
}

#[test]
fn power_levels_replay_from_the_shallowest_and_stop_at_the_first_refusal() {
    let events = room(&[
        // Bob (50) may not give himself 100 on top of the original power levels.
        (
            "$pl_bob:example.org",
            "m.room.power_levels",
            BOB,
            r#"{"users":{"@alice:example.org":100,"@bob:example.org":100}}"#,
            5,
            &["$create:example.org", "$pl:example.org", "$bob:example.org"],
        ),
        (
            "$pl_alice:example.org",
            "m.room.power_levels",
            ALICE,
            r#"{"users":{"@alice:example.org":100}}"#,
            6,
            AUTH,
        ),
    ]);
    // Replayed shallowest first: $pl, then Bob's change is refused: $pl stays.
    let state =
        resolved(&events, &[&BASE, &[&BASE[..2], &["$pl_bob:example.org", BASE[3]]].concat()]);
    assert_eq!(state[&("m.room.power_levels".into(), String::new())], "$pl:example.org");
    // Alice's later change is allowed on top of $pl.
    let state =
        resolved(&events, &[&BASE, &[&BASE[..2], &["$pl_alice:example.org", BASE[3]]].concat()]);
    assert_eq!(state[&("m.room.power_levels".into(), String::new())], "$pl_alice:example.org");
}

#[test]
fn a_key_missing_from_a_set_is_not_a_conflict() {
    let events = room(&[("$t1:example.org", "m.room.topic", ALICE, r#"{"topic":"a"}"#, 5, AUTH)]);
    let state = resolved(&events, &[&with(&["$t1:example.org"]), &BASE]);
    assert_eq!(state[&("m.room.topic".into(), String::new())], "$t1:example.org");
    assert_eq!(state.len(), 5);
}
