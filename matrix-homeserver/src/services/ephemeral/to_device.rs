//! To-device messages, in storage: one queue per device, bounded in messages and bytes, in
//! total and per sender; a `sendToDevice` transaction id is recorded with the messages it
//! queued, so a client's retry (even after a restart) is not delivered twice. A device's
//! messages are deleted once a sync token past them comes back (the client has them).
//!
//! A dehydrated device (MSC3814) has no client to empty its queue until one rehydrates it:
//! messages for it past its queue's bounds are dropped (the rest of the send goes on) rather
//! than refusing the whole send, which would keep the user's other devices from theirs.
//! Its messages are read in batches ([`Ephemeral::to_device_batch`]), each batch's token
//! deleting the messages of the batches before.

use std::collections::{BTreeMap, BTreeSet};

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
    /// or none: 429 when a queue would pass its bounds (a dehydrated device's full queue
    /// takes none of them instead). A transaction id the sending device
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
        let mut dropped: BTreeSet<(String, String)> = BTreeSet::new();
        for ((user, device), (count, bytes)) in &adding {
            let usage = storage.to_device_usage(user, device, sender.0).await?;
            if over(usage.messages, *count, limits.messages)
                || over(usage.bytes, *bytes, limits.bytes)
                || over(usage.sender_messages, *count, limits.messages_per_sender)
                || over(usage.sender_bytes, *bytes, limits.bytes_per_sender)
            {
                let dehydrated = storage.dehydrated_device(user).await?;
                if dehydrated.is_some_and(|d| d.device_id == *device) {
                    dropped.insert(((*user).to_owned(), (*device).to_owned()));
                    continue;
                }
                return Err(full());
            }
        }
        let mut users: Vec<String> = adding.keys().map(|(user, _)| (*user).to_owned()).collect();
        users.dedup();
        let mut changes = ChangeSet::new();
        changes.to_device = messages;
        if !dropped.is_empty() {
            changes.to_device.retain(|m| {
                !dropped.iter().any(|(user, device)| *user == m.user_id && *device == m.device_id)
            });
        }
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
        self.wake_appservices();
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
        self.delivered(user, device, since).await?;
        // The queue is bounded, so this is too.
        Ok(self.storage.to_device(user, device, since, upto, usize::MAX).await?)
    }

    /// Deletes the messages of a device at or before `since` (delivered), if it has any.
    async fn delivered(&self, user: &str, device: &str, since: StreamPos) -> Result<(), ApiError> {
        let storage = &self.storage;
        let zero = StreamPos(0);
        if since > zero && !storage.to_device(user, device, zero, since, 1).await?.is_empty() {
            let mut changes = ChangeSet::new();
            changes.to_device_delivered.push((user.to_owned(), device.to_owned(), since));
            storage.apply(changes).await?;
        }
        Ok(())
    }

    /// A batch of a device's to-device messages after `since` (at most `limit`, up to the
    /// stream position now), those at or before `since` deleted first (the token of the
    /// previous batch says the client has them); with the position to read from next: the
    /// last message's when the batch is full, else now. A `since` past now was never handed
    /// out: 400.
    pub(crate) async fn to_device_batch(
        &self,
        user: &str,
        device: &str,
        since: StreamPos,
        limit: usize,
    ) -> Result<(Vec<ToDeviceMessage>, StreamPos), ApiError> {
        let upto = self.storage.stream_position().await?;
        if since > upto {
            return Err(ApiError::invalid_param("next_batch is not a token of this server"));
        }
        self.delivered(user, device, since).await?;
        let messages = self.storage.to_device(user, device, since, upto, limit).await?;
        let next = match messages.last() {
            Some(last) if messages.len() >= limit => last.pos,
            _ => upto,
        };
        Ok((messages, next))
    }
}
