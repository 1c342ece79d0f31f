//! The client format of events: the PDU without its federation fields, redacted when a
//! redaction applies, with `unsigned` filled in for the viewer.

use matrix_core::Pdu;
use serde_json::{Map, Value};

/// Top-level keys of a PDU that clients do not see.
const FEDERATION_KEYS: &[&str] =
    &["auth_events", "prev_events", "depth", "hashes", "signatures", "origin", "prev_state"];

/// How an event is shown to one viewer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Shown {
    /// The redaction event (client format) that redacted it, if any.
    pub(crate) redacted_because: Option<Value>,
    /// The transaction id, when the viewer's device sent it.
    pub(crate) transaction_id: Option<String>,
    /// The content of the state event this one replaced, if known.
    pub(crate) prev_content: Option<Value>,
    /// The id of the state event this one replaced, if any.
    pub(crate) replaces_state: Option<String>,
    /// The bundled aggregations (`unsigned.m.relations`), if any.
    pub(crate) relations: Option<Value>,
    /// Whether its sender erased their account: shown redacted, with no redaction event.
    pub(crate) erased: bool,
}

/// The JSON of an object from matrix-core, as serde_json's.
pub(crate) fn to_serde(object: &matrix_core::Object) -> Map<String, Value> {
    let bytes = matrix_core::json::to_canonical_vec(&matrix_core::Value::Object(object.clone()));
    serde_json::from_slice(&bytes).unwrap_or_default()
}

/// The client format of `pdu`.
pub(crate) fn client_event(pdu: &Pdu, shown: Shown) -> Value {
    let mut event = if shown.redacted_because.is_some() || shown.erased {
        to_serde(&matrix_core::redaction::redact(pdu.json(), pdu.rules()))
    } else {
        serde_json::from_slice(pdu.canonical_bytes()).unwrap_or_default()
    };
    for key in FEDERATION_KEYS {
        event.remove(*key);
    }
    event.insert("event_id".to_owned(), Value::from(pdu.event_id()));
    if !event.contains_key("room_id") {
        event.insert("room_id".to_owned(), Value::from(pdu.room_id()));
    }
    let mut unsigned = match event.remove("unsigned") {
        Some(Value::Object(unsigned)) => unsigned,
        _ => Map::new(),
    };
    if let Some(because) = shown.redacted_because {
        unsigned.insert("redacted_because".to_owned(), because);
    }
    if let Some(txn) = shown.transaction_id {
        unsigned.insert("transaction_id".to_owned(), Value::from(txn));
    }
    if let Some(prev) = shown.prev_content {
        unsigned.insert("prev_content".to_owned(), prev);
    }
    if let Some(replaced) = shown.replaces_state {
        unsigned.insert("replaces_state".to_owned(), Value::from(replaced));
    }
    if let Some(relations) = shown.relations {
        unsigned.insert("m.relations".to_owned(), relations);
    }
    let age = super::now_ms().saturating_sub(pdu.origin_server_ts()).max(0);
    unsigned.insert("age".to_owned(), Value::from(age));
    event.insert("unsigned".to_owned(), Value::Object(unsigned));
    Value::Object(event)
}

/// The stripped form of a state event another server sent (in either form): its `type`,
/// `state_key`, `sender` and `content`, whichever of them it has.
pub(crate) fn strip_object(event: &matrix_core::Object) -> Value {
    let mut stripped = matrix_core::Object::new();
    for key in ["type", "state_key", "sender", "content"] {
        if let Some(value) = event.get(key) {
            stripped.insert(key, value.clone());
        }
    }
    Value::Object(to_serde(&stripped))
}

/// The stripped form of a state event (what invitees see of a room).
pub(crate) fn stripped_state(pdu: &Pdu) -> Value {
    serde_json::json!({
        "type": pdu.kind(),
        "state_key": pdu.state_key().unwrap_or_default(),
        "sender": pdu.sender(),
        "content": Value::Object(to_serde(pdu.content())),
    })
}
