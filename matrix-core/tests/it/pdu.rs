//! PDU format checks.

use matrix_core::{Object, Pdu, PduError, RoomVersionRules, Value, json, pdu::MAX_PDU_BYTES};

fn base(rules: &RoomVersionRules) -> Object {
    let text = if rules.event_format == matrix_core::room_version::EventFormat::V1 {
        r#"{"event_id":"$e:example.org","type":"m.room.message","room_id":"!r:example.org","sender":"@a:example.org","content":{"body":"x"},"origin_server_ts":1,"depth":3,"prev_events":[["$p:example.org",{"sha256":"x"}]],"auth_events":[["$c:example.org",{"sha256":"x"}]],"hashes":{"sha256":"x"},"signatures":{"example.org":{"ed25519:1":"x"}}}"#
    } else {
        r#"{"type":"m.room.message","room_id":"!r:example.org","sender":"@a:example.org","content":{"body":"x"},"origin_server_ts":1,"depth":3,"prev_events":["$p"],"auth_events":["$c"],"hashes":{"sha256":"x"},"signatures":{"example.org":{"ed25519:1":"x"}}}"#
    };
    json::parse_strict(text.as_bytes()).expect("json").as_object().cloned().expect("object")
}

#[test]
fn valid_events_pass_in_every_version() {
    for rules in RoomVersionRules::ALL {
        let pdu =
            Pdu::from_object(base(rules), rules).unwrap_or_else(|e| panic!("v{}: {e}", rules.id));
        assert_eq!(pdu.kind(), "m.room.message");
        assert_eq!(pdu.prev_events().collect::<Vec<_>>().len(), 1);
    }
}

#[test]
fn format_errors_are_named() {
    let rules = &RoomVersionRules::V11;
    type Edit = fn(&mut Object);
    let cases: [(Edit, PduError); 10] = [
        (
            |e| {
                e.remove("sender");
            },
            PduError::MissingField("sender"),
        ),
        (
            |e| {
                e.insert("sender", "alice");
            },
            PduError::InvalidId { field: "sender", kind: "user ID" },
        ),
        (
            |e| {
                e.insert("type", "t".repeat(256));
            },
            PduError::TooLong("type"),
        ),
        (
            |e| {
                e.insert("state_key", "k".repeat(256));
            },
            PduError::TooLong("state_key"),
        ),
        (
            |e| {
                e.insert("content", "text");
            },
            PduError::WrongType { field: "content", expected: "an object" },
        ),
        (
            |e| {
                e.insert("depth", -1);
            },
            PduError::DepthOutOfRange,
        ),
        (
            |e| {
                e.insert("prev_events", Value::Array(vec!["$x".into(); 21]));
            },
            PduError::TooManyEdges { field: "prev_events", count: 21, max: 20 },
        ),
        (
            |e| {
                e.insert("auth_events", Value::Array(vec![Value::from(1)]));
            },
            PduError::WrongType { field: "auth_events", expected: "a list of event ids" },
        ),
        (
            |e| {
                e.insert("hashes", Object::new());
            },
            PduError::WrongType { field: "hashes", expected: "{\"sha256\": string}" },
        ),
        (
            |e| {
                e.object_entry("content").insert("body", "x".repeat(MAX_PDU_BYTES));
            },
            PduError::TooLarge { size: MAX_PDU_BYTES + 244 },
        ),
    ];
    for (edit, expected) in cases {
        let mut event = base(rules);
        edit(&mut event);
        assert_eq!(Pdu::from_object(event, rules).err(), Some(expected.clone()), "{expected}");
    }
}

#[test]
fn version_specific_formats() {
    // v12 create events have no room_id; the room id is derived from the event id.
    let mut create = base(&RoomVersionRules::V12);
    create.insert("type", "m.room.create");
    create.insert("state_key", "");
    assert_eq!(
        Pdu::from_object(create.clone(), &RoomVersionRules::V12).err(),
        Some(PduError::CreateWithRoomId)
    );
    create.remove("room_id");
    let pdu = Pdu::from_object(create.clone(), &RoomVersionRules::V12).expect("valid v12 create");
    assert_eq!(pdu.room_id(), format!("!{}", &pdu.event_id()[1..]));
    assert_eq!(
        Pdu::from_object(create, &RoomVersionRules::V11).err(),
        Some(PduError::MissingField("room_id"))
    );
    // v1-2 need event_id and [id, hashes] pairs.
    let mut v1 = base(&RoomVersionRules::V1);
    v1.remove("event_id");
    assert_eq!(
        Pdu::from_object(v1, &RoomVersionRules::V1).err(),
        Some(PduError::MissingField("event_id"))
    );
    assert!(Pdu::from_object(base(&RoomVersionRules::V3), &RoomVersionRules::V1).is_err());
    // Floats are format errors from v6 on, fine before.
    let text = r#"{"type":"m.room.message","room_id":"!r:example.org","sender":"@a:example.org","content":{"n":1.5},"origin_server_ts":1,"depth":3,"prev_events":[],"auth_events":[],"hashes":{"sha256":"x"},"signatures":{}}"#;
    assert!(Pdu::from_slice(text.as_bytes(), &RoomVersionRules::V5).is_ok());
    assert!(matches!(
        Pdu::from_slice(text.as_bytes(), &RoomVersionRules::V6),
        Err(PduError::Json(_))
    ));
    assert_eq!(Pdu::from_slice(b"[]", &RoomVersionRules::V6).err(), Some(PduError::NotAnObject));
}
