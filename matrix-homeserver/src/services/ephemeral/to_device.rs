//! To-device messages, in storage: one queue per device, bounded in messages and bytes, in
//! total and per sender; a `sendToDevice` transaction id is recorded with the messages it
//! queued, so a client's retry (even after a restart) is not delivered twice. A device's
//! messages are deleted once a sync token past them comes back (the client has them).

use std::collections::BTreeMap;

use matrix_storage::{
    ChangeSet, ErrorKind, NewToDevice, StreamPos, ToDeviceMessage, TransactionId,
};
use serde_json::Value;

use super::Ephemeral;
use crate::error::ApiError;

/// The scope of `sendToDevice` transaction ids.
const SCOPE: &str = "sendToDevice";

/// The bounds of a queue, from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
    pub(crate) messages_per_sender: usize,
    pub(crate) bytes_per_sender: usize,
}

fn full() -> ApiError {
    ApiError::limit_exceeded_with(
        10_000,
        "a receiving device's to-device queue is full (in messages or bytes, or of this \
         sender's)",
    )
}

impl Ephemeral {
    /// Queues to-device messages for `targets` (existing devices, as the caller checked), all
    /// or none: 429 when a queue would pass its bounds. A transaction id the sending device
    /// used before is answered without queueing again. `enqueue` (the EDUs carrying the
    /// send's messages for other servers' users) is queued in the same change set, so it too
    /// goes once.
    pub(crate) async fn send_to_device(
        &self,
        sender: (&str, &str),
        txn: &str,
        kind: &str,
        targets: Vec<(String, String, Value)>,
        enqueue: Vec<(String, std::sync::Arc<[u8]>)>,
    ) -> Result<(), ApiError> {
        let storage = &self.storage;
        if storage.transaction_id(sender.0, sender.1, SCOPE, txn).await?.is_some() {
            return Ok(());
        }
        let messages: Vec<NewToDevice> = targets
            .into_iter()
            .map(|(user, device, content)| NewToDevice {
                user_id: user,
                device_id: device,
                sender: sender.0.to_owned(),
                kind: kind.to_owned(),
                content: serde_json::to_vec(&content).unwrap_or_default(),
            })
            .collect();
        // What this send adds to each queue, checked against what waits there.
        let mut adding: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
        for message in &messages {
            let entry = adding.entry((&message.user_id, &message.device_id)).or_default();
            entry.0 += 1;
            entry.1 += message.size();
        }
        let limits = self.limits.queue;
        let over = |held: u64, more: u64, max: usize| {
            usize::try_from(held.saturating_add(more)).unwrap_or(usize::MAX) > max
        };
        // Sends are checked and queued one at a time, so that two concurrent sends to one
        // device cannot both pass its bound.
        let sends = self.sends.lock().await;
        for ((user, device), (count, bytes)) in &adding {
            let usage = storage.to_device_usage(user, device, sender.0).await?;
            if over(usage.messages, *count, limits.messages)
                || over(usage.bytes, *bytes, limits.bytes)
                || over(usage.sender_messages, *count, limits.messages_per_sender)
                || over(usage.sender_bytes, *bytes, limits.bytes_per_sender)
            {
                return Err(full());
            }
        }
        let mut users: Vec<String> = adding.keys().map(|(user, _)| (*user).to_owned()).collect();
        users.dedup();
        let mut changes = ChangeSet::new();
        changes.to_device = messages;
        changes.enqueue = enqueue;
        changes.transaction_ids.push(TransactionId {
            user_id: sender.0.to_owned(),
            device_id: sender.1.to_owned(),
            scope: SCOPE.to_owned(),
            txn_id: txn.to_owned(),
            result: String::new(),
        });
        match storage.apply(changes).await {
            Ok(_) => {}
            // The same transaction committed meanwhile (another process): sent once.
            Err(e) if e.kind() == ErrorKind::Conflict => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        drop(sends);
        self.wakeups.wake_all_of(users.iter().map(String::as_str));
        Ok(())
    }

    /// The to-device messages of a device at stream positions in `(since, upto]`; those at or
    /// before `since` were delivered (the client's token says so) and are deleted.
    pub(crate) async fn to_device_since(
        &self,
        user: &str,
        device: &str,
        since: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<ToDeviceMessage>, ApiError> {
        let storage = &self.storage;
        let zero = StreamPos(0);
        if since > zero && !storage.to_device(user, device, zero, since, 1).await?.is_empty() {
            let mut changes = ChangeSet::new();
            changes.to_device_delivered.push((user.to_owned(), device.to_owned(), since));
            storage.apply(changes).await?;
        }
        // The queue is bounded, so this is too.
        Ok(storage.to_device(user, device, since, upto, usize::MAX).await?)
    }
}
