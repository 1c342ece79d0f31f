//! What a queued item holds, and how queued items become one transaction.

use std::sync::Arc;

use matrix_core::json::{self, Object, Value};
use matrix_storage::OutboundItem;

/// The most PDUs in one transaction (spec: "Transactions").
pub const MAX_PDUS: usize = 50;
/// The most EDUs in one transaction.
pub const MAX_EDUS: usize = 100;

/// One item for a destination: a PDU or an EDU, as the transaction carries it.
///
/// Stored in the outbound queue as a tagged JSON object, `{"pdu": EVENT}` or
/// `{"edu": {"edu_type": ..., "content": ...}}`, so the queue says what each item is and a PDU
/// keeps its JSON exactly (numbers of room versions 1-5 included).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outbound {
    /// A PDU, in its federation form.
    Pdu(Object),
    /// An EDU: an object with `edu_type` and `content`.
    Edu(Object),
}

impl Outbound {
    /// An EDU of `edu_type` with `content`.
    pub fn edu(edu_type: &str, content: Object) -> Self {
        let mut edu = Object::new();
        edu.insert("edu_type", edu_type);
        edu.insert("content", content);
        Outbound::Edu(edu)
    }

    /// The bytes to queue ([`matrix_storage::ChangeSet::enqueue`]).
    pub fn to_payload(&self) -> Arc<[u8]> {
        let (tag, inner) = match self {
            Outbound::Pdu(pdu) => ("pdu", pdu),
            Outbound::Edu(edu) => ("edu", edu),
        };
        let mut wrapper = Object::new();
        wrapper.insert(tag, inner.clone());
        let mut out = Vec::with_capacity(inner.canonical_len() + 10);
        wrapper.write_canonical(&mut out);
        Arc::from(out)
    }

    /// Reads queued bytes back; `None` for bytes [`Outbound::to_payload`] did not write.
    pub fn from_payload(payload: &[u8]) -> Option<Self> {
        let Ok(Value::Object(mut wrapper)) = json::parse_lenient(payload) else {
            return None;
        };
        if wrapper.len() != 1 {
            return None;
        }
        if let Some(Value::Object(pdu)) = wrapper.remove("pdu") {
            return Some(Outbound::Pdu(pdu));
        }
        match wrapper.remove("edu") {
            Some(Value::Object(edu)) if edu.get_str("edu_type").is_some() => {
                Some(Outbound::Edu(edu))
            }
            _ => None,
        }
    }
}

/// The items of one transaction: a prefix of a destination's queue (so that acknowledging
/// "up to the last id" acknowledges exactly them), with at most [`MAX_PDUS`] PDUs and
/// [`MAX_EDUS`] EDUs, plus ephemeral EDUs that were never stored.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// The first and last queue ids, if any stored item is in the batch.
    pub(super) ids: Option<(u64, u64)>,
    pub(super) pdus: Vec<Value>,
    pub(super) edus: Vec<Value>,
    /// Stored items that do not decode: acknowledged with the batch, never sent.
    pub(super) undecodable: u64,
}

impl Batch {
    /// The longest prefix of `items` (the queue, oldest first) within the limits; only items
    /// up to `upto` when retrying a batch that ended there.
    pub(super) fn from_queue(items: Vec<OutboundItem>, upto: Option<u64>) -> Self {
        let mut batch = Batch::default();
        for item in items {
            if upto.is_some_and(|upto| item.id > upto) {
                break;
            }
            match Outbound::from_payload(&item.payload) {
                Some(Outbound::Pdu(pdu)) if batch.pdus.len() < MAX_PDUS => {
                    batch.pdus.push(Value::Object(pdu));
                }
                Some(Outbound::Edu(edu)) if batch.edus.len() < MAX_EDUS => {
                    batch.edus.push(Value::Object(edu));
                }
                Some(_) => break,
                None => batch.undecodable += 1,
            }
            batch.ids = Some((batch.ids.map_or(item.id, |(first, _)| first), item.id));
        }
        batch
    }

