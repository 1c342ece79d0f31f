//! Differential property tests with ruma as the oracle: canonical JSON, hashes, event ids,
//! redaction, signatures and the authorization rules must agree.

use std::collections::HashMap;

use matrix_core::{
    KeyRing, Object, Pdu, RoomVersionRules, SigningKey, Value, auth, b64, hash, json, redaction,
    signing,
};
use proptest::prelude::*;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    events::StateEventType,
    room_version_rules::RoomVersionRules as RumaRules,
    signatures::{self as rs, Ed25519KeyPair},
};

fn ruma_rules(id: &str) -> RumaRules {
    ruma::RoomVersionId::try_from(id).expect("known").rules().expect("rules")
}

fn to_ruma(value: &Value) -> CanonicalJsonValue {
    serde_json::from_str(&json::to_canonical_string(value)).expect("ruma parses our output")
}

fn to_ruma_object(object: &Object) -> CanonicalJsonObject {
    match to_ruma(&Value::Object(object.clone())) {
        CanonicalJsonValue::Object(o) => o,
        _ => unreachable!("objects stay objects"),
    }
}

fn ruma_string(object: &CanonicalJsonObject) -> String {
    serde_json::to_string(object).expect("serialises")
}

/// Random strict-JSON values, with the strings that exercise escaping.
fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (json::MIN_SAFE_INT..=json::MAX_SAFE_INT).prop_map(Value::from),
        "(\\PC|[\u{0}-\u{1f}\"\\\\/\u{7f}\u{2028}\u{10000}-\u{10ffff}]){0,12}"
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z_.\u{e9}\u{65e5}\u{1F600}]{0,6}", inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

