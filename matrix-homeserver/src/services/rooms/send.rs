//! Sending: message and state events, with transaction-id idempotency, and redactions.
//!
//! A transaction id is scoped to the device that sent it and to the request's path (its room,
//! and the event type or the redacted event), as Synapse scopes it. It is stored in the same
//! change set as the event it names, so a retry (even after a restart) gets the first event's
//! id. Concurrent requests with the same id share one cell (the most recent 16,384 are kept):
//! the first builds the event, the others wait for its id.

use std::sync::Arc;

use matrix_core::json::{Object, Value};
use ruma::UserId;
use tokio::sync::OnceCell;

use matrix_storage::TransactionId;

use super::{Draft, Rooms};
use crate::error::ApiError;

/// Transaction ids seen: (user, device, path, txn) -> the event sent.
pub(crate) type Transactions =
    quick_cache::sync::Cache<(String, String, String, String), Arc<OnceCell<String>>>;
/// The transaction of each event sent with one: event id -> (device, txn), for the sender's
/// `unsigned.transaction_id`.
pub(crate) type Echoes = quick_cache::sync::Cache<String, (String, String)>;

impl Rooms {
    /// Sends an event once per `(user, device, txn)`; answers the event id.
    pub(crate) async fn send_once(
        &self,
        room_id: &str,
        sender: &UserId,
        device: &str,
        txn: &str,
        draft: Draft,
    ) -> Result<String, ApiError> {
        let path = match &draft.redacts {
            Some(redacts) => format!("{room_id}/redact/{redacts}"),
            None => format!("{room_id}/send/{}", draft.kind),
        };
        let key = (sender.to_string(), device.to_owned(), path, txn.to_owned());
        let cell =
            self.txns.get_or_insert_with(&key, || Ok::<_, ApiError>(Arc::new(OnceCell::new())))?;
        if let Some(event_id) = cell.get() {
            return Ok(event_id.clone());
        }
        let record = TransactionId {
            user_id: key.0,
            device_id: key.1,
            scope: key.2,
            txn_id: key.3,
            result: String::new(),
        };
        if let Some(event_id) = self.recorded(&record).await? {
            return Ok(event_id);
        }
        if draft.state_key.is_none() && draft.redacts.is_none() {
            self.check_relation(room_id, &draft.content).await?;
        }
        // The cell is filled in a task of its own: a request dropped after the event is
        // stored still records its id, so the client's retry gets it instead of a second
        // event.
        let me = self.me.upgrade().ok_or_else(|| ApiError::unknown("the server is stopping"))?;
        let (room_id, sender, device, txn) =
            (room_id.to_owned(), sender.to_owned(), device.to_owned(), txn.to_owned());
        tokio::spawn(async move {
            cell.get_or_try_init(|| async {
                let appended =
                    me.append_recording(&room_id, &sender, draft, Some(record.clone()), None).await;
                let pdu = match appended {
                    Ok(pdu) => pdu,
                    Err(error) => {
                        // Another process committed the same transaction meanwhile: its
                        // event is the answer.
                        return match me.recorded(&record).await? {
                            Some(event_id) => Ok(event_id),
                            None => Err(error),
                        };
                    }
                };
                me.echoes.insert(pdu.event_id().to_owned(), (device, txn));
                Ok::<_, ApiError>(pdu.event_id().to_owned())
            })
            .await
            .cloned()
        })
        .await
        .map_err(|_| ApiError::unknown("the event could not be stored"))?
    }

    /// The event a transaction id produced, if its request committed.
    async fn recorded(&self, record: &TransactionId) -> Result<Option<String>, ApiError> {
        let TransactionId { user_id, device_id, scope, txn_id, .. } = record;
        Ok(self.storage().transaction_id(user_id, device_id, scope, txn_id).await?)
    }

    /// The transaction id of an event, if `device` (of the event's sender) sent it with one.
    pub(crate) fn transaction_of(&self, event_id: &str, device: &str) -> Option<String> {
        let (by_device, txn) = self.echoes.get(event_id)?;
        (by_device == device).then_some(txn)
    }

    /// Redacts `event_id` (a redaction event, sent once per transaction id).
    pub(crate) async fn redact(
        &self,
        room_id: &str,
        sender: &UserId,
        device: &str,
        txn: &str,
        event_id: &str,
        reason: Option<String>,
    ) -> Result<String, ApiError> {
        let rules = self.rules(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        // One may redact only what one can see; the power to redact others' events is
        // checked where every event is authorized.
        self.event_for(room_id, sender, event_id).await?;
        let mut content = Object::new();
        if let Some(reason) = reason {
            content.insert("reason", reason);
        }
        if rules.redacts_in_content {
            content.insert("redacts", Value::from(event_id));
        }
        let draft = Draft {
            kind: "m.room.redaction".to_owned(),
            state_key: None,
            content,
            redacts: Some(event_id.to_owned()),
        };
        self.send_once(room_id, sender, device, txn, draft).await
    }
}
