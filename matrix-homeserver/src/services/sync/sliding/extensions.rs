//! The extensions of a sliding sync: to-device messages (MSC3885), end-to-end encryption
//! counts and device lists (MSC3884), account data (MSC3959), receipts (MSC3960) and typing
//! (MSC3961). The room extensions cover the rooms of the lists and subscriptions they name.

use std::collections::{HashMap, HashSet};

use matrix_storage::StreamPos;
use serde_json::{Map, Value, json};

use super::super::Sync;
use super::request::{ExtensionsConfig, RoomsExtension, is_true};
use super::room::Context;
use crate::error::ApiError;

/// The most to-device messages one answer carries, whatever the client asks.
const MAX_TO_DEVICE: u64 = 1_000;

/// A room the answer is about, for the room extensions.
pub(super) struct Covered<'a> {
    pub(super) room_id: &'a str,
    /// The lists it is in.
    pub(super) lists: &'a [String],
    pub(super) subscribed: bool,
    pub(super) joined: bool,
    /// Sent whole in this answer (its extension data is sent whole too).
    pub(super) initial: bool,
    /// The events of its timeline in this answer.
    pub(super) timeline: &'a HashSet<String>,
}

impl Covered<'_> {
    fn taken_by(&self, extension: &RoomsExtension) -> bool {
        self.lists.iter().any(|l| extension.takes_list(l))
            || (self.subscribed && extension.takes_room(self.room_id))
    }
}

/// The extensions' answer, and whether it holds news (else the request may wait).
pub(super) struct ExtensionsOut {
    pub(super) json: Value,
    pub(super) empty: bool,
}

