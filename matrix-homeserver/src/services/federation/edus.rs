//! EDUs other servers send: what their users do that is not a room event. Each one is about
//! users of the sending server only; one about anybody else is dropped, as are kinds this
//! server does not handle (the spec has servers ignore unknown EDUs). Room EDUs (typing,
//! receipts) are taken only from joined members of rooms this server is in, and only if the
//! room's server ACL allows the origin ([`server_acl_allows`]); presence and device-list
//! updates only about users who have joined such a room ([`shares_a_room`]).
//!
//! A malformed or refused EDU is dropped without failing its transaction; only a storage
//! failure does (the sending server then retries the transaction, which is deduplicated only
//! once it succeeded).

use std::collections::BTreeSet;
use std::time::Duration;

use matrix_core::{Object, Value};
use matrix_storage::{PresenceState, Receipt, ReceiptKey};

use crate::State;
use crate::error::ApiError;
use crate::services::presence::{MAX_PUSH, from_edu};

/// How long a remote user's typing notice lasts without a renewal (the sending server sends
/// `typing: false` when it ends sooner).
const REMOTE_TYPING: Duration = Duration::from_secs(30);

/// The most rooms one `m.receipt` EDU may name; a larger one is dropped whole.
pub(crate) const MAX_RECEIPT_ROOMS: usize = 100;
/// The most users one room of an `m.receipt` EDU may name; a larger room is dropped.
pub(crate) const MAX_RECEIPT_USERS: usize = 100;
/// The most devices one `m.direct_to_device` EDU may address (across its users); a larger
/// one is dropped whole.
pub(crate) const MAX_TO_DEVICE_TARGETS: usize = 1000;
/// The longest `message_id` the spec allows (codepoints).
const MAX_MESSAGE_ID: usize = 32;

/// The sender device recorded for to-device messages from other servers (their devices are
/// not ours; the transaction-id record needs one).
const REMOTE_SENDER_DEVICE: &str = "";

/// Whether `user` is a user of `origin`.
fn of_origin(user: &str, origin: &str) -> bool {
    user.split_once(':').is_some_and(|(_, server)| server == origin)
}

/// Whether the room's `m.room.server_acl` lets `origin` take part. Every room EDU passes
/// through this one function.
async fn server_acl_allows(state: &State, origin: &str, room: &str) -> Result<bool, ApiError> {
    state.rooms.server_allowed(room, origin).await
}

/// Whether `room` has a joined member of ours and its ACL allows `origin`: a room whose
/// ephemeral news from `origin` concerns us. Residency is the rooms service's, cached per
/// current state (the check PDUs pass too), so an EDU does not read the member list.
async fn room_shared(state: &State, origin: &str, room: &str) -> Result<bool, ApiError> {
    Ok(state.rooms.is_resident(room).await? && server_acl_allows(state, origin, room).await?)
}

/// Whether `user` is a user of `origin` joined to `room`.
async fn joined_of_origin(
    state: &State,
    origin: &str,
    room: &str,
    user: &str,
) -> Result<bool, ApiError> {
    Ok(of_origin(user, origin)
        && state.rooms.storage().membership(room, user).await?.as_deref() == Some("join"))
}

/// Whether `user` (of `origin`) is joined to `room`, a room with a joined member of ours, and
/// the room's ACL allows `origin`.
async fn joined_in_shared_room(
    state: &State,
    origin: &str,
    room: &str,
    user: &str,
) -> Result<bool, ApiError> {
    Ok(joined_of_origin(state, origin, room, user).await?
        && room_shared(state, origin, room).await?)
}