    /// Room left for EDUs.
    pub(super) fn edu_room(&self) -> usize {
        MAX_EDUS.saturating_sub(self.edus.len())
    }

    /// Whether there is nothing to send or acknowledge.
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_none() && self.edus.is_empty()
    }

    /// The transaction body.
    pub(super) fn body(&self, origin: &str, origin_server_ts: i64) -> Object {
        let mut body = Object::new();
        body.insert("origin", origin);
        body.insert("origin_server_ts", origin_server_ts);
        body.insert("pdus", self.pdus.clone());
        if !self.edus.is_empty() {
            body.insert("edus", self.edus.clone());
        }
        body
    }
}

/// How many PDUs a `/send` response reports an error for.
pub(super) fn refused_pdus(response: &Object) -> u64 {
    response.get_object("pdus").map_or(0, |pdus| {
        pdus.iter()
            .filter(|(_, result)| result.as_object().is_some_and(|r| r.contains_key("error")))
            .count() as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64, outbound: &Outbound) -> OutboundItem {
        OutboundItem { id, payload: outbound.to_payload() }
    }

    fn pdu(n: i64) -> Outbound {
        let mut event = Object::new();
        event.insert("depth", n);
        Outbound::Pdu(event)
    }

    #[test]
    fn payloads_round_trip_and_garbage_is_refused() {
        let edu = Outbound::edu("m.typing", Object::new());
        assert_eq!(Outbound::from_payload(&edu.to_payload()), Some(edu));
        // Numbers of old room versions keep their text.
        let old = br#"{"pdu":{"depth":1.50,"x":1e3}}"#;
        let Some(Outbound::Pdu(event)) = Outbound::from_payload(old) else { panic!("a pdu") };
        let mut out = Vec::new();
        event.write_canonical(&mut out);
        assert_eq!(out, br#"{"depth":1.50,"x":1e3}"#);
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"pdu":1}"#,
            br#"{"edu":{"content":{}}}"#,
            br#"{"pdu":{},"edu":{}}"#,
            br#"{"other":{}}"#,
        ] {
            assert_eq!(Outbound::from_payload(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn batches_are_prefixes_within_the_limits() {
        let edu = Outbound::edu("m.receipt", Object::new());
        // 60 PDUs then EDUs: the batch stops at the 51st PDU.
        let items: Vec<_> = (1..=60).map(|i| item(i, &pdu(i as i64))).collect();
        let batch = Batch::from_queue(items, None);
        assert_eq!((batch.pdus.len(), batch.ids), (MAX_PDUS, Some((1, 50))));
        // 120 EDUs with a PDU among them: 100 EDUs, the PDU in its place, no more.
        let mut items: Vec<_> = (1..=120).map(|i| item(i, &edu)).collect();
        items[3] = item(4, &pdu(4));
        let batch = Batch::from_queue(items, None);
        assert_eq!((batch.pdus.len(), batch.edus.len(), batch.ids), (1, 100, Some((1, 101))));
        // A retried batch stops where it stopped before, and garbage is skipped but counted.
        let mut items: Vec<_> = (1..=10).map(|i| item(i, &pdu(i as i64))).collect();
        items[1].payload = Arc::from(&b"garbage"[..]);
        let batch = Batch::from_queue(items, Some(5));
        assert_eq!((batch.pdus.len(), batch.undecodable, batch.ids), (4, 1, Some((1, 5))));
        assert!(Batch::from_queue(Vec::new(), None).is_empty());
    }

    #[test]
    fn refused_pdus_are_counted() {
        let response =
            json::parse_lenient(br#"{"pdus":{"$a":{},"$b":{"error":"no"},"$c":{"error":"x"}}}"#)
                .expect("json");
        assert_eq!(refused_pdus(response.as_object().expect("object")), 2);
        assert_eq!(refused_pdus(&Object::new()), 0);
    }
}