impl Sync {
    pub(super) async fn sliding_extensions(
        &self,
        ctx: &Context<'_>,
        config: &ExtensionsConfig,
        covered: &[Covered<'_>],
    ) -> Result<ExtensionsOut, ApiError> {
        let user = ctx.user.as_str();
        let since = ctx.since.map(|t| t.stream);
        let now = ctx.now.stream;
        let mut out = Map::new();
        let mut empty = true;

        if let Some(to_device) = config.to_device.as_ref().filter(|t| is_true(t.enabled)) {
            let from = to_device.since.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
            let limit = to_device.limit.unwrap_or(100).clamp(1, MAX_TO_DEVICE);
            let (messages, next) = self
                .ephemeral
                .to_device_batch(user, ctx.device, StreamPos(from), limit as usize)
                .await?;
            let mut events = Vec::with_capacity(messages.len());
            for m in messages {
                let content: Value = serde_json::from_slice(&m.content)
                    .map_err(|_| ApiError::unknown("a stored to-device message does not parse"))?;
                events.push(json!({"sender": m.sender, "type": m.kind, "content": content}));
            }
            empty &= events.is_empty();
            out.insert(
                "to_device".to_owned(),
                json!({"next_batch": next.0.to_string(), "events": events}),
            );
        }

        if config.e2ee.as_ref().is_some_and(|e| is_true(e.enabled)) {
            let ephemeral = &self.ephemeral;
            let mut e2ee = json!({
                "device_one_time_keys_count": ephemeral.one_time_key_counts(user, ctx.device).await?,
                "device_unused_fallback_key_types": ephemeral.fallback_key_types(user, ctx.device).await?,
            });
            if let Some(since) = since {
                let changed = ephemeral.device_lists_changed(user, since, now).await?;
                let left = ephemeral.device_lists_left(user, since, now).await?;
                empty &= changed.is_empty() && left.is_empty();
                e2ee["device_lists"] = json!({"changed": changed, "left": left});
            }
            out.insert("e2ee".to_owned(), e2ee);
        }

        if let Some(extension) = config.account_data.as_ref().filter(|e| e.on()) {
            let (json, news) = self.account_data_extension(ctx, extension, covered).await?;
            empty &= !news;
            out.insert("account_data".to_owned(), json);
        }

        if let Some(extension) = config.receipts.as_ref().filter(|e| e.on()) {
            let mut rooms = Map::new();
            // Only rooms whose receipts changed need a read (or, the log not reaching back,
            // every room).
            let changed = &ctx.receipt_rooms;
            for room in covered.iter().filter(|r| r.joined && r.taken_by(extension)) {
                if !room.initial
                    && let Some(changed) = changed
                    && !changed.contains(room.room_id)
                {
                    continue;
                }
                let from = match since {
                    Some(since) if !room.initial => since,
                    _ => StreamPos(0),
                };
                let Some(mut content) =
                    self.ephemeral.receipts_since(room.room_id, from, now, user).await?
                else {
                    continue;
                };
                if from == StreamPos(0) {
                    // Sent whole: the receipts of the events it shows, and the user's own.
                    keep_shown_receipts(&mut content, room.timeline, user);
                    if content.as_object().is_some_and(Map::is_empty) {
                        continue;
                    }
                }
                rooms.insert(
                    room.room_id.to_owned(),
                    json!({"type": "m.receipt", "content": content}),
                );
            }
            empty &= rooms.is_empty();
            out.insert("receipts".to_owned(), json!({"rooms": rooms}));
        }

        if let Some(extension) = config.typing.as_ref().filter(|e| e.on()) {
            let mut rooms = Map::new();
            for room in covered.iter().filter(|r| r.joined && r.taken_by(extension)) {
                let counter = match ctx.since {
                    Some(since) if !room.initial => since.counter,
                    _ => 0,
                };
                let Some(typing) = self.ephemeral.typing_since(room.room_id, counter) else {
                    continue;
                };
                if counter == 0 && typing.is_empty() {
                    continue;
                }
                rooms.insert(
                    room.room_id.to_owned(),
                    json!({"type": "m.typing", "content": {"user_ids": typing}}),
                );
            }
            empty &= rooms.is_empty();
            out.insert("typing".to_owned(), json!({"rooms": rooms}));
        }
        Ok(ExtensionsOut { json: Value::Object(out), empty })
    }

    /// The account data extension: global and per room, all of it on a new connection (and
    /// for rooms sent whole), else what changed since the connection's position; and whether
    /// it holds any.
    async fn account_data_extension(
        &self,
        ctx: &Context<'_>,
        extension: &RoomsExtension,
        covered: &[Covered<'_>],
    ) -> Result<(Value, bool), ApiError> {
        let user = ctx.user.as_str();
        let storage = self.rooms.storage();
        let event = |kind: &str, content: &[u8]| {
            serde_json::from_slice::<Value>(content)
                .ok()
                .map(|content| json!({"type": kind, "content": content}))
        };
        let rooms_taken: Vec<&Covered<'_>> =
            covered.iter().filter(|r| r.taken_by(extension)).collect();
        let since = ctx.since.map(|t| t.stream);
        let need_all = since.is_none() || rooms_taken.iter().any(|r| r.initial);
        let all = if need_all { storage.all_account_data(user).await? } else { Vec::new() };
        let changes = match since {
            Some(since) => storage.account_data_changes(user, since, ctx.now.stream).await?,
            None => Vec::new(),
        };
        // Changed items: read each once (the change list names each write).
        let mut changed: HashMap<(Option<String>, String), Option<Value>> = HashMap::new();
        for change in changes {
            let key = (change.room_id, change.kind);
            if changed.contains_key(&key) {
                continue;
            }
            let content = storage.account_data(user, key.0.as_deref(), &key.1).await?;
            let value = content.and_then(|c| event(&key.1, &c));
            changed.insert(key, value);
        }
        let mut global = Vec::new();
        if since.is_none() {
            global.extend(
                all.iter()
                    .filter(|i| i.room_id.is_none())
                    .filter_map(|i| event(&i.kind, &i.content)),
            );
            let rules = crate::services::rooms::notify::default_push_rules_event(
                storage.as_ref(),
                ctx.user,
            );
            global.extend(rules.await?);
        } else {
            global.extend(
                changed
                    .iter()
                    .filter(|((room, _), _)| room.is_none())
                    .filter_map(|(_, v)| v.clone()),
            );
        }
        let mut rooms = Map::new();
        for room in rooms_taken {
            let events: Vec<Value> = if since.is_none() || room.initial {
                all.iter()
                    .filter(|i| i.room_id.as_deref() == Some(room.room_id))
                    .filter_map(|i| event(&i.kind, &i.content))
                    .collect()
            } else {
                changed
                    .iter()
                    .filter(|((r, _), _)| r.as_deref() == Some(room.room_id))
                    .filter_map(|(_, v)| v.clone())
                    .collect()
            };
            if !events.is_empty() {
                rooms.insert(room.room_id.to_owned(), Value::Array(events));
            }
        }
        let news = !global.is_empty() || !rooms.is_empty();
        Ok((json!({"global": global, "rooms": rooms}), news))
    }
}

/// Keeps of an `m.receipt` content the receipts on `shown` events and `user`'s own.
fn keep_shown_receipts(content: &mut Value, shown: &HashSet<String>, user: &str) {
    let Some(events) = content.as_object_mut() else { return };
    events.retain(|event_id, kinds| {
        if shown.contains(event_id) {
            return true;
        }
        let Some(kinds) = kinds.as_object_mut() else { return false };
        kinds.retain(|_, users| {
            users.as_object_mut().is_some_and(|users| {
                users.retain(|u, _| u == user);
                !users.is_empty()
            })
        });
        !kinds.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_sent_whole_gets_the_receipts_of_its_timeline_and_the_users_own() {
        let mut content = json!({
            "$shown": {"m.read": {"@b:x": {"ts": 1}}},
            "$old": {"m.read": {"@a:x": {"ts": 2}, "@c:x": {"ts": 3}}},
            "$older": {"m.read": {"@c:x": {"ts": 4}}},
        });
        let shown: HashSet<String> = ["$shown".to_owned()].into();
        keep_shown_receipts(&mut content, &shown, "@a:x");
        assert_eq!(
            content,
            json!({
                "$shown": {"m.read": {"@b:x": {"ts": 1}}},
                "$old": {"m.read": {"@a:x": {"ts": 2}}},
            })
        );
    }
}
