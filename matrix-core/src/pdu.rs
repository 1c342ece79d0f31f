//! PDUs: events as exchanged between servers, parsed and format-checked per room version.
//!
//! A [`Pdu`] keeps the event's JSON exactly as received (numbers included), so hashes and
//! signatures can always be recomputed, and answers typed questions about it.
//!
//! ```
//! use matrix_core::{pdu::Pdu, room_version::RoomVersionRules};
//!
//! let create = br#"{"type":"m.room.create","state_key":"","sender":"@alice:example.org",
//!   "content":{"room_version":"12"},"origin_server_ts":1,"depth":1,
//!   "prev_events":[],"auth_events":[],"hashes":{"sha256":"x"},"signatures":{}}"#;
//! let pdu = Pdu::from_slice(create, &RoomVersionRules::V12)?;
//! assert_eq!(pdu.room_id(), format!("!{}", &pdu.event_id()[1..]));
//! # Ok::<(), matrix_core::pdu::PduError>(())
//! ```

use std::ops::Range;

use crate::hash;
use crate::json::{self, JsonError, MAX_SAFE_INT, Object, Value, write};
use crate::redaction::{EventJson, Spans};
use crate::room_version::{EventFormat, RoomVersionRules};

/// The largest PDU, in bytes of canonical JSON including signatures.
pub const MAX_PDU_BYTES: usize = 65_536;
/// The longest `type`, `state_key` and identifier, in bytes.
pub const MAX_ID_BYTES: usize = 255;
/// At most this many `auth_events`.
pub const MAX_AUTH_EVENTS: usize = 10;
/// At most this many `prev_events`.
pub const MAX_PREV_EVENTS: usize = 20;

/// Why bytes are not a valid PDU of a room version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PduError {
    /// Not (canonical, for v6+) JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] JsonError),
    /// The top level is not an object.
    #[error("a PDU must be a JSON object")]
    NotAnObject,
    /// Larger than [`MAX_PDU_BYTES`].
    #[error("PDU is {size} bytes, more than 65536")]
    TooLarge {
        /// Canonical size in bytes.
        size: usize,
    },
    /// A required field is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A field has the wrong JSON type or shape.
    #[error("field {field} must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A field longer than 255 bytes.
    #[error("field {0} is longer than 255 bytes")]
    TooLong(&'static str),
    /// An identifier that does not parse.
    #[error("field {field} is not a valid {kind}")]
    InvalidId {
        /// The field.
        field: &'static str,
        /// The kind of identifier expected.
        kind: &'static str,
    },
    /// Too many `prev_events` or `auth_events`.
    #[error("{field} lists {count} events, more than {max}")]
    TooManyEdges {
        /// `prev_events` or `auth_events`.
        field: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// `depth` outside `[0, limit]`.
    #[error("depth out of range")]
    DepthOutOfRange,
    /// A room version 12 create event with a `room_id`.
    #[error("a room version 12 m.room.create event must not have a room_id")]
    CreateWithRoomId,
}

/// A format-checked PDU with its event id.
///
/// It keeps the event's canonical JSON next to the parsed object, with the place of each member,
/// so hashing, signing and verification copy bytes instead of serialising again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    event_id: String,
    room_id: String,
    json: Object,
    canonical: Canonical,
    fields: Fields,
    rules: &'static RoomVersionRules,
}

/// Where the fields the accessors read sit among the event's entries, found once so that
/// accessors (called many times by authorization and state resolution) skip the key search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    kind: u32,
    sender: u32,
    state_key: u32,
    content: u32,
    origin_server_ts: u32,
    depth: u32,
    prev_events: u32,
    auth_events: u32,
}

impl Fields {
    fn new(json: &Object) -> Self {
        let at = |key| json.index_of(key).and_then(|i| u32::try_from(i).ok()).unwrap_or(u32::MAX);
        Fields {
            kind: at("type"),
            sender: at("sender"),
            state_key: at("state_key"),
            content: at("content"),
            origin_server_ts: at("origin_server_ts"),
            depth: at("depth"),
            prev_events: at("prev_events"),
            auth_events: at("auth_events"),
        }
    }
}

