//! EDUs our users cause, for the other servers they concern: typing notices (in memory only,
//! [`Sender::send_ephemeral`]), public read receipts, to-device messages for remote users and
//! device-list updates (durable: queued in the change set of what caused them, then
//! [`Sender::notify`]).
//!
//! Every function here does nothing when federation is off (no sender).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use matrix_core::{Object, Value};
use matrix_federation::sender::{Outbound, Sender};
use matrix_storage::Storage;

use crate::State;
use crate::error::ApiError;

/// Items to queue for other servers: `(destination, payload)`, as
/// [`matrix_storage::ChangeSet::enqueue`] takes them.
pub(crate) type Queued = Vec<(String, Arc<[u8]>)>;

/// The last `stream_id` given to a device-list update by this process.
static LAST_DEVICE_LIST_STREAM_ID: AtomicU64 = AtomicU64::new(0);

/// A new `stream_id` for an `m.device_list_update`: the time in microseconds, or one more than
/// the last one when the clock has not moved past it. Increasing per process and across
/// restarts (the clock moves on), so unique per user as the spec asks.
fn next_stream_id() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0);
    let mut last = LAST_DEVICE_LIST_STREAM_ID.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST_DEVICE_LIST_STREAM_ID.compare_exchange_weak(
            last,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// The `stream_id` to answer `/user/devices` with: newer than every update sent so far.
pub(crate) fn stream_id() -> u64 {
    next_stream_id()
}

/// The sender, when federation is on.
fn sender(state: &State) -> Option<&Arc<Sender>> {
    state.rooms.outbound()
}

/// The other servers with joined members in `room` now (none for a room we do not know).
pub(crate) async fn room_servers(state: &State, room: &str) -> Result<Vec<String>, ApiError> {
    let Some(info) = state.rooms.storage().room(room).await? else { return Ok(Vec::new()) };
    let Some(snapshot) = info.current_state else { return Ok(Vec::new()) };
    Ok((*state.rooms.remote_servers(room, snapshot).await?).clone())
}

/// Tells the sender that items for `queued`'s destinations were stored.
pub(crate) fn notify(state: &State, queued: &Queued) {
    let Some(sender) = sender(state) else { return };
    let destinations: BTreeSet<&str> = queued.iter().map(|(d, _)| d.as_str()).collect();
    for destination in destinations {
        sender.notify(destination);
    }
}

fn payload(edu_type: &str, content: Object) -> Arc<[u8]> {
    Outbound::edu(edu_type, content).to_payload()
}

/// `m.typing` to the other servers in `room`: `user` started (`timeout` given) or stopped
/// typing. Receiving servers end a notice themselves after their own timeout.
pub(crate) async fn typing(
    state: &State,
    room: &str,
    user: &str,
    timeout: Option<Duration>,
) -> Result<(), ApiError> {
    let Some(sender) = sender(state) else { return Ok(()) };
    let servers = room_servers(state, room).await?;
    if servers.is_empty() {
        return Ok(());
    }
    let mut content = Object::new();
    content.insert("room_id", room);
    content.insert("user_id", user);
    content.insert("typing", timeout.is_some());
    let mut edu = Object::new();
    edu.insert("edu_type", "m.typing");
    edu.insert("content", content);
    for server in servers {
        sender.send_ephemeral(&server, edu.clone());
    }
    Ok(())
}

/// The `m.receipt` items for a public read receipt of `user` in `room`, for every other
/// server in the room (to queue with the receipt).
pub(crate) async fn receipt(
    state: &State,
    room: &str,
    user: &str,
    event_id: &str,
    thread: Option<&str>,
    ts: u64,
) -> Result<Queued, ApiError> {
    if sender(state).is_none() {
        return Ok(Vec::new());
    }
    let servers = room_servers(state, room).await?;
    if servers.is_empty() {
        return Ok(Vec::new());
    }
    let mut data = Object::new();
    data.insert("ts", i64::try_from(ts).unwrap_or(i64::MAX));
    if let Some(thread) = thread {
        data.insert("thread_id", thread);
    }
    let mut receipt = Object::new();
    receipt.insert("event_ids", vec![Value::from(event_id)]);
    receipt.insert("data", data);
    let mut by_user = Object::new();
    by_user.insert(user, receipt);
    let mut by_kind = Object::new();
    by_kind.insert("m.read", by_user);
    let mut content = Object::new();
    content.insert(room, by_kind);
    let payload = payload("m.receipt", content);
    Ok(servers.into_iter().map(|server| (server, payload.clone())).collect())
}

/// The `m.direct_to_device` items for messages of `sender` to remote users: one EDU per server
/// with all of its users' messages (`messages`: user -> device or `*` -> content), each with
/// its own `message_id`.
pub(crate) fn to_device(
    state: &State,
    sender_user: &str,
    kind: &str,
    messages: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
) -> Queued {
    if sender(state).is_none() {
        return Vec::new();
    }
    let mut by_server: BTreeMap<String, Object> = BTreeMap::new();
    for (user, devices) in messages {
        let Some((_, server)) = user.split_once(':') else { continue };
        let mut by_device = Object::new();
        for (device, content) in devices {
            by_device.insert(device, json_value(&content));
        }
        by_server.entry(server.to_owned()).or_default().insert(user.clone(), by_device);
    }
    by_server
        .into_iter()
        .map(|(server, messages)| {
            let mut content = Object::new();
            content.insert("sender", sender_user);
            content.insert("type", kind);
            content.insert("message_id", message_id());
            content.insert("messages", messages);
            (server, payload("m.direct_to_device", content))
        })
        .collect()
}

/// A random `message_id` (the spec allows at most 32 codepoints).
fn message_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough without randomness: the time and a counter.
        return format!("t{}", next_stream_id());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// serde_json to matrix-core JSON (content a client sent, parsed already).
fn json_value(value: &serde_json::Value) -> Value {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    matrix_core::json::parse_lenient(&bytes).unwrap_or(Value::Object(Object::new()))
}

/// The other servers with a joined member in a room `user` has joined (read from the
/// membership tables, not the room service's cache: device changes are rare).
async fn servers_sharing(
    storage: &dyn Storage,
    ours: &str,
    user: &str,
) -> Result<BTreeSet<String>, ApiError> {
    let mut servers = BTreeSet::new();
    for (room, membership) in storage.rooms_of_user(user).await? {
        if membership != "join" {
            continue;
        }
        for (member, membership) in storage.members(&room).await? {
            if membership == "join"
                && let Some((_, server)) = member.split_once(':')
                && server != ours
            {
                servers.insert(server.to_owned());
            }
        }
    }
    Ok(servers)
}

/// What changed about one device of ours, for an `m.device_list_update`.
#[derive(Debug, Clone)]
pub(crate) enum DeviceChange {
    /// The device has these keys (and this display name) now.
    Keys { device_id: String, display_name: Option<String>, keys: serde_json::Value },
    /// The device is gone.
    Deleted { device_id: String },
}

/// The `m.device_list_update` items for changes of `user`'s devices, for every server sharing
/// a room with them (`ours`: our server name). `prev_id` is left empty: receivers then fetch
/// the whole list with `/user/devices` (the spec allows it; it costs a request per change).
pub(crate) async fn device_list_updates(
    storage: &dyn Storage,
    ours: &str,
    user: &str,
    changes: &[DeviceChange],
) -> Result<Queued, ApiError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let servers = servers_sharing(storage, ours, user).await?;
    if servers.is_empty() {
        return Ok(Vec::new());
    }
    let mut queued = Vec::new();
    for change in changes {
        let mut content = Object::new();
        content.insert("user_id", user);
        content.insert("stream_id", i64::try_from(next_stream_id()).unwrap_or(i64::MAX));
        content.insert("prev_id", Vec::<Value>::new());
        match change {
            DeviceChange::Keys { device_id, display_name, keys } => {
                content.insert("device_id", device_id.as_str());
                if let Some(name) = display_name {
                    content.insert("device_display_name", name.as_str());
                }
                content.insert("keys", json_value(keys));
            }
            DeviceChange::Deleted { device_id } => {
                content.insert("device_id", device_id.as_str());
                content.insert("deleted", true);
            }
        }
        let payload = payload("m.device_list_update", content);
        queued.extend(servers.iter().map(|server| (server.clone(), payload.clone())));
    }
    Ok(queued)
}