const ROOM_VERSIONS: [&str; 10] = ["3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

/// Random events of the types whose redaction is special, with the keys that matter.
fn arb_event() -> impl Strategy<Value = Object> {
    let kinds = prop::sample::select(vec![
        "m.room.member",
        "m.room.create",
        "m.room.join_rules",
        "m.room.power_levels",
        "m.room.history_visibility",
        "m.room.redaction",
        "m.room.aliases",
        "m.room.message",
    ]);
    let content_keys = prop::sample::select(vec![
        "membership",
        "join_authorised_via_users_server",
        "creator",
        "room_version",
        "join_rule",
        "allow",
        "ban",
        "events",
        "invite",
        "users",
        "notifications",
        "history_visibility",
        "redacts",
        "aliases",
        "body",
    ]);
    let content = prop::collection::vec((content_keys, arb_value()), 0..6);
    let third_party = prop::option::of(prop::collection::vec(
        (prop::sample::select(vec!["signed", "display_name"]), arb_value()),
        0..3,
    ));
    let extra_top = prop::collection::vec(
        (
            prop::sample::select(vec!["origin", "membership", "prev_state", "unsigned", "foo"]),
            arb_value(),
        ),
        0..3,
    );
    (kinds, content, third_party, extra_top, any::<bool>(), 0..1_000_000i64).prop_map(
        |(kind, content, third_party, extra_top, state, ts)| {
            let mut content: Object = content.into_iter().collect();
            if kind == "m.room.member" {
                // ruma refuses to verify member events without a membership string.
                content.insert("membership", if ts % 2 == 0 { "join" } else { "invite" });
            }
            // ruma also refuses to verify an event with a non-string authorising user (we
            // ignore it when verifying; the authorization rules reject it).
            if content.contains_key("join_authorised_via_users_server") {
                content.insert("join_authorised_via_users_server", "@bob:example.org");
            }
            if let Some(tp) = third_party {
                content.insert("third_party_invite", tp.into_iter().collect::<Object>());
            }
            let mut event: Object = extra_top.into_iter().collect();
            event.insert("type", kind);
            event.insert("content", content);
            event.insert("room_id", "!room:example.org");
            event.insert("sender", "@alice:example.org");
            event.insert("origin_server_ts", ts);
            event.insert("depth", 7);
            event.insert("prev_events", Value::Array(vec!["$prev".into()]));
            event.insert("auth_events", Value::Array(vec!["$a".into(), "$b".into()]));
            event.insert("hashes", [("sha256", "AAAA")].into_iter().collect::<Object>());
            if state {
                event.insert("state_key", "");
            }
            event
        },
    )
}

fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

fn ruma_key(seed: &[u8; 32]) -> Ed25519KeyPair {
    Ed25519KeyPair::from_der(&pkcs8(seed), "1".to_owned()).expect("valid key")
}

fn ruma_public_keys(key: &SigningKey) -> rs::PublicKeyMap {
    let mut set = rs::PublicKeySet::new();
    set.insert(
        "ed25519:1".to_owned(),
        ruma::serde::Base64::new(key.public_key().to_bytes().to_vec()),
    );
    [("example.org".to_owned(), set)].into_iter().collect()
}

/// Whether JSON text holds the number `-0` (a `-0` not followed by more of a number).
fn has_negative_zero(text: &str) -> bool {
    text.match_indices("-0").any(|(at, _)| {
        !text[at + 2..].starts_with(|c: char| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E'))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn canonical_json_matches_ruma(value in arb_value()) {
        let ours = json::to_canonical_string(&value);
        let theirs = serde_json::to_string(&to_ruma(&value)).expect("serialises");
        prop_assert_eq!(&ours, &theirs);
        // And our strict parser reads the canonical form back to the same value.
        prop_assert_eq!(json::parse_strict(ours.as_bytes()).expect("round trip"), value);
    }

    #[test]
    fn parser_agrees_with_ruma_on_arbitrary_text(text in "[\\[\\]{}\",:0-9.eE+\\- a-z\\\\]{0,24}") {
        let ours = json::parse_strict(text.as_bytes());
        let theirs = serde_json::from_str::<CanonicalJsonValue>(&text);
        if let (Ok(ours), Ok(theirs)) = (&ours, &theirs) {
            prop_assert_eq!(json::to_canonical_string(ours), serde_json::to_string(theirs).expect("ser"));
        }
        // ruma (serde_json) keeps the last of duplicate keys where we refuse them; serde_json
        // reads `-0` as a float, which ruma refuses, where we read it as the integer 0, as
        // Synapse (Python's json) does; otherwise the verdicts match.
        if theirs.is_ok() && ours.is_err() {
            prop_assert!(matches!(ours, Err(json::JsonError::DuplicateKey { .. })), "{:?}", ours);
        } else if ours.is_ok() && theirs.is_err() {
            prop_assert!(has_negative_zero(&text), "{:?} where ruma refuses: {:?}", ours, theirs);
        } else {
            prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?}", ours);
        }
    }

    #[test]
    fn hashes_ids_and_redaction_match_ruma(event in arb_event(), version in prop::sample::select(ROOM_VERSIONS.to_vec())) {
        let rules = RoomVersionRules::get(version).expect("known");
        let theirs = to_ruma_object(&event);
        let ruma_rules = ruma_rules(version);

        prop_assert_eq!(b64::encode(hash::content_hash(&event)), rs::content_hash(&theirs).expect("hash").encode());
        let reference = rs::reference_hash(&theirs, &ruma_rules).expect("hash");
        prop_assert_eq!(hash::event_id(&event, rules).expect("id"), format!("${reference}"));

        // A Pdu (which copies members from its canonical bytes) hashes like the object.
        let pdu = Pdu::new_unchecked(event.clone(), rules);
        prop_assert_eq!(hash::content_hash(&pdu), hash::content_hash(&event));
        prop_assert_eq!(hash::reference_hash(&pdu, rules), hash::reference_hash(&event, rules));
        prop_assert_eq!(signing::event_signing_input(&pdu, rules), signing::event_signing_input(&event, rules));
        prop_assert_eq!(pdu.canonical_bytes(), json::to_canonical_vec(&Value::Object(event.clone())));

        let redacted = redaction::redact(&event, rules);
        let ruma_redacted = ruma::canonical_json::redact(theirs, &ruma_rules.redaction, None).expect("redacts");
        prop_assert_eq!(format!("{redacted:?}"), ruma_string(&ruma_redacted));
    }

    #[test]
    fn signatures_match_ruma(event in arb_event(), version in prop::sample::select(ROOM_VERSIONS.to_vec()), seed in any::<[u8; 32]>(), tamper in any::<bool>()) {
        let rules = RoomVersionRules::get(version).expect("known");
        let ruma_rules = ruma_rules(version);
        let key = SigningKey::from_seed("1", &seed);

        // ed25519 is deterministic: both sign to the same bytes.
        let mut ours = event.clone();
        signing::hash_and_sign_event(&mut ours, "example.org", &key, rules);
        let mut theirs = to_ruma_object(&event);
        rs::hash_and_sign_event("example.org", &ruma_key(&seed), &mut theirs, &ruma_rules.redaction).expect("signs");
        prop_assert_eq!(format!("{ours:?}"), ruma_string(&theirs));

        // Same verdicts on the signed event, and on one with a changed signature.
        if tamper {
            let sig = ours.object_entry("signatures").object_entry("example.org");
            let mut bytes = b64::decode(sig.get_str("ed25519:1").expect("signed")).expect("b64");
            bytes[seed[0] as usize % 64] ^= 1 << (seed[1] % 8);
            sig.insert("ed25519:1", b64::encode(bytes));
        }
        let mut keys = KeyRing::new();
        keys.insert("example.org", "ed25519:1", key.public_key());
        let our_verdict = signing::verify_event(&ours, &keys, rules);
        let their_verdict = rs::verify_event(&ruma_public_keys(&key), &to_ruma_object(&ours), &ruma_rules);
        prop_assert_eq!(our_verdict.is_ok(), their_verdict.is_ok(), "{:?} vs {:?}", our_verdict, their_verdict);
        // Third-party invites need no signature from the sender's server (as in Synapse), so
        // a tampered one only fails where some signature is required.
        let required = signing::required_signers(&ours, rules).expect("signers");
        prop_assert_eq!(our_verdict.is_ok(), !tamper || required.is_empty());
        let pdu = Pdu::new_unchecked(ours.clone(), rules);
        prop_assert_eq!(signing::verify_event(&pdu, &keys, rules), our_verdict.clone());
        // Batch verification agrees with one-by-one verification.
        let batch = signing::verify_events_batch(&[&ours, &ours], &keys, rules);
        prop_assert!(batch.iter().all(|r| r.is_ok() == our_verdict.is_ok()));
    }
}

// ---------------------------------------------------------------------------------------------
// Authorization rules against ruma-state-res (room versions 6-12).

/// Events as ruma-state-res reads them (shared with the benchmarks).
use benches::ruma_stateres::RumaPdu as RumaEvent;

const USERS: [&str; 4] =
    ["@alice:example.org", "@bob:example.org", "@carol:other.example", "@dave:other.example"];

fn pdu(
    rules: &'static RoomVersionRules,
    id: &str,
    room_id: Option<&str>,
    json_text: String,
) -> Pdu {
    let mut object = json::parse_strict(json_text.as_bytes())
        .expect("json")
        .as_object()
        .cloned()
        .expect("object");
    if let Some(room_id) = room_id {
        object.insert("room_id", room_id);
    }
    // Every server "signed" (auth only checks presence; verification is separate).
    object.insert(
        "signatures",
        json::parse_strict(
            br#"{"example.org":{"ed25519:1":"x"},"other.example":{"ed25519:1":"x"}}"#,
        )
        .expect("json"),
    );
    Pdu::with_event_id(object, id.to_owned(), rules)
}

/// Users' levels, named levels (ban, kick, invite, state_default, events_default), and the
/// level of `m.room.name`.
type Levels = (Vec<i64>, Vec<Option<i64>>, Option<i64>);

#[derive(Debug, Clone)]
struct AuthCase {
    memberships: Vec<Option<&'static str>>,
    levels: Option<Levels>,
    join_rule: Option<&'static str>,
    additional_creator: bool,
    event_kind: usize,
    sender: usize,
    target: usize,
    membership: &'static str,
    via: Option<usize>,
    new_levels: Levels,
}

fn arb_levels() -> impl Strategy<Value = Levels> {
    let level = prop::sample::select(vec![0i64, 10, 50, 100]);
    (
        prop::collection::vec(level.clone(), 4),
        prop::collection::vec(prop::option::of(level.clone()), 5),
        prop::option::of(level),
    )
}

fn arb_auth_case() -> impl Strategy<Value = AuthCase> {
    let membership = prop::sample::select(vec!["join", "invite", "leave", "ban", "knock"]);
    (
        prop::collection::vec(
            prop_oneof![3 => Just(Some("join")), 1 => prop::option::of(membership.clone())],
            4,
        ),
        prop::option::of(arb_levels()),
        prop::option::of(prop::sample::select(vec![
            "public",
            "invite",
            "knock",
            "restricted",
            "knock_restricted",
            "private",
        ])),
        any::<bool>(),
        0..5usize,
        (0..4usize, 0..4usize, membership, prop::option::of(0..4usize)),
        arb_levels(),
    )
        .prop_map(
            |(
                memberships,
                levels,
                join_rule,
                additional_creator,
                event_kind,
                (sender, target, membership, via),
                new_levels,
            )| AuthCase {
                memberships,
                levels,
                join_rule,
                additional_creator,
                event_kind,
                sender,
                target,
                membership,
                via,
                new_levels,
            },
        )
}

fn levels_json((users, named, event_level): &Levels, skip_creators: &[&str]) -> String {
    let users: Vec<String> = USERS
        .iter()
        .zip(users)
        .filter(|(u, _)| !skip_creators.contains(u))
        .map(|(u, l)| format!("\"{u}\":{l}"))
        .collect();
    let names = ["ban", "kick", "invite", "state_default", "events_default"];
    let named: Vec<String> =
        names.iter().zip(named).filter_map(|(n, l)| l.map(|l| format!("\"{n}\":{l}"))).collect();
    let events =
        event_level.map(|l| format!("\"events\":{{\"m.room.name\":{l}}},")).unwrap_or_default();
    let named = if named.is_empty() { String::new() } else { format!("{},", named.join(",")) };
    format!("{{{events}{named}\"users\":{{{}}}}}", users.join(","))
}

fn run_auth_case(
    version: &'static str,
    case: &AuthCase,
) -> (Result<(), auth::AuthRejection>, Result<(), String>) {
    let rules = RoomVersionRules::get(version).expect("known");
    let v12 = rules.room_id_from_create_event;
    let alice = USERS[0];
    let creators: Vec<&str> =
        if v12 && case.additional_creator { vec![alice, USERS[1]] } else { vec![alice] };
    let extra = if v12 && case.additional_creator {
        format!(",\"additional_creators\":[\"{}\"]", USERS[1])
    } else {
        String::new()
    };
    let creator = if rules.auth.creator_is_sender {
        String::new()
    } else {
        format!(",\"creator\":\"{alice}\"")
    };
    let create_id = "$create";
    let room_id = if v12 { "!create".to_owned() } else { "!room:example.org".to_owned() };
    let create_room = (!v12).then_some(room_id.as_str());
    let room = Some(room_id.as_str());
    let base = |kind: &str, sender: &str, state_key: &str, content: &str, prev: &str| {
        format!(
            r#"{{"type":"{kind}","sender":"{sender}","state_key":"{state_key}","content":{content},"prev_events":["{prev}"],"auth_events":[],"depth":2,"origin_server_ts":1,"hashes":{{"sha256":"x"}}}}"#
        )
    };
    let create = pdu(
        rules,
        create_id,
        create_room,
        format!(
            r#"{{"type":"m.room.create","sender":"{alice}","state_key":"","content":{{"room_version":"{version}"{creator}{extra}}},"prev_events":[],"auth_events":[],"depth":1,"origin_server_ts":1,"hashes":{{"sha256":"x"}}}}"#
        ),
    );
    let mut state: HashMap<(String, String), Pdu> = HashMap::new();
    state.insert(("m.room.create".into(), String::new()), create);
    for (i, membership) in case.memberships.iter().enumerate() {
        if let Some(m) = membership {
            let e = pdu(
                rules,
                &format!("$m{i}"),
                room,
                base(
                    "m.room.member",
                    USERS[i],
                    USERS[i],
                    &format!(r#"{{"membership":"{m}"}}"#),
                    "$x",
                ),
            );
            state.insert(("m.room.member".into(), USERS[i].into()), e);
        }
    }
    let skip: &[&str] = if v12 { &creators } else { &[] };
    if let Some(levels) = &case.levels {
        let e = pdu(
            rules,
            "$pl",
            room,
            base("m.room.power_levels", alice, "", &levels_json(levels, skip), "$x"),
        );
        state.insert(("m.room.power_levels".into(), String::new()), e);
    }
    if let Some(rule) = case.join_rule {
        let content = format!(
            r#"{{"join_rule":"{rule}","allow":[{{"type":"m.room_membership","room_id":"!other:example.org"}}]}}"#
        );
        let e = pdu(rules, "$jr", room, base("m.room.join_rules", alice, "", &content, "$x"));
        state.insert(("m.room.join_rules".into(), String::new()), e);
    }

    let sender = USERS[case.sender];
    let event = match case.event_kind {
        0 | 1 => {
            let via = case
                .via
                .map(|v| format!(r#","join_authorised_via_users_server":"{}""#, USERS[v]))
                .unwrap_or_default();
            let target = if case.event_kind == 0 { sender } else { USERS[case.target] };
            base(
                "m.room.member",
                sender,
                target,
                &format!(r#"{{"membership":"{}"{via}}}"#, case.membership),
                "$x",
            )
        }
        2 => base("m.room.power_levels", sender, "", &levels_json(&case.new_levels, &[]), "$x"),
        3 => base("m.room.name", sender, "", r#"{"name":"n"}"#, "$x"),
        _ => base("m.room.topic", sender, USERS[case.target], r#"{"topic":"t"}"#, "$x"),
    };
    let event = pdu(rules, "$event", room, event);

    let ours = auth::check(rules, &event, &state);
    let ruma_state: HashMap<(StateEventType, String), RumaEvent> = state
        .iter()
        .map(|((k, s), e)| ((k.as_str().into(), s.clone()), RumaEvent::new(e)))
        .collect();
    let theirs = ruma::state_res::check_state_dependent_auth_rules(
        &ruma_rules(version).authorization,
        RumaEvent::new(&event),
        |kind: &StateEventType, key: &str| ruma_state.get(&(kind.clone(), key.to_owned())),
    );
    (ours, theirs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn auth_rules_match_ruma(case in arb_auth_case(), version in prop::sample::select(vec!["6", "7", "8", "9", "10", "11", "12"])) {
        // Without an m.room.join_rules event, ruma rejects every join; we take the join rule to
        // be `invite`, as Synapse does (see `join_without_join_rules_event_is_invite_only`).
        prop_assume!(case.join_rule.is_some() || case.event_kind > 1 || case.membership != "join");
        let (ours, theirs) = run_auth_case(version, &case);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "v{} ours {:?} ruma {:?} case {:?}", version, ours, theirs, case);
    }
}

#[test]
fn join_without_join_rules_event_is_invite_only() {
    let mut case = AuthCase {
        memberships: vec![Some("join"), None, Some("join"), None],
        levels: None,
        join_rule: None,
        additional_creator: false,
        event_kind: 0,
        sender: 2,
        target: 2,
        membership: "join",
        via: None,
        new_levels: (vec![0; 4], vec![None; 5], None),
    };
    // Already joined: allowed (ruma rejects: it requires a join rules event).
    assert_eq!(run_auth_case("11", &case).0, Ok(()));
    // Not invited: rejected as in an invite-only room.
    case.memberships[2] = None;
    assert_eq!(run_auth_case("11", &case).0, Err(auth::AuthRejection::JoinNotInvited));
}

/// The random auth cases are worth comparing: both verdicts are common.
#[test]
fn auth_cases_cover_accepts_and_rejects() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..500 {
        let case = arb_auth_case().new_tree(&mut runner).expect("case").current();
        match run_auth_case("12", &case).1 {
            Ok(()) => accepted += 1,
            Err(_) => rejected += 1,
        }
    }
    assert!(accepted > 75 && rejected > 75, "accepted {accepted}, rejected {rejected}");
}