/// The canonical bytes of an event and the ranges of its members (see [`Spans`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Canonical {
    bytes: Box<[u8]>,
    members: Box<[Range<u32>]>,
    content: Box<[Range<u32>]>,
}

impl Canonical {
    fn new(json: &Object) -> Self {
        fn member(out: &mut Vec<u8>, key: &str) -> usize {
            let start = out.len();
            write::string(key, out);
            out.push(b':');
            start
        }
        let range = |start: usize, end: usize| start as u32..end as u32;
        let mut out = Vec::with_capacity(1024);
        let mut members = Vec::with_capacity(json.len());
        let mut content_members = Vec::new();
        out.push(b'{');
        for (i, (key, value)) in json.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let start = member(&mut out, key);
            match (key, value) {
                ("content", Value::Object(content)) => {
                    out.push(b'{');
                    for (j, (key, value)) in content.iter().enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        let start = member(&mut out, key);
                        write::value(value, &mut out);
                        content_members.push(range(start, out.len()));
                    }
                    out.push(b'}');
                }
                _ => write::value(value, &mut out),
            }
            members.push(range(start, out.len()));
        }
        out.push(b'}');
        Canonical {
            bytes: out.into_boxed_slice(),
            members: members.into_boxed_slice(),
            content: content_members.into_boxed_slice(),
        }
    }
}

fn wrong(field: &'static str, expected: &'static str) -> PduError {
    PduError::WrongType { field, expected }
}

