//! Content hashes, reference hashes, event ids and room ids.
//!
//! The serialisations are streamed from the event as it is (no redacted copy is built), and the
//! hash functions take any event size: the 65,536-byte limit belongs to [`crate::pdu`]'s
//! format checks.

use sha2::{Digest, Sha256};

use crate::b64;
use crate::redaction::{EventJson, write_redacted};
use crate::room_version::{EventIdFormat, RoomVersionRules};

/// Keys left out of the content hash.
const CONTENT_HASH_DROP: &[&str] = &["hashes", "signatures", "unsigned"];
/// Keys left out of the reference hash (after redaction).
const REFERENCE_HASH_DROP: &[&str] = &["signatures", "unsigned"];

/// The canonical bytes the content hash covers.
pub fn content_hash_input(event: &(impl EventJson + ?Sized)) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_redacted(event, None, CONTENT_HASH_DROP, &mut out);
    out
}

/// The SHA-256 content hash of `event`: canonical JSON without `hashes`, `signatures` and
/// `unsigned`.
pub fn content_hash(event: &(impl EventJson + ?Sized)) -> [u8; 32] {
    Sha256::digest(content_hash_input(event)).into()
}

/// The SHA-256 reference hash of `event`: its redacted form without `signatures` and `unsigned`.
pub fn reference_hash(event: &(impl EventJson + ?Sized), rules: &RoomVersionRules) -> [u8; 32] {
    let mut out = Vec::with_capacity(512);
    write_redacted(event, Some(&rules.redaction), REFERENCE_HASH_DROP, &mut out);
    Sha256::digest(out).into()
}

/// The event id of `event` in a room of `rules`' version: for rooms 1-2 the `event_id` the
/// event carries (if it is a string), otherwise `$` + the base64 reference hash.
pub fn event_id(event: &(impl EventJson + ?Sized), rules: &RoomVersionRules) -> Option<String> {
    let encoded = match rules.event_id_format {
        EventIdFormat::Opaque => return event.json().get_str("event_id").map(str::to_owned),
        EventIdFormat::ReferenceHashStandard => b64::encode(reference_hash(event, rules)),
        EventIdFormat::ReferenceHashUrlSafe => b64::encode_url_safe(reference_hash(event, rules)),
    };
    let mut id = String::with_capacity(44);
    id.push('$');
    id.push_str(&encoded);
    Some(id)
}

/// The room id a room version 12 create event with id `create_event_id` defines: the event id
/// with the sigil `!` instead of `$`.
pub fn room_id_from_create_event_id(create_event_id: &str) -> String {
    let mut room_id = String::with_capacity(create_event_id.len());
    room_id.push('!');
    room_id.push_str(create_event_id.strip_prefix('$').unwrap_or(create_event_id));
    room_id
}
