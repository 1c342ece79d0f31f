//! The device parts of a transaction, as Synapse sends them: to-device messages for the
//! service's users' devices (MSC4203, formerly part of MSC2409: `de.sorunome.msc2409.to_device`,
//! for services that receive ephemeral events), and for services with `org.matrix.msc3202`
//! the users whose device lists changed (`org.matrix.msc3202.device_lists`) and the one-time
//! key counts and unused fallback key types of the service's users' devices
//! (`org.matrix.msc3202.device_one_time_keys_count`, also under Synapse's other spelling
//! `device_one_time_key_counts`, and `org.matrix.msc3202.device_unused_fallback_key_types`).
//!
//! To-device messages and device-list changes have stream positions: a transaction carries
//! those in the stream range it covers, like its events, so a transaction sent again after a
//! restart carries the same ones. A to-device message for a user in an *exclusive* user
//! namespace (or the service's sender) leaves the device's queue when the service took the
//! transaction; one for a user in a shared namespace stays for the user's own clients (a
//! real user's `/sync` must still get it).

use std::collections::{BTreeMap, BTreeSet};

use matrix_storage::{Storage, StreamPos};
use serde_json::{Map, Value, json};

use super::Appservice;
use crate::error::ApiError;

/// The most to-device messages read for one transaction (those of other users included).
pub(crate) const MAX_TO_DEVICE: usize = 100;

/// The to-device part of a transaction.
#[derive(Debug, Clone, Default)]
pub(super) struct ToDevice {
    /// The messages, in stream order, with `to_user_id` and `to_device_id`.
    pub(super) messages: Vec<Value>,
    /// The devices whose queues the service consumes: once it took the transaction, their
    /// messages up to the transaction's position are deleted.
    pub(super) consumed: BTreeSet<(String, String)>,
}

/// The messages in `(after, upto]` for the service's users, reading at most `limit`; and the
/// position read up to (`upto`, or the last message read when the limit cut it short).
pub(super) async fn to_device(
    storage: &dyn Storage,
    service: &Appservice,
    after: StreamPos,
    upto: StreamPos,
    limit: usize,
) -> Result<(ToDevice, StreamPos), ApiError> {
    let read = storage.to_device_range(after, upto, limit).await?;
    let reached = match read.last() {
        Some(last) if read.len() >= limit => last.message.pos,
        _ => upto,
    };
    let mut part = ToDevice::default();
    for addressed in read {
        if !service.is_interested_in_user(&addressed.user_id) {
            continue;
        }
        let message = &addressed.message;
        let content: Value = serde_json::from_slice(&message.content)
            .map_err(|_| ApiError::unknown("a stored to-device message does not parse"))?;
        part.messages.push(json!({
            "to_user_id": addressed.user_id,
            "to_device_id": addressed.device_id,
            "sender": message.sender,
            "type": message.kind,
            "content": content,
        }));
        if service.is_exclusive_user(&addressed.user_id) {
            part.consumed.insert((addressed.user_id, addressed.device_id));
        }
    }
    Ok((part, reached))
}

/// The one-time key counts (user -> device -> algorithm -> count) and unused fallback key
/// types (user -> device -> algorithms) of every device of `users`; a device without keys
/// is listed with none, as Synapse does.
pub(super) async fn key_counts(
    storage: &dyn Storage,
    users: &BTreeSet<String>,
) -> Result<(Map<String, Value>, Map<String, Value>), ApiError> {
    let mut counts = Map::new();
    let mut fallback = Map::new();
    for user in users {
        let devices = storage.devices(user).await?;
        if devices.is_empty() {
            continue;
        }
        let mut user_counts = Map::new();
        let mut user_fallback = Map::new();
        for device in devices {
            let id = device.device_id;
            let by_algorithm: BTreeMap<String, u64> =
                storage.one_time_key_counts(user, &id).await?;
            user_counts.insert(id.clone(), json!(by_algorithm));
            let unused: Vec<String> = storage
                .fallback_keys(user, &id)
                .await?
                .into_iter()
                .filter(|key| !key.used)
                .map(|key| key.algorithm)
                .collect();
            user_fallback.insert(id, json!(unused));
        }
        counts.insert(user.clone(), Value::Object(user_counts));
        fallback.insert(user.clone(), Value::Object(user_fallback));
    }
    Ok((counts, fallback))
}