fn required_str<'a>(json: &'a Object, field: &'static str) -> Result<&'a str, PduError> {
    match json.get(field) {
        None => Err(PduError::MissingField(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong(field, "a string")),
    }
}

fn check_len(value: &str, field: &'static str) -> Result<(), PduError> {
    if value.len() > MAX_ID_BYTES { Err(PduError::TooLong(field)) } else { Ok(()) }
}

fn check_event_id(id: &str, field: &'static str) -> Result<(), PduError> {
    check_len(id, field)?;
    ruma_common::EventId::parse(id)
        .map(drop)
        .map_err(|_| PduError::InvalidId { field, kind: "event ID" })
}

fn check_edges(
    json: &Object,
    field: &'static str,
    max: usize,
    format: EventFormat,
) -> Result<(), PduError> {
    let items = match json.get(field) {
        None => return Err(PduError::MissingField(field)),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(wrong(field, "an array")),
    };
    if items.len() > max {
        return Err(PduError::TooManyEdges { field, count: items.len(), max });
    }
    for item in items {
        let id = match (format, item) {
            (EventFormat::V3, Value::String(id)) => id,
            (EventFormat::V1, Value::Array(pair)) if pair.len() == 2 => {
                if pair[1].as_object().is_none() {
                    return Err(wrong(field, "a list of [event_id, hashes] pairs"));
                }
                pair[0].as_str().ok_or(wrong(field, "a list of [event_id, hashes] pairs"))?
            }
            (EventFormat::V1, _) => return Err(wrong(field, "a list of [event_id, hashes] pairs")),
            (EventFormat::V3, _) => return Err(wrong(field, "a list of event ids")),
        };
        check_event_id(id, field)?;
    }
    Ok(())
}

/// Checks the format of an event in a room of `rules`' version: required fields and their types,
/// identifier syntax and lengths, edge counts, depth, size. Does not check hashes, signatures
/// or authorization.
pub fn check_format(json: &Object, rules: &RoomVersionRules) -> Result<(), PduError> {
    check_size(json.canonical_len())?;
    check_format_fields(json, rules)
}

fn check_size(size: usize) -> Result<(), PduError> {
    if size > MAX_PDU_BYTES { Err(PduError::TooLarge { size }) } else { Ok(()) }
}

fn check_format_fields(json: &Object, rules: &RoomVersionRules) -> Result<(), PduError> {
    let kind = required_str(json, "type")?;
    check_len(kind, "type")?;
    let sender = required_str(json, "sender")?;
    check_len(sender, "sender")?;
    ruma_common::UserId::parse(sender)
        .map_err(|_| PduError::InvalidId { field: "sender", kind: "user ID" })?;
    let state_key = match json.get("state_key") {
        None => None,
        Some(Value::String(s)) => {
            check_len(s, "state_key")?;
            Some(s.as_str())
        }
        Some(_) => return Err(wrong("state_key", "a string")),
    };
    let is_v12_create =
        rules.room_id_from_create_event && kind == "m.room.create" && state_key == Some("");
    match json.get("room_id") {
        Some(_) if is_v12_create => return Err(PduError::CreateWithRoomId),
        None if is_v12_create => {}
        None => return Err(PduError::MissingField("room_id")),
        Some(Value::String(room_id)) => {
            check_len(room_id, "room_id")?;
            ruma_common::RoomId::parse(room_id)
                .map_err(|_| PduError::InvalidId { field: "room_id", kind: "room ID" })?;
        }
        Some(_) => return Err(wrong("room_id", "a string")),
    }
    match json.get("content") {
        Some(Value::Object(_)) => {}
        None => return Err(PduError::MissingField("content")),
        Some(_) => return Err(wrong("content", "an object")),
    }
    match json.get("origin_server_ts") {
        Some(Value::Number(n)) if n.as_i64().is_some() => {}
        None => return Err(PduError::MissingField("origin_server_ts")),
        Some(_) => return Err(wrong("origin_server_ts", "an integer")),
    }
    let depth_limit = if rules.strict_canonical_json { MAX_SAFE_INT } else { i64::MAX };
    match json.get("depth") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(depth) if (0..=depth_limit).contains(&depth) => {}
            _ => return Err(PduError::DepthOutOfRange),
        },
        None => return Err(PduError::MissingField("depth")),
        Some(_) => return Err(wrong("depth", "an integer")),
    }
    match json.get("hashes") {
        Some(Value::Object(hashes)) => {
            required_str(hashes, "sha256").map_err(|_| wrong("hashes", "{\"sha256\": string}"))?;
        }
        None => return Err(PduError::MissingField("hashes")),
        Some(_) => return Err(wrong("hashes", "an object")),
    }
    match json.get("signatures") {
        Some(Value::Object(by_server)) => {
            for (_, keys) in by_server {
                let keys = keys.as_object().ok_or(wrong("signatures", "an object of objects"))?;
                if keys.iter().any(|(_, sig)| sig.as_str().is_none()) {
                    return Err(wrong("signatures", "an object of objects of strings"));
                }
            }
        }
        None => return Err(PduError::MissingField("signatures")),
        Some(_) => return Err(wrong("signatures", "an object")),
    }
    check_edges(json, "prev_events", MAX_PREV_EVENTS, rules.event_format)?;
    check_edges(json, "auth_events", MAX_AUTH_EVENTS, rules.event_format)?;
    if rules.event_format == EventFormat::V1 {
        check_event_id(required_str(json, "event_id")?, "event_id")?;
    }
    if !rules.redacts_in_content && kind == "m.room.redaction" {
        match json.get("redacts") {
            Some(Value::String(id)) => check_event_id(id, "redacts")?,
            None => {}
            Some(_) => return Err(wrong("redacts", "a string")),
        }
    }
    Ok(())
}

impl Pdu {
    /// Parses and format-checks a PDU received for a room of `rules`' version (strict canonical
    /// JSON from room version 6, lossless numbers before).
    pub fn from_slice(bytes: &[u8], rules: &'static RoomVersionRules) -> Result<Self, PduError> {
        let value = if rules.strict_canonical_json {
            json::parse_strict(bytes)
        } else {
            json::parse_lenient(bytes)
        }?;
        match value {
            Value::Object(json) => Self::from_object(json, rules),
            _ => Err(PduError::NotAnObject),
        }
    }

    /// Format-checks an event object and computes its event id.
    pub fn from_object(json: Object, rules: &'static RoomVersionRules) -> Result<Self, PduError> {
        let canonical = Canonical::new(&json);
        check_size(canonical.bytes.len())?;
        check_format_fields(&json, rules)?;
        Ok(Self::build(json, canonical, None, rules))
    }

    /// Wraps an event without format checks (for events read back from trusted storage, or for
    /// benchmarks). The accessors never panic, but answer `""`/`None` for missing fields.
    pub fn new_unchecked(json: Object, rules: &'static RoomVersionRules) -> Self {
        let canonical = Canonical::new(&json);
        Self::build(json, canonical, None, rules)
    }

