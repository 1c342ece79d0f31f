//! A received `PUT /_matrix/federation/v1/send/{txnId}` body: parsed with bounds, its origin
//! checked, deduplicated.

use matrix_core::json::{self, Object, Value};
use matrix_storage::QueueStore;

use crate::FederationError;
use crate::sender::{MAX_EDUS, MAX_PDUS};

/// The longest transaction id kept (it is stored to deduplicate).
pub const MAX_TXN_ID_BYTES: usize = 255;

/// A received transaction, parsed and within the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transaction {
    /// The sending server (the authenticated origin, which the body's `origin` matched).
    pub origin: String,
    /// The transaction id from the path.
    pub txn_id: String,
    /// `origin_server_ts` of the transaction.
    pub origin_server_ts: i64,
    /// The PDUs as received (at most 50). Each still goes through
    /// [`check_pdu`](super::check_pdu) with its room's version.
    pub pdus: Vec<Object>,
    /// The EDUs as received (at most 100), each an object.
    pub edus: Vec<Object>,
}

impl Transaction {
    /// What to add to [`matrix_storage::ChangeSet::seen_transactions`] once the transaction
    /// is processed, in the change set that stores its outcome, so that a retry of it is
    /// answered as a duplicate.
    pub fn seen(&self) -> (String, String) {
        (self.origin.clone(), self.txn_id.clone())
    }
}

/// A received transaction: new, or one already processed (answer `200` with no PDU results).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// Not seen before.
    New(Transaction),
    /// `(origin, txn_id)` was processed already.
    Duplicate,
}

/// Why a transaction body is refused as a whole. [`TransactionError::errcode`] and
/// [`TransactionError::status`] say how to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The body is not JSON.
    #[error("the body is not JSON")]
    NotJson,
    /// The body is not a JSON object, or a field is absent or has the wrong type.
    #[error("field {0} is missing or of the wrong type")]
    BadField(&'static str),
    /// More than 50 PDUs.
    #[error("{0} PDUs, more than 50")]
    TooManyPdus(usize),
    /// More than 100 EDUs.
    #[error("{0} EDUs, more than 100")]
    TooManyEdus(usize),
    /// The transaction id is empty or longer than [`MAX_TXN_ID_BYTES`].
    #[error("the transaction id is empty or too long")]
    BadTxnId,
    /// The body's `origin` is not the server that signed the request.
    #[error("origin {claimed} is not the authenticated origin {authenticated}")]
    WrongOrigin {
        /// The body's `origin`.
        claimed: String,
        /// Who signed the request.
        authenticated: String,
    },
}

impl TransactionError {
    /// The Matrix error code to answer with.
    pub fn errcode(&self) -> &'static str {
        match self {
            TransactionError::NotJson => "M_NOT_JSON",
            TransactionError::TooManyPdus(_) | TransactionError::TooManyEdus(_) => "M_TOO_LARGE",
            TransactionError::WrongOrigin { .. } => "M_FORBIDDEN",
            TransactionError::BadField(_) | TransactionError::BadTxnId => "M_BAD_JSON",
        }
    }
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            TransactionError::WrongOrigin { .. } => 403,
            _ => 400,
        }
    }
}

fn objects(
    body: &mut Object,
    field: &'static str,
    required: bool,
) -> Result<Vec<Object>, TransactionError> {
    match body.remove(field) {
        None if !required => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            let max = if field == "pdus" { MAX_PDUS } else { MAX_EDUS };
            if items.len() > max {
                return Err(if field == "pdus" {
                    TransactionError::TooManyPdus(items.len())
                } else {
                    TransactionError::TooManyEdus(items.len())
                });
            }
            items
                .into_iter()
                .map(|item| match item {
                    Value::Object(object) => Ok(object),
                    _ => Err(TransactionError::BadField(field)),
                })
                .collect()
        }
        _ => Err(TransactionError::BadField(field)),
    }
}

/// Parses a `/send/{txn_id}` body from `authenticated_origin` (what
/// [`crate::request::authenticate`] returned): JSON (lenient: PDUs of room versions 1-5 may
/// hold numbers strict JSON refuses; [`check_pdu`](super::check_pdu) is strict for the
/// versions that are), an object with `origin` (the authenticated one), `origin_server_ts`,
/// `pdus` (at most 50 objects) and `edus` (optional, at most 100 objects).
pub fn parse_transaction(
    authenticated_origin: &str,
    txn_id: &str,
    body: &[u8],
) -> Result<Transaction, TransactionError> {
    if txn_id.is_empty() || txn_id.len() > MAX_TXN_ID_BYTES {
        return Err(TransactionError::BadTxnId);
    }
    let mut body = match json::parse_lenient(body) {
        Ok(Value::Object(body)) => body,
        Ok(_) => return Err(TransactionError::BadField("body")),
        Err(_) => return Err(TransactionError::NotJson),
    };
    let origin = match body.get_str("origin") {
        Some(origin) if origin == authenticated_origin => origin.to_owned(),
        Some(origin) => {
            return Err(TransactionError::WrongOrigin {
                claimed: origin.to_owned(),
                authenticated: authenticated_origin.to_owned(),
            });
        }
        None => return Err(TransactionError::BadField("origin")),
    };
    let origin_server_ts = body
        .get("origin_server_ts")
        .and_then(Value::as_i64)
        .ok_or(TransactionError::BadField("origin_server_ts"))?;
    let pdus = objects(&mut body, "pdus", true)?;
    let edus = objects(&mut body, "edus", false)?;
    Ok(Transaction { origin, txn_id: txn_id.to_owned(), origin_server_ts, pdus, edus })
}