/// Whether `user` (of `origin`) has joined a room with a joined member of ours whose ACL
/// allows `origin`.
async fn shares_a_room(state: &State, origin: &str, user: &str) -> Result<bool, ApiError> {
    for (room, membership) in state.rooms.storage().rooms_of_user(user).await? {
        if membership == "join" && room_shared(state, origin, &room).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Handles one EDU from `origin`.
pub(crate) async fn received(state: &State, origin: &str, edu: &Object) -> Result<(), ApiError> {
    let Some(content) = edu.get_object("content") else { return Ok(()) };
    match edu.get_str("edu_type") {
        Some("m.typing") => typing(state, origin, content).await,
        Some("m.receipt") => receipts(state, origin, content).await,
        Some("m.direct_to_device") => to_device(state, origin, content).await,
        Some("m.device_list_update" | "m.signing_key_update") => {
            device_list(state, origin, content).await
        }
        Some("m.presence") => presence(state, origin, content).await,
        _ => Ok(()),
    }
}

/// `m.typing`: a joined user of `origin` starts or stops typing in a room we share.
async fn typing(state: &State, origin: &str, content: &Object) -> Result<(), ApiError> {
    let (Some(room), Some(user)) = (content.get_str("room_id"), content.get_str("user_id")) else {
        return Ok(());
    };
    if !joined_in_shared_room(state, origin, room, user).await? {
        return Ok(());
    }
    let typing = matches!(content.get("typing"), Some(Value::Bool(true)));
    state.ephemeral.set_typing(room, user, typing.then_some(REMOTE_TYPING)).await;
    Ok(())
}

/// `m.presence`: the presence of users of `origin` who share a room with ours (see
/// [`shares_a_room`]). Of its `push`, the first [`MAX_PUSH`] entries are looked at; an entry
/// that is malformed (an unknown state, a status message that is not a string or is over
/// the bound, a negative `last_active_ago`) or about anybody else is dropped. Nothing when
/// presence is off.
async fn presence(state: &State, origin: &str, content: &Object) -> Result<(), ApiError> {
    if !state.presence.enabled() {
        return Ok(());
    }
    let Some(Value::Array(push)) = content.get("push") else { return Ok(()) };
    let max_status = state.presence.max_status_msg_bytes();
    let mut updates = Vec::new();
    for entry in push.iter().take(MAX_PUSH).filter_map(Value::as_object) {
        let Some(user) = entry.get_str("user_id") else { continue };
        if !of_origin(user, origin) || ruma::UserId::parse(user).is_err() {
            continue;
        }
        let Some(presence) = entry.get_str("presence").and_then(PresenceState::from_name) else {
            continue;
        };
        let status_msg = match entry.get("status_msg") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.len() <= max_status => Some(text.clone()),
            Some(_) => continue,
        };
        let last_active_ago = match entry.get("last_active_ago") {
            None => None,
            Some(value) => match value.as_i64().and_then(|n| u64::try_from(n).ok()) {
                Some(ago) => Some(ago),
                None => continue,
            },
        };
        let active = matches!(entry.get("currently_active"), Some(Value::Bool(true)));
        if !shares_a_room(state, origin, user).await? {
            continue;
        }
        updates.push((user.to_owned(), from_edu(presence, status_msg, last_active_ago, active)));
    }
    state.presence.received(updates).await
}

/// Whether a receipt's `thread_id` is one the client API would take too.
fn valid_thread(thread: &str) -> bool {
    thread == "main"
        || (thread.len() >= 2 && thread.starts_with('$') && ruma::EventId::parse(thread).is_ok())
}

/// `m.receipt`: read receipts of joined users of `origin`, for events we have, stored in one
/// change set. An EDU naming more than [`MAX_RECEIPT_ROOMS`] rooms is dropped, as is a room
/// naming more than [`MAX_RECEIPT_USERS`] users; receipts of other kinds are ignored (only
/// `m.read` is public).
async fn receipts(state: &State, origin: &str, content: &Object) -> Result<(), ApiError> {
    if content.len() > MAX_RECEIPT_ROOMS {
        return Ok(());
    }
    let storage = state.rooms.storage();
    let mut receipts = Vec::new();
    for (room, kinds) in content.iter() {
        let Some(users) = kinds.as_object().and_then(|k| k.get_object("m.read")) else {
            continue;
        };
        if users.len() > MAX_RECEIPT_USERS || !room_shared(state, origin, room).await? {
            continue;
        }
        for (user, receipt) in users.iter() {
            let Some(receipt) = receipt.as_object() else { continue };
            let event_id = match receipt.get("event_ids") {
                Some(Value::Array(ids)) => ids.first().and_then(Value::as_str),
                _ => None,
            };
            let Some(event_id) = event_id else { continue };
            let data = receipt.get_object("data");
            let ts = data.and_then(|d| d.get("ts")).and_then(Value::as_i64).unwrap_or(0);
            let thread = data.and_then(|d| d.get_str("thread_id"));
            if thread.is_some_and(|t| !valid_thread(t)) {
                continue;
            }
            if !joined_of_origin(state, origin, room, user).await? {
                continue;
            }
            let stored = storage.event(event_id).await?.filter(|e| e.room_id == *room);
            let Some(event_pos) = stored.and_then(|e| e.stream) else { continue };
            receipts.push(Receipt {
                key: ReceiptKey {
                    room_id: room.to_owned(),
                    user_id: user.to_owned(),
                    kind: "m.read".to_owned(),
                    thread: thread.map(str::to_owned),
                },
                event_id: event_id.to_owned(),
                event_pos,
                ts: u64::try_from(ts).unwrap_or(0),
            });
        }
    }
    state.ephemeral.set_remote_receipts(receipts).await
}

/// `m.direct_to_device`: messages of a user of `origin` for devices of our users, queued as
/// the client API's `sendToDevice` queues them (bounded per device and sender), once per
/// `message_id`. Messages for users of other servers and unknown devices are dropped; a
/// message a full queue cannot take is dropped too (the spec has no way to refuse one EDU).
async fn to_device(state: &State, origin: &str, content: &Object) -> Result<(), ApiError> {
    let (Some(sender), Some(kind), Some(message_id), Some(messages)) = (
        content.get_str("sender"),
        content.get_str("type"),
        content.get_str("message_id"),
        content.get_object("messages"),
    ) else {
        return Ok(());
    };
    if !of_origin(sender, origin)
        || message_id.is_empty()
        || message_id.chars().count() > MAX_MESSAGE_ID
        || messages.len() > state.config.limits.max_users_per_key_query
        || messages.iter().filter_map(|(_, v)| v.as_object()).map(Object::len).sum::<usize>()
            > MAX_TO_DEVICE_TARGETS
    {
        return Ok(());
    }
    let ours = state.rooms.server_name().as_str();
    let mut deliveries = Vec::new();
    for (user, devices) in messages.iter() {
        let Some(devices) = devices.as_object() else { continue };
        let Ok(id) = ruma::UserId::parse(user) else { continue };
        if id.server_name().as_str() != ours {
            continue;
        }
        let existing: BTreeSet<String> =
            state.accounts.devices(&id).await?.into_iter().map(|d| d.device_id).collect();
        for (device, message) in devices.iter() {
            let Some(message) = message.as_object() else { continue };
            let message = serde_value(message);
            if device == "*" {
                for known in &existing {
                    deliveries.push((user.to_owned(), known.clone(), message.clone()));
                }
            } else if existing.contains(device) {
                deliveries.push((user.to_owned(), device.to_owned(), message));
            }
        }
    }
    if deliveries.len() > MAX_TO_DEVICE_TARGETS {
        return Ok(());
    }
    let from = (sender, REMOTE_SENDER_DEVICE);
    match state.ephemeral.send_to_device(from, message_id, kind, deliveries, Vec::new()).await {
        Err(e) if e.errcode() == "M_LIMIT_EXCEEDED" => Ok(()),
        other => other,
    }
}

/// matrix-core JSON to serde_json (as the to-device queue stores it).
fn serde_value(object: &Object) -> serde_json::Value {
    let mut bytes = Vec::with_capacity(object.canonical_len());
    object.write_canonical(&mut bytes);
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

/// `m.device_list_update` (and `m.signing_key_update`): a user of `origin` who shares a room
/// with one of ours changed their devices or keys. Their keys are not kept here (our
/// `/keys/query` asks their server); the change is noted so that our users' syncs list them
/// in `device_lists.changed` and their clients query again.
async fn device_list(state: &State, origin: &str, content: &Object) -> Result<(), ApiError> {
    let Some(user) = content.get_str("user_id") else { return Ok(()) };
    if !of_origin(user, origin) || ruma::UserId::parse(user).is_err() {
        return Ok(());
    }
    if !shares_a_room(state, origin, user).await? {
        return Ok(());
    }
    state.ephemeral.remote_device_list_changed(user).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_belong_to_their_server_only() {
        assert!(of_origin("@a:b.test", "b.test"));
        assert!(!of_origin("@a:b.test", "c.test"));
        assert!(!of_origin("@a:b.test:8448", "b.test"));
        assert!(!of_origin("nobody", "b.test"));
    }

    #[test]
    fn threads_are_main_or_event_ids() {
        assert!(valid_thread("main"));
        assert!(valid_thread("$abc"));
        assert!(!valid_thread("thread"));
        assert!(!valid_thread("$"));
    }
}
