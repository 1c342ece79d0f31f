//! Shared inputs of the benchmarks: realistic events and rooms, keys, and ruma's side of each
//! comparison.

pub mod rooms;
pub mod ruma_stateres;
pub mod stored_room;

pub mod events {
    use base64::Engine as _;
    use matrix_core::{Object, RoomVersionRules, SigningKey, Value, json, signing};
    use ruma::canonical_json::RedactingSerializer;
    use ruma::signatures as rs;
    use ruma::{CanonicalJsonObject, CanonicalJsonValue};
    use sha2::{Digest, Sha256};

    /// A benchmark input in both representations.
    #[derive(Debug)]
    pub struct Event {
        /// The group name.
        pub name: &'static str,
        /// Our value.
        pub ours: Value,
        /// ruma's value.
        pub theirs: CanonicalJsonValue,
        /// Whether it fits in a PDU (and is signed as an event rather than as JSON).
        pub is_pdu: bool,
    }

    fn from_text(name: &'static str, text: &str) -> Event {
        let ours = json::parse_strict(text.as_bytes()).expect("valid JSON");
        let theirs: CanonicalJsonValue = serde_json::from_str(text).expect("valid JSON");
        let is_pdu = text.len() <= matrix_core::pdu::MAX_PDU_BYTES;
        Event { name, ours, theirs, is_pdu }
    }

    /// A signed `m.room.message` event of about 1 KB, as received over federation.
    pub fn message_1k() -> Event {
        from_text("message_1k", &message_text(0))
    }

    fn message_text(n: usize) -> String {
        let body = format!(
            "Message {n}: the quick brown fox jumps over the lazy dog, ünïcödé and emoji 🎉, \
             with a link to https://example.org/some/page?query=1 and a little more text to \
             make it a realistic paragraph of a chat message that somebody typed."
        );
        format!(
            r#"{{"auth_events":["$Gh7lL7hWZN3cHGm5n8yQz3TfbXI5VP4f_kqrLPj3X3o","$nPSMJaGzOtLsG7O9c3TbJUVw0DYeJQbQKi4zcXBuNiw","$0Zob2ZLwo9dHQn6dhVYu5ipJ9OOnmsRMdUsmX4dWxQk"],"content":{{"body":"{body}","format":"org.matrix.custom.html","formatted_body":"<p>{body}</p>","m.mentions":{{"user_ids":["@bob:example.org"]}},"msgtype":"m.text"}},"depth":{depth},"hashes":{{"sha256":"kLT2k0IbHvJuvLKgm8dWCX5SBzSzHsN1sPGgIgxl03s"}},"origin_server_ts":1700000000{n:03},"prev_events":["$vzrl5rTEtr8DmDHqbyIsKdgI6zdrtAZQzc0GlFz7Yfk"],"room_id":"!aBcDeFgHiJkLmNoPqR:example.org","sender":"@alice:example.org","signatures":{{"example.org":{{"ed25519:a_Zx9Q":"ZtHCD8FiGD0jtvvYTFhnZhwRvyKAZtHMNpwcOaELmjuY5vETTLT/LYjoe6tJQqHSCg37NZXWaWIWE8pHKJ9VCw"}}}},"type":"m.room.message","unsigned":{{"age_ts":1700000000000}}}}"#,
            depth = 1000 + n
        )
    }