/// [`parse_transaction`], then whether `(origin, txn_id)` was processed already. `Err` only
/// when storage failed.
pub async fn receive_transaction(
    store: &(impl QueueStore + ?Sized),
    authenticated_origin: &str,
    txn_id: &str,
    body: &[u8],
) -> Result<Result<Incoming, TransactionError>, FederationError> {
    let transaction = match parse_transaction(authenticated_origin, txn_id, body) {
        Ok(transaction) => transaction,
        Err(e) => return Ok(Err(e)),
    };
    if store.transaction_seen(&transaction.origin, &transaction.txn_id).await? {
        return Ok(Ok(Incoming::Duplicate));
    }
    Ok(Ok(Incoming::New(transaction)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use matrix_storage::memory::MemoryStore;
    use matrix_storage::{ChangeSet, Storage};

    fn body(origin: &str, pdus: usize, edus: usize) -> Vec<u8> {
        let pdus = vec![r#"{"type":"m.room.message"}"#; pdus].join(",");
        let edus = vec![r#"{"edu_type":"m.typing","content":{}}"#; edus].join(",");
        format!(r#"{{"origin":"{origin}","origin_server_ts":5,"pdus":[{pdus}],"edus":[{edus}]}}"#)
            .into_bytes()
    }

    #[test]
    fn bodies_within_the_limits_parse() {
        let txn = parse_transaction("a.example", "t1", &body("a.example", 50, 100)).expect("ok");
        assert_eq!((txn.pdus.len(), txn.edus.len(), txn.origin_server_ts), (50, 100, 5));
        assert_eq!(txn.seen(), ("a.example".to_owned(), "t1".to_owned()));
        // `edus` may be left out.
        let bare = br#"{"origin":"a.example","origin_server_ts":1,"pdus":[]}"#;
        assert!(parse_transaction("a.example", "t", bare).expect("ok").edus.is_empty());
    }

    #[test]
    fn oversized_forged_and_malformed_bodies_are_refused() {
        let refused = |origin: &str, txn: &str, body: &[u8]| {
            parse_transaction(origin, txn, body).expect_err("refused")
        };
        let e = refused("a.example", "t", &body("a.example", 51, 0));
        assert_eq!(
            (e.clone(), e.errcode(), e.status()),
            (TransactionError::TooManyPdus(51), "M_TOO_LARGE", 400)
        );
        assert_eq!(
            refused("a.example", "t", &body("a.example", 0, 101)),
            TransactionError::TooManyEdus(101)
        );
        let e = refused("b.example", "t", &body("a.example", 1, 0));
        assert_eq!((e.errcode(), e.status()), ("M_FORBIDDEN", 403));
        assert!(matches!(e, TransactionError::WrongOrigin { .. }));
        let cases: [(&[u8], TransactionError); 7] = [
            (b"{", TransactionError::NotJson),
            (b"[]", TransactionError::BadField("body")),
            (br#"{"origin_server_ts":1,"pdus":[]}"#, TransactionError::BadField("origin")),
            (
                br#"{"origin":"a.example","pdus":[]}"#,
                TransactionError::BadField("origin_server_ts"),
            ),
            (br#"{"origin":"a.example","origin_server_ts":1}"#, TransactionError::BadField("pdus")),
            (
                br#"{"origin":"a.example","origin_server_ts":1,"pdus":[1]}"#,
                TransactionError::BadField("pdus"),
            ),
            (
                br#"{"origin":"a.example","origin_server_ts":1,"pdus":[],"edus":{}}"#,
                TransactionError::BadField("edus"),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                refused("a.example", "t", body),
                expected,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(refused("a.example", "", &body("a.example", 0, 0)), TransactionError::BadTxnId);
        let long = "x".repeat(MAX_TXN_ID_BYTES + 1);
        assert_eq!(
            refused("a.example", &long, &body("a.example", 0, 0)),
            TransactionError::BadTxnId
        );
    }

    #[tokio::test]
    async fn a_transaction_seen_before_is_a_duplicate() {
        let store = MemoryStore::new();
        let body = body("a.example", 1, 0);
        let Ok(Incoming::New(txn)) =
            receive_transaction(&store, "a.example", "t1", &body).await.expect("storage")
        else {
            panic!("new")
        };
        let mut changes = ChangeSet::new();
        changes.seen_transactions.push(txn.seen());
        store.apply(changes).await.expect("stored");
        let again = receive_transaction(&store, "a.example", "t1", &body).await.expect("storage");
        assert_eq!(again, Ok(Incoming::Duplicate));
        // The same id from another server is another transaction.
        let other = receive_transaction(&store, "b.example", "t1", &self::body("b.example", 1, 0))
            .await
            .expect("storage");
        assert!(matches!(other, Ok(Incoming::New(_))));
    }
}
