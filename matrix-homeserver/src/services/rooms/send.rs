//! Sending: message and state events, with transaction-id idempotency, and redactions.
//!
//! A transaction id is scoped to the device that sent it and to the request's path (its room,
//! and the event type or the redacted event), as Synapse scopes it. Concurrent requests with
//! the same id share one cell: the first builds the event, the others wait for its id. The cells are
//! kept in memory (the most recent 16,384), so a retry after a restart sends again.

use std::sync::Arc;

use matrix_core::json::{Object, Value};
use ruma::UserId;
use tokio::sync::OnceCell;

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
        // The cell is filled in a task of its own: a request dropped after the event is
        // stored still records its id, so the client's retry gets it instead of a second
        // event.
        let me = self.me.upgrade().ok_or_else(|| ApiError::unknown("the server is stopping"))?;
        let (room_id, sender, device, txn) =
            (room_id.to_owned(), sender.to_owned(), device.to_owned(), txn.to_owned());
        tokio::spawn(async move {
            cell.get_or_try_init(|| async {
                let pdu = me.append_now(&room_id, &sender, draft).await?;
                me.echoes.insert(pdu.event_id().to_owned(), (device, txn));
                Ok::<_, ApiError>(pdu.event_id().to_owned())
            })
            .await
            .cloned()
        })
        .await
        .map_err(|_| ApiError::unknown("the event could not be stored"))?
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