    /// Wraps an event with a known event id, without format checks or hashing.
    pub fn with_event_id(json: Object, event_id: String, rules: &'static RoomVersionRules) -> Self {
        let canonical = Canonical::new(&json);
        Self::build(json, canonical, Some(event_id), rules)
    }

    fn build(
        json: Object,
        canonical: Canonical,
        event_id: Option<String>,
        rules: &'static RoomVersionRules,
    ) -> Self {
        let fields = Fields::new(&json);
        let mut pdu =
            Pdu { event_id: String::new(), room_id: String::new(), json, canonical, fields, rules };
        pdu.event_id = event_id.unwrap_or_else(|| hash::event_id(&pdu, rules).unwrap_or_default());
        pdu.room_id = match pdu.json.get_str("room_id") {
            Some(room_id) => room_id.to_owned(),
            None if rules.room_id_from_create_event => {
                hash::room_id_from_create_event_id(&pdu.event_id)
            }
            None => String::new(),
        };
        pdu
    }

    /// The event's canonical JSON, as kept.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.canonical.bytes
    }

    /// The event id.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }
    /// The room id (for a room version 12 create event, the one it defines).
    pub fn room_id(&self) -> &str {
        &self.room_id
    }
    /// Whether the event itself carries a `room_id` (every event but a v12 create must).
    pub fn has_room_id(&self) -> bool {
        self.json.contains_key("room_id")
    }
    /// The room version's rules.
    pub fn rules(&self) -> &'static RoomVersionRules {
        self.rules
    }
    /// The whole event as received.
    pub fn json(&self) -> &Object {
        &self.json
    }
    /// The event's JSON, taken out.
    pub fn into_json(self) -> Object {
        self.json
    }
    /// The event type.
    pub fn kind(&self) -> &str {
        self.field(self.fields.kind).and_then(Value::as_str).unwrap_or_default()
    }
    /// The sender's user id.
    pub fn sender(&self) -> &str {
        self.field(self.fields.sender).and_then(Value::as_str).unwrap_or_default()
    }
    /// The state key, for state events.
    pub fn state_key(&self) -> Option<&str> {
        self.field(self.fields.state_key).and_then(Value::as_str)
    }
    /// The content (empty if absent).
    pub fn content(&self) -> &Object {
        static EMPTY: Object = Object::new();
        self.field(self.fields.content).and_then(Value::as_object).unwrap_or(&EMPTY)
    }

    fn field(&self, index: u32) -> Option<&Value> {
        self.json.value_at(index as usize)
    }
    /// `origin_server_ts`.
    pub fn origin_server_ts(&self) -> i64 {
        self.field(self.fields.origin_server_ts).and_then(Value::as_i64).unwrap_or_default()
    }
    /// `depth`.
    pub fn depth(&self) -> i64 {
        self.field(self.fields.depth).and_then(Value::as_i64).unwrap_or_default()
    }
    /// The event this redaction redacts (top level before v11, in `content` from v11).
    pub fn redacts(&self) -> Option<&str> {
        if self.rules.redacts_in_content {
            self.content().get_str("redacts")
        } else {
            self.json.get_str("redacts")
        }
    }
    /// The ids in `prev_events`.
    pub fn prev_events(&self) -> impl Iterator<Item = &str> + '_ {
        edge_ids(self.field(self.fields.prev_events))
    }
    /// The ids in `auth_events`.
    pub fn auth_events(&self) -> impl Iterator<Item = &str> + '_ {
        edge_ids(self.field(self.fields.auth_events))
    }
}

impl EventJson for Pdu {
    fn json(&self) -> &Object {
        &self.json
    }
    fn spans(&self) -> Option<Spans<'_>> {
        Some(Spans {
            bytes: &self.canonical.bytes,
            members: &self.canonical.members,
            content: &self.canonical.content,
        })
    }
}

fn edge_ids(field: Option<&Value>) -> impl Iterator<Item = &str> {
    field.and_then(Value::as_array).unwrap_or_default().iter().filter_map(|item| match item {
        Value::String(id) => Some(id.as_str()),
        Value::Array(pair) => pair.first().and_then(Value::as_str),
        _ => None,
    })
}
