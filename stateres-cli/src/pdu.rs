//! One PDU read straight from its bytes into a lean event: the members resolution needs are
//! read, every other member (hashes, signatures' values, `unsigned`, the content of types whose
//! content the authorization rules never read) is skipped without being built.
//!
//! Skipped members are only checked for balanced brackets and terminated strings, not parsed:
//! a PDU whose `unsigned` holds `+5` is read, where a full parse would refuse the file. A
//! number resolution reads is taken as the strict parser takes it (an integer without `+`,
//! fraction, exponent or leading zero that fits an `i64`; anything else is 0, as before).

use std::borrow::Cow;

use matrix_core::RoomVersionRules;
use matrix_core::json::{self, Value};
use matrix_stateres::lean::{EventFields, LeanRoomBuilder, reads_content};

use crate::scan::Scanner;

/// Adds the PDU in `bytes` (the `i`-th of the file) to `builder`.
pub(crate) fn push(
    builder: &mut LeanRoomBuilder,
    rules: &RoomVersionRules,
    bytes: &[u8],
    i: usize,
) -> Result<(), String> {
    let mut s = Scanner::new(bytes);
    if s.peek() != Some(b'{') {
        return Err(format!("pdus[{i}] is not an object"));
    }
    let (mut event_id, mut room_id, mut kind, mut state_key, mut sender, mut redacts) =
        (None, None, None, None, None, None);
    let (mut origin_server_ts, mut depth) = (0, 0);
    let (mut auth_events, mut prev_events, mut signed_by) = (Vec::new(), Vec::new(), Vec::new());
    let mut content: Option<&[u8]> = None;
    if !s.open(b'{', b'}')? {
        loop {
            let key = s.str_cow()?;
            s.expect(b':')?;
            match &*key {
                "event_id" => event_id = s.opt_str()?,
                "room_id" => room_id = s.opt_str()?,
                "type" => kind = s.opt_str()?,
                "state_key" => state_key = s.opt_str()?,
                "sender" => sender = s.opt_str()?,
                "redacts" => redacts = s.opt_str()?,
                "origin_server_ts" => origin_server_ts = s.int()?,
                "depth" => depth = s.int()?,
                "auth_events" => auth_events = s.edge_ids()?,
                "prev_events" => prev_events = s.edge_ids()?,
                "signatures" => signed_by = s.object_keys()?,
                "content" => content = Some(s.value_span()?),
                _ => {
                    s.value_range()?;
                }
            }
            if !s.next_element(b'}')? {
                break;
            }
        }
    }
    if !s.at_end() {
        return Err(format!("pdus[{i}]: invalid JSON after the object"));
    }
    let event_id = event_id.ok_or_else(|| format!("pdus[{i}] has no string event_id"))?;
    let missing = |name| format!("pdus[{i}] ({event_id}) has no string {name}");
    let kind = kind.ok_or_else(|| missing("type"))?;
    let sender = sender.ok_or_else(|| missing("sender"))?;
    // Only the content the rules read is parsed (and, from room version 11, a redaction's).
    let redaction_in_content = rules.redacts_in_content && kind == "m.room.redaction";
    let content = match content {
        Some(span) if reads_content(&kind) || redaction_in_content => {
            match json::parse_lenient(span).map_err(|e| format!("pdus[{i}]: invalid JSON: {e}"))? {
                Value::Object(object) => Some(object),
                _ => None,
            }
        }
        _ => None,
    };
    let redacts: Option<Cow<'_, str>> = if rules.redacts_in_content {
        content.as_ref().and_then(|c| c.get_str("redacts")).map(Cow::Borrowed)
    } else {
        redacts
    };
    let (auth_events, prev_events, signed_by) =
        (strs(&auth_events), strs(&prev_events), strs(&signed_by));
    builder
        .push_fields(&EventFields {
            event_id: &event_id,
            room_id: room_id.as_deref(),
            kind: &kind,
            state_key: state_key.as_deref(),
            sender: &sender,
            origin_server_ts,
            depth,
            content: content.as_ref(),
            redacts: redacts.as_deref(),
            auth_events: &auth_events,
            prev_events: &prev_events,
            signed_by: &signed_by,
        })
        .map(drop)
        .map_err(|e| e.to_string())
}

fn strs<'a>(values: &'a [Cow<'_, str>]) -> Vec<&'a str> {
    values.iter().map(|c| &**c).collect()
}

#[cfg(test)]
mod tests {
    use matrix_core::RoomVersionRules;
    use matrix_core::json::{self, Value};
    use matrix_stateres::lean::LeanRoom;

    /// Read from bytes, events are what `push_object` makes of the parsed object: on every
    /// fixture, and on PDUs with `[id, hashes]` edges, escapes, odd numbers and a redaction.
    #[test]
    fn bytes_read_as_the_parsed_object() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../matrix-stateres/tests/fixtures");
        let mut files: Vec<(String, Vec<String>)> = Vec::new();
        for entry in std::fs::read_dir(dir).expect("fixtures") {
            let text = std::fs::read(entry.expect("entry").path()).expect("readable");
            let top = json::parse_lenient(&text).expect("JSON");
            let top = top.as_object().expect("object");
            let version = top.get_str("room_version").expect("version").to_owned();
            let pdus = top.get("pdus").and_then(Value::as_array).expect("pdus");
            files.push((version, pdus.iter().map(|p| p.to_string()).collect()));
        }
        let odd = [
            r#"{"event_id":"$c","room_id":"!r:x","type":"m.room.create","state_key":"","sender":"@a:x","content":{"creator":"@a:x","room_version":"1"},"auth_events":[],"prev_events":[],"origin_server_ts":1e3,"depth":1.5,"hashes":{"sha256":"x"}}"#,
            r#"{"event_id":"$j","room_id":"!r:x","type":"m.room.member","state_key":"@a:x","sender":"@a:x","content":{"membership":"join","displayname":"\u0041"},"auth_events":[["$c",{"sha256":"y"}]],"prev_events":[["$c",{}]],"origin_server_ts":-0,"depth":2,"signatures":{"x":{"ed25519:1":"s"},"y":{}}}"#,
            r#"{"event_id":"$r\"q","room_id":"!r:x","type":"m.room.redaction","sender":"@a:x","redacts":"$j","content":{"redacts":"$c"},"auth_events":["$c","$j"],"prev_events":["$j"],"origin_server_ts":99999999999999999999,"depth":3,"unsigned":{"age":[1,{"a":"]"}]}}"#,
        ];
        for version in ["1", "11"] {
            files.push((version.to_owned(), odd.iter().map(|s| s.to_string()).collect()));
        }
        for (version, pdus) in files {
            let rules = RoomVersionRules::get(&version).expect("known version");
            let mut from_bytes = LeanRoom::builder(rules);
            let mut from_object = LeanRoom::builder(rules);
            for (i, pdu) in pdus.iter().enumerate() {
                super::push(&mut from_bytes, rules, pdu.as_bytes(), i).expect("reads");
                let object = json::parse_lenient(pdu.as_bytes()).expect("JSON");
                let object = object.as_object().expect("object");
                let id = object.get_str("event_id").expect("id");
                from_object.push_object(object, id).expect("reads");
            }
            let (a, b) = (from_bytes.build(), from_object.build());
            assert_eq!(format!("{:?}", a.events()), format!("{:?}", b.events()), "v{version}");
        }
    }
}