    /// The `m.room.power_levels` event of a room where `members` users have a power level.
    pub fn power_levels(name: &'static str, members: usize) -> Event {
        let users: Vec<String> = (0..members)
            .map(|i| format!(r#""@user{i}:server{}.example.org":{}"#, i % 100, [0, 50, 100][i % 3]))
            .collect();
        let text = format!(
            r#"{{"auth_events":["$Gh7lL7hWZN3cHGm5n8yQz3TfbXI5VP4f_kqrLPj3X3o"],"content":{{"ban":50,"events":{{"m.room.avatar":50,"m.room.canonical_alias":50,"m.room.encryption":100,"m.room.history_visibility":100,"m.room.name":50,"m.room.power_levels":100,"m.room.server_acl":100,"m.room.tombstone":100}},"events_default":0,"invite":0,"kick":50,"notifications":{{"room":50}},"redact":50,"state_default":50,"users":{{{}}},"users_default":0}},"depth":12345,"hashes":{{"sha256":"kLT2k0IbHvJuvLKgm8dWCX5SBzSzHsN1sPGgIgxl03s"}},"origin_server_ts":1700000000000,"prev_events":["$vzrl5rTEtr8DmDHqbyIsKdgI6zdrtAZQzc0GlFz7Yfk"],"room_id":"!aBcDeFgHiJkLmNoPqR:example.org","sender":"@alice:example.org","signatures":{{}},"state_key":"","type":"m.room.power_levels"}}"#,
            users.join(",")
        );
        from_text(name, &text)
    }

    const SEED: [u8; 32] = [0x5a; 32];

    /// Our signing key for the benchmarks.
    pub fn signing_key() -> SigningKey {
        SigningKey::from_seed("1", &SEED)
    }

    /// The same key as ruma's key pair (from a PKCS#8 v1 document).
    pub fn ruma_signing_key() -> rs::Ed25519KeyPair {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&SEED);
        rs::Ed25519KeyPair::from_der(&der, "1".to_owned()).expect("valid key")
    }

    /// ruma's public key map holding our key.
    pub fn ruma_public_keys(key: &SigningKey) -> rs::PublicKeyMap {
        let mut set = rs::PublicKeySet::new();
        set.insert(
            key.key_id().to_owned(),
            ruma::serde::Base64::new(key.public_key().to_bytes().to_vec()),
        );
        [("example.org".to_owned(), set)].into_iter().collect()
    }

    /// ruma's content hash. Its `content_hash` refuses events beyond the PDU size limit, so for
    /// those the same serializer call is made without the size check.
    pub fn ruma_content_hash(object: &CanonicalJsonObject) -> [u8; 32] {
        match rs::content_hash(object) {
            Ok(hash) => hash.as_bytes().try_into().expect("32 bytes"),
            Err(_) => {
                let json = RedactingSerializer::new()
                    .custom_redacted_root_fields(&["hashes", "signatures", "unsigned"])
                    .serialize(object)
                    .expect("serialises");
                Sha256::digest(json.as_bytes()).into()
            }
        }
    }

    /// ruma's reference hash (base64), with the same fallback beyond the PDU size limit.
    pub fn ruma_reference_hash(
        object: &CanonicalJsonObject,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> String {
        rs::reference_hash(object, rules).unwrap_or_else(|_| {
            let json = RedactingSerializer::new()
                .rules(&rules.redaction)
                .custom_redacted_root_fields(&["signatures", "unsigned"])
                .serialize(object)
                .expect("serialises");
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes()))
        })
    }

    /// `object` signed with the benchmark key (as an event or as JSON), in both
    /// representations.
    pub fn signed_pair(object: &Object, as_event: bool) -> (Object, CanonicalJsonObject) {
        let mut signed = object.clone();
        signed.remove("signatures");
        if as_event {
            signing::hash_and_sign_event(
                &mut signed,
                "example.org",
                &signing_key(),
                &RoomVersionRules::V11,
            );
        } else {
            signing::sign_json(&mut signed, "example.org", &signing_key());
        }
        let text = json::to_canonical_string(&Value::Object(signed.clone()));
        (signed, serde_json::from_str(&text).expect("valid JSON"))
    }

    /// `n` distinct message events, each signed with the benchmark key.
    pub fn signed_messages(n: usize) -> Vec<Object> {
        (0..n)
            .map(|i| {
                let value = json::parse_strict(message_text(i).as_bytes()).expect("valid JSON");
                signed_pair(value.as_object().expect("object"), true).0
            })
            .collect()
    }
}

/// Change sets of the storage benchmarks (`benches/storage.rs`, `src/bin/appends.rs`).
pub mod storage {
    use std::sync::Arc;

    use matrix_storage::{
        ChangeSet, EventStatus, NewEvent, NewSnapshot, RoomChanges, SnapshotId, SnapshotRef,
        Storage,
    };

    /// A message event of about 1 KB, with the state delta of a message (none) or a join (one).
    pub fn change(n: u64, parent: Option<SnapshotId>, join: bool) -> ChangeSet {
        let mut c = ChangeSet::new();
        let id = format!("$event{n:012}");
        if join {
            c.snapshot = Some(NewSnapshot {
                parent,
                changes: vec![(
                    "m.room.member".into(),
                    format!("@user{n}:example.org"),
                    Some(id.clone()),
                )],
            });
        }
        c.events.push(NewEvent {
            event_id: id,
            room_id: "!room".into(),
            json: Arc::from(vec![b'x'; 1000]),
            status: EventStatus::Accepted,
            auth_events: vec!["$create".into(), "$power".into()],
            prev_events: vec![format!("$event{:012}", n.saturating_sub(1))],
            in_timeline: true,
            state_after: join.then_some(SnapshotRef::New).or(parent.map(SnapshotRef::Existing)),
        });
        c
    }

    /// Creates the room `!room` the change sets write to.
    pub async fn create_room(store: &dyn Storage) {
        let mut c = ChangeSet::new();
        c.rooms.push(RoomChanges {
            room_id: "!room".into(),
            create_with_version: Some("12".into()),
            ..RoomChanges::default()
        });
        store.apply(c).await.expect("room");
    }
}