/// The `m.signing_key_update` for a change of `user`'s master or self-signing key (the
/// keys as they are now), for every server sharing a room with them (`ours`: our server
/// name). The user-signing key is never sent.
pub(crate) async fn signing_key_updates(
    storage: &dyn Storage,
    ours: &str,
    user: &str,
    master: Option<&serde_json::Value>,
    self_signing: Option<&serde_json::Value>,
) -> Result<Queued, ApiError> {
    if master.is_none() && self_signing.is_none() {
        return Ok(Vec::new());
    }
    let servers = servers_sharing(storage, ours, user).await?;
    let mut content = Object::new();
    content.insert("user_id", user);
    if let Some(master) = master {
        content.insert("master_key", json_value(master));
    }
    if let Some(self_signing) = self_signing {
        content.insert("self_signing_key", json_value(self_signing));
    }
    let payload = payload("m.signing_key_update", content);
    Ok(servers.into_iter().map(|server| (server, payload.clone())).collect())
}

/// [`device_list_updates`] when federation is on, nothing otherwise.
pub(crate) async fn device_list(
    state: &State,
    user: &str,
    changes: &[DeviceChange],
) -> Result<Queued, ApiError> {
    if sender(state).is_none() {
        return Ok(Vec::new());
    }
    let storage = state.rooms.storage().as_ref();
    device_list_updates(storage, state.rooms.server_name().as_str(), user, changes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_increase() {
        let first = next_stream_id();
        let second = next_stream_id();
        assert!(second > first);
    }

    #[test]
    fn message_ids_fit_the_spec() {
        let id = message_id();
        assert!(!id.is_empty() && id.chars().count() <= 32, "{id}");
        assert_ne!(id, message_id());
    }
}
