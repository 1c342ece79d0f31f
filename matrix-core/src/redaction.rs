//! The redaction algorithm per room version.
//!
//! The same key rules drive two paths: [`redact`] builds the redacted event, and the hashing and
//! signing code serialises the redacted form directly (no copy of the event) via
//! [`write_redacted`].
//!
//! ```
//! use matrix_core::{json, redaction::redact, room_version::RoomVersionRules};
//!
//! let event = json::parse_strict(br#"{"type":"m.room.member","content":{"membership":"join","displayname":"A"},"origin":"x","unsigned":{}}"#)?;
//! let event = event.as_object().unwrap();
//! let v10 = redact(event, &RoomVersionRules::V10);
//! assert_eq!(format!("{v10:?}"), r#"{"content":{"membership":"join"},"origin":"x","type":"m.room.member"}"#);
//! let v11 = redact(event, &RoomVersionRules::V11);
//! assert_eq!(format!("{v11:?}"), r#"{"content":{"membership":"join"},"type":"m.room.member"}"#);
//! # Ok::<(), matrix_core::json::JsonError>(())
//! ```

use crate::json::{Object, Value, write};
use crate::room_version::{RedactionRules, RoomVersionRules};

/// What redaction does with one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Drop,
    All,
    /// `third_party_invite` in v11+: keep only its `signed` key (if it is an object).
    OnlySigned,
}

fn top_level_key(rules: &RedactionRules, key: &str) -> bool {
    match key {
        "event_id" | "type" | "room_id" | "sender" | "state_key" | "content" | "hashes"
        | "signatures" | "depth" | "prev_events" | "auth_events" | "origin_server_ts" => true,
        "origin" | "membership" | "prev_state" => !rules.v11_top_level_keys,
        _ => false,
    }
}

fn content_key(rules: &RedactionRules, event_type: &str, key: &str) -> Keep {
    let keep = match (event_type, key) {
        ("m.room.member", "membership") => true,
        ("m.room.member", "join_authorised_via_users_server") => rules.keep_join_authorised_via,
        ("m.room.member", "third_party_invite") if rules.v11_content_keys => {
            return Keep::OnlySigned;
        }
        ("m.room.create", "creator") => true,
        ("m.room.create", _) => rules.v11_content_keys,
        ("m.room.join_rules", "join_rule") => true,
        ("m.room.join_rules", "allow") => rules.keep_join_rules_allow,
        (
            "m.room.power_levels",
            "ban" | "events" | "events_default" | "kick" | "redact" | "state_default" | "users"
            | "users_default",
        ) => true,
        ("m.room.power_levels", "invite") => rules.v11_content_keys,
        ("m.room.history_visibility", "history_visibility") => true,
        ("m.room.redaction", "redacts") => rules.v11_content_keys,
        ("m.room.aliases", "aliases") => rules.keep_aliases,
        _ => false,
    };
    if keep { Keep::All } else { Keep::Drop }
}

/// The redacted form of `event` under `rules`: only the keys the room version protects.
pub fn redact(event: &Object, rules: &RoomVersionRules) -> Object {
    let rules = &rules.redaction;
    let event_type = event.get_str("type").unwrap_or_default();
    let mut out = Object::new();
    for (key, value) in event {
        if !top_level_key(rules, key) {
            continue;
        }
        match (key, value) {
            ("content", Value::Object(content)) => {
                out.insert(key, redact_content(rules, event_type, content));
            }
            _ => {
                out.insert(key, value.clone());
            }
        }
    }
    out
}

/// The redacted form of an event's `content`, for an event of type `event_type`.
pub fn redact_content(rules: &RedactionRules, event_type: &str, content: &Object) -> Object {
    let mut out = Object::new();
    for (key, value) in content {
        match content_key(rules, event_type, key) {
            Keep::Drop => {}
            Keep::All => {
                out.insert(key, value.clone());
            }
            Keep::OnlySigned => {
                if let Value::Object(invite) = value {
                    let signed: Object = invite
                        .get("signed")
                        .map(|signed| ("signed", signed.clone()))
                        .into_iter()
                        .collect();
                    out.insert(key, signed);
                }
            }
        }
    }
    out
}

