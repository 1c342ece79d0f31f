//! The bodies of the fuzz targets, shared by `cargo fuzz` (fuzz_targets/) and by the tests that
//! replay each target's committed corpus on stable (`cargo test` in this directory).
//!
//! Each body only asserts properties that must hold for every input: no panic, and round trips.

use matrix_core::json::{self, Value};
use matrix_core::{KeyRing, Pdu, PublicKey, RoomVersionRules, SigningKey, auth, signing, xmatrix};

/// Picks a room version from a byte.
fn rules_for(byte: u8) -> &'static RoomVersionRules {
    RoomVersionRules::ALL[usize::from(byte) % RoomVersionRules::ALL.len()]
}

/// Canonical JSON: whatever parses re-serialises to a fixed point, in both modes.
pub fn canonical_json(data: &[u8]) {
    for strict in [true, false] {
        let parsed = if strict { json::parse_strict(data) } else { json::parse_lenient(data) };
        if let Ok(value) = parsed {
            let canonical = json::to_canonical_vec(&value);
            let again = if strict {
                json::parse_strict(&canonical)
            } else {
                json::parse_lenient(&canonical)
            };
            let again = again.expect("canonical output parses");
            assert_eq!(again, value, "round trip changes the value");
            assert_eq!(
                json::to_canonical_vec(&again),
                canonical,
                "canonical form is not a fixed point"
            );
        }
    }
}

/// PDU parsing in every room version, plus hashing and redaction of what parses.
pub fn pdu_parse(data: &[u8]) {
    let Some((&version, bytes)) = data.split_first() else { return };
    let rules = rules_for(version);
    if let Ok(pdu) = Pdu::from_slice(bytes, rules) {
        let _ = matrix_core::hash::content_hash(pdu.json());
        let redacted = matrix_core::redaction::redact(pdu.json(), rules);
        // The reference hash is the same whether computed from the event or its redaction.
        assert_eq!(
            matrix_core::hash::reference_hash(pdu.json(), rules),
            matrix_core::hash::reference_hash(&redacted, rules)
        );
    }
}

/// X-Matrix header parsing; what parses re-formats to a header that parses to the same value.
pub fn xmatrix_header(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(header) = xmatrix::XMatrix::parse(text) {
        let again = xmatrix::XMatrix::parse(&header.to_header_value()).expect("own output parses");
        assert_eq!(again, header);
    }
}

/// Signature verification of arbitrary JSON with an arbitrary public key, and of a document
/// signed here (which must verify).
pub fn verify_signature(data: &[u8]) {
    let Some((key_bytes, rest)) = data.split_first_chunk::<32>() else { return };
    let Some((&version, body)) = rest.split_first() else { return };
    let rules = rules_for(version);
    let Ok(Value::Object(mut object)) = json::parse_lenient(body) else { return };
    let mut keys = KeyRing::new();
    if let Ok(key) = PublicKey::from_bytes(key_bytes) {
        keys.insert("example.org", "ed25519:1", key);
    }
    let _ = signing::verify_json(&object, "example.org", &keys);
    let _ = signing::verify_event(&object, &keys, rules);
    let _ = signing::verify_events_batch(&[&object, &object], &keys, rules);

    let signer = SigningKey::from_seed("1", key_bytes);
    let mut signer_keys = KeyRing::new();
    signer_keys.insert("example.org", "ed25519:1", signer.public_key());
    signing::sign_json(&mut object, "example.org", &signer);
    signing::verify_json(&object, "example.org", &signer_keys).expect("own signature verifies");
}

/// The authorization rules on arbitrary events: the input is a JSON array whose first element
/// is the event and the rest its state, checked in the room version the first byte picks.
pub fn auth_check(data: &[u8]) {
    let Some((&version, body)) = data.split_first() else { return };
    let rules = rules_for(version);
    let Ok(Value::Array(items)) = json::parse_lenient(body) else { return };
    let events: Vec<Pdu> = items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| match item {
            Value::Object(object) => Some(Pdu::with_event_id(object, format!("$e{i}"), rules)),
            _ => None,
        })
        .collect();
    let Some((event, state)) = events.split_first() else { return };
    let state_refs: Vec<&Pdu> = state.iter().collect();
    let _ = auth::check(rules, event, &auth::EventList(state_refs.clone()));
    let _ = auth::check_auth_events(rules, event, &state_refs);
    let _ = auth::auth_types_for_event(rules, event);
}

/// State resolution on arbitrary small DAGs (cycles, missing and rejected-looking auth events,
/// events from nowhere): never a panic or an endless loop, and the result does not depend on
/// the order of the state sets or of the events within them.
///
/// Input: byte 0 picks the room version; then 4 bytes per event (kind, sender, state key and
/// membership, auth event bits); then one byte per event saying which of 3 state sets holds it.
pub fn stateres(data: &[u8]) {
    use std::collections::HashMap;

    let Some((&version, rest)) = data.split_first() else { return };
    let rules = rules_for(version);
    let count = (rest.len() / 5).min(24);
    let (specs, membership) = rest.split_at(count * 4);
    let kinds = [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.topic",
    ];
    let users = ["@a:x", "@b:x", "@c:y", "@d:z"];
    let memberships = ["join", "leave", "ban", "invite", "knock"];
    let ids: Vec<String> = (0..count).map(|i| format!("$e{i}")).collect();
    let room_id =
        if rules.room_id_from_create_event { "!e0".to_owned() } else { "!r:x".to_owned() };
    let mut events: HashMap<String, Pdu> = HashMap::new();
    for (i, spec) in specs.chunks_exact(4).enumerate() {
        let kind = kinds[usize::from(spec[0]) % kinds.len()];
        let sender = users[usize::from(spec[1]) % users.len()];
        let mut object = json::Object::new();
        object.insert("type", kind);
        object.insert("sender", sender);
        let state_key = match kind {
            "m.room.member" => users[usize::from(spec[2] >> 4) % users.len()],
            _ => "",
        };
        object.insert("state_key", state_key);
        let mut content = json::Object::new();
        content.insert("membership", memberships[usize::from(spec[2] & 7) % memberships.len()]);
        content.insert("join_rule", if spec[2] & 8 == 0 { "public" } else { "invite" });
        let mut users_levels = json::Object::new();
        users_levels.insert(sender, i64::from(spec[3] % 3) * 50);
        content.insert("users", users_levels);
        content.insert("room_version", rules.id);
        content.insert("creator", "@a:x");
        object.insert("content", content);
        if !(i == 0 && rules.room_id_from_create_event) {
            object.insert("room_id", room_id.as_str());
        }
        object.insert("origin_server_ts", i64::from(spec[3]));
        object.insert("depth", i as i64);
        // Auth events: any earlier or later event (cycles), or one that does not exist.
        let auth: Vec<Value> = (0..8)
            .filter(|bit| spec[3] & (1 << bit) != 0)
            .map(|bit| Value::from(format!("$e{}", (i + bit * 3) % (count + 2))))
            .collect();
        object.insert("auth_events", Value::Array(auth));
        object.insert("prev_events", Value::Array(Vec::new()));
        events.insert(ids[i].clone(), Pdu::with_event_id(object, ids[i].clone(), rules));
    }
    let pick = |set: usize, reverse: bool| -> Vec<&str> {
        let mut chosen: Vec<&str> = (0..count)
            .filter(|&i| membership.get(i).is_some_and(|m| m & (1 << set) != 0))
            .map(|i| ids[i].as_str())
            .collect();
        if reverse {
            chosen.reverse();
        }
        chosen
    };
    let sets = |reverse: bool| -> Option<Vec<matrix_stateres::StateMap<'_>>> {
        let mut maps = Vec::new();
        for set in 0..3 {
            // A list naming two events for one key is not a state map: skip such inputs.
            maps.push(matrix_stateres::state_map_from_ids(&pick(set, reverse), &events).ok()?);
        }
        if reverse {
            maps.reverse();
        }
        Some(maps)
    };
    let (Some(forward), Some(backward)) = (sets(false), sets(true)) else { return };
    // The same events as lean events (interned ids, auth chains as a chain cover).
    let mut builder = matrix_stateres::lean::LeanRoom::builder(rules);
    for id in &ids {
        builder.push_pdu(&events[id]).expect("distinct ids");
    }
    let lean = builder.build();
    let lean_sets = |reverse: bool| -> Vec<Vec<u32>> {
        let mut sets: Vec<Vec<u32>> = (0..3)
            .map(|set| pick(set, reverse).iter().filter_map(|id| lean.index(id)).collect())
            .collect();
        if reverse {
            sets.reverse();
        }
        sets
    };
    for algorithm in [None, Some(matrix_core::room_version::StateResAlgorithm::V2)] {
        let options = matrix_stateres::ResolveOptions { algorithm, ..Default::default() };
        let a = matrix_stateres::resolve_with(rules, &forward, &events, options);
        let b = matrix_stateres::resolve_with(rules, &backward, &events, options);
        let lean_a = lean.resolve(&lean_sets(false), algorithm);
        let lean_b = lean.resolve(&lean_sets(true), algorithm);
        let rows = |state: &[u32]| {
            let mut rows: Vec<(&str, &str, &str)> = state
                .iter()
                .filter_map(|&ix| lean.event(ix))
                .map(|e| (e.kind(), e.state_key().unwrap_or_default(), e.event_id()))
                .collect();
            rows.sort_unstable();
            rows
        };
        match (&lean_a, &lean_b) {
            (Ok(x), Ok(y)) => assert_eq!(rows(x), rows(y), "lean: the order changed the result"),
            (Err(_), Err(_)) => {}
            (x, y) => panic!("lean: only one order failed: {x:?} / {y:?}"),
        }
        if let (Ok(generic), Ok(lean_state)) = (&a, &lean_a) {
            let mut generic: Vec<(&str, &str, &str)> =
                generic.iter().map(|(&(k, s), &id)| (k, s, id)).collect();
            generic.sort_unstable();
            assert_eq!(generic, rows(lean_state), "lean and generic resolution differ");
        }
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "the order of the state sets changed the result"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("only one order failed: {a:?} / {b:?}"),
        }
    }
}

#[cfg(test)]
mod replay {
    use std::path::Path;

    fn replay(target: &str, body: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            let data = std::fs::read(&path).expect("readable corpus file");
            body(&data);
            count += 1;
        }
        assert!(count > 0, "no corpus for {target}");
        println!("{target}: replayed {count} inputs");
    }

    #[test]
    fn canonical_json() {
        replay("canonical_json", super::canonical_json);
    }
    #[test]
    fn pdu_parse() {
        replay("pdu_parse", super::pdu_parse);
    }
    #[test]
    fn xmatrix_header() {
        replay("xmatrix_header", super::xmatrix_header);
    }
    #[test]
    fn verify_signature() {
        replay("verify_signature", super::verify_signature);
    }
    #[test]
    fn auth_check() {
        replay("auth_check", super::auth_check);
    }
    #[test]
    fn stateres() {
        replay("stateres", super::stateres);
    }
}