/// An event whose canonical JSON can be written with some top-level keys left out and,
/// optionally, redacted: a plain [`Object`] (serialised on the spot) or a
/// [`crate::pdu::Pdu`] (copied from the canonical bytes it keeps).
pub trait EventJson {
    /// The event's JSON.
    fn json(&self) -> &Object;
    /// The canonical bytes of each top-level member and each member of `content`, if kept.
    fn spans(&self) -> Option<Spans<'_>> {
        None
    }
}

impl EventJson for Object {
    fn json(&self) -> &Object {
        self
    }
}

/// Where each member of an event (and of its `content`) sits in its canonical bytes: the
/// range of `"key":value`, in the order of the object's entries.
#[derive(Debug, Clone, Copy)]
pub struct Spans<'a> {
    /// The canonical JSON of the whole event.
    pub bytes: &'a [u8],
    /// One range per top-level entry.
    pub members: &'a [std::ops::Range<u32>],
    /// One range per entry of `content` (empty if `content` is not an object).
    pub content: &'a [std::ops::Range<u32>],
}

impl Spans<'_> {
    fn copy(&self, range: &std::ops::Range<u32>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes[range.start as usize..range.end as usize]);
    }
}

/// Serialises `event` canonically, leaving out the top-level keys in `drop` and, when `redact`
/// is given, everything the redaction algorithm removes. No copy of the event is made; members
/// are copied from the event's canonical bytes when it keeps them.
pub fn write_redacted(
    event: &(impl EventJson + ?Sized),
    redact: Option<&RedactionRules>,
    drop: &[&str],
    out: &mut Vec<u8>,
) {
    let spans = event.spans();
    let json = event.json();
    let event_type = json.get_str("type").unwrap_or_default();
    out.push(b'{');
    let mut first = true;
    for (i, (key, value)) in json.iter().enumerate() {
        if drop.contains(&key) {
            continue;
        }
        if let Some(rules) = redact
            && !top_level_key(rules, key)
        {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        match (redact, key, value) {
            (Some(rules), "content", Value::Object(content)) => {
                write::string(key, out);
                out.push(b':');
                let content_spans = spans.map(|s| (s, s.content));
                write_content(rules, event_type, content, content_spans, out);
            }
            _ => match spans {
                Some(spans) => spans.copy(&spans.members[i], out),
                None => {
                    write::string(key, out);
                    out.push(b':');
                    write::value(value, out);
                }
            },
        }
    }
    out.push(b'}');
}

fn write_content(
    rules: &RedactionRules,
    event_type: &str,
    content: &Object,
    spans: Option<(Spans<'_>, &[std::ops::Range<u32>])>,
    out: &mut Vec<u8>,
) {
    out.push(b'{');
    let mut first = true;
    for (i, (key, value)) in content.iter().enumerate() {
        let keep = content_key(rules, event_type, key);
        let signed = match (keep, value) {
            (Keep::Drop, _) => continue,
            (Keep::All, _) => None,
            (Keep::OnlySigned, Value::Object(invite)) => Some(invite.get("signed")),
            (Keep::OnlySigned, _) => continue,
        };
        if !first {
            out.push(b',');
        }
        first = false;
        if let (None, Some((spans, ranges))) = (signed, spans) {
            spans.copy(&ranges[i], out);
            continue;
        }
        write::string(key, out);
        out.push(b':');
        match signed {
            None => write::value(value, out),
            Some(None) => out.extend_from_slice(b"{}"),
            Some(Some(signed)) => {
                out.extend_from_slice(b"{\"signed\":");
                write::value(signed, out);
                out.push(b'}');
            }
        }
    }
    out.push(b'}');
}
