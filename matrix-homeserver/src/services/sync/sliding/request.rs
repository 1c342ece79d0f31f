//! The request body of a sliding sync, its bounds, and the position token.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::super::Token;
use crate::config::LimitsConfig;
use crate::error::ApiError;

/// The body of a sliding sync request (unknown fields, and unknown extensions, are ignored).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Body {
    #[serde(default)]
    pub(crate) conn_id: Option<String>,
    #[serde(default)]
    pub(crate) lists: BTreeMap<String, ListConfig>,
    #[serde(default)]
    pub(crate) room_subscriptions: BTreeMap<String, RoomParams>,
    #[serde(default)]
    pub(crate) extensions: ExtensionsConfig,
}

/// What a list or a subscription asks of each of its rooms.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RoomParams {
    #[serde(default)]
    pub(crate) required_state: Vec<(String, String)>,
    #[serde(default)]
    pub(crate) timeline_limit: u64,
}

/// A list: ranges over the user's rooms that pass its filters, most recent first.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListConfig {
    #[serde(default)]
    pub(crate) ranges: Option<Vec<(u64, u64)>>,
    #[serde(default)]
    pub(crate) required_state: Vec<(String, String)>,
    #[serde(default)]
    pub(crate) timeline_limit: u64,
    #[serde(default)]
    pub(crate) filters: Option<Filters>,
}

/// A list's filters (all that are set must hold).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    pub(crate) is_dm: Option<bool>,
    #[serde(default)]
    pub(crate) spaces: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) is_encrypted: Option<bool>,
    #[serde(default)]
    pub(crate) is_invite: Option<bool>,
    #[serde(default)]
    pub(crate) room_types: Option<Vec<Option<String>>>,
    #[serde(default)]
    pub(crate) not_room_types: Option<Vec<Option<String>>>,
    #[serde(default)]
    pub(crate) tags: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) not_tags: Option<Vec<String>>,
}

/// The extensions asked for (each off unless `enabled`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ExtensionsConfig {
    #[serde(default)]
    pub(crate) to_device: Option<ToDeviceConfig>,
    #[serde(default)]
    pub(crate) e2ee: Option<Enabled>,
    #[serde(default)]
    pub(crate) account_data: Option<RoomsExtension>,
    #[serde(default)]
    pub(crate) receipts: Option<RoomsExtension>,
    #[serde(default)]
    pub(crate) typing: Option<RoomsExtension>,
}

/// An extension with nothing but its switch.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Enabled {
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
}

/// The to-device extension: `since` is the `next_batch` the client has.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ToDeviceConfig {
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
    #[serde(default)]
    pub(crate) limit: Option<u64>,
    #[serde(default)]
    pub(crate) since: Option<String>,
}

/// An extension about rooms, restricted to the rooms of some lists and subscriptions
/// (`["*"]`, the default: all of them).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RoomsExtension {
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
    #[serde(default)]
    pub(crate) lists: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) rooms: Option<Vec<String>>,
}

impl RoomsExtension {
    pub(crate) fn on(&self) -> bool {
        self.enabled == Some(true)
    }

    /// Whether the extension covers list `name`.
    pub(crate) fn takes_list(&self, name: &str) -> bool {
        self.lists.as_ref().is_none_or(|l| l.iter().any(|x| x == "*" || x == name))
    }

    /// Whether the extension covers the subscription to `room`.
    pub(crate) fn takes_room(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.iter().any(|x| x == "*" || x == room))
    }
}

/// The most events a room's timeline carries in one answer, whatever the client asks (the
/// MSC lets the server cap it).
const MAX_TIMELINE: u64 = 100;

/// The largest `timeline_limit` accepted (Synapse's bound); larger: 400.
const MAX_TIMELINE_ASKED: u64 = 1000;

/// The longest list name (Synapse's bound).
const MAX_LIST_NAME: usize = 64;

impl Body {
    /// Checks the request's bounds.
    pub(crate) fn check(&self, limits: &LimitsConfig) -> Result<(), ApiError> {
        if self.lists.len() > limits.max_sliding_sync_lists {
            return Err(ApiError::invalid_param(format!(
                "at most {} lists",
                limits.max_sliding_sync_lists
            )));
        }
        if self.room_subscriptions.len() > limits.max_sliding_sync_subscriptions {
            return Err(ApiError::invalid_param(format!(
                "at most {} room subscriptions",
                limits.max_sliding_sync_subscriptions
            )));
        }
        let most = limits.max_sliding_sync_required_state;
        let check_params = |state: &[(String, String)], limit: u64| {
            if state.len() > most {
                return Err(ApiError::invalid_param(format!(
                    "at most {most} required_state entries"
                )));
            }
            if limit > MAX_TIMELINE_ASKED {
                return Err(ApiError::invalid_param(format!(
                    "timeline_limit is at most {MAX_TIMELINE_ASKED}"
                )));
            }
            Ok(())
        };
        for (name, list) in &self.lists {
            if name.len() > MAX_LIST_NAME {
                return Err(ApiError::invalid_param("a list name is at most 64 bytes"));
            }
            check_params(&list.required_state, list.timeline_limit)?;
            if let Some(ranges) = &list.ranges {
                if ranges.len() > most {
                    return Err(ApiError::invalid_param(format!("at most {most} ranges")));
                }
                if ranges.iter().any(|(start, end)| start > end) {
                    return Err(ApiError::invalid_param("a range starts after its end"));
                }
            }
            if let Some(filters) = &list.filters {
                let lengths = [
                    filters.spaces.as_ref().map_or(0, Vec::len),
                    filters.room_types.as_ref().map_or(0, Vec::len),
                    filters.not_room_types.as_ref().map_or(0, Vec::len),
                    filters.tags.as_ref().map_or(0, Vec::len),
                    filters.not_tags.as_ref().map_or(0, Vec::len),
                ];
                if lengths.iter().any(|l| *l > limits.max_filter_list_len) {
                    return Err(ApiError::invalid_param(format!(
                        "a filter lists at most {} items",
                        limits.max_filter_list_len
                    )));
                }
            }
        }
        for (room, subscription) in &self.room_subscriptions {
            if !room.starts_with('!') {
                return Err(ApiError::invalid_param("a room subscription names a room id"));
            }
            check_params(&subscription.required_state, subscription.timeline_limit)?;
        }
        for extension in
            [&self.extensions.account_data, &self.extensions.receipts, &self.extensions.typing]
                .into_iter()
                .flatten()
        {
            let lengths = [
                extension.lists.as_ref().map_or(0, Vec::len),
                extension.rooms.as_ref().map_or(0, Vec::len),
            ];
            if lengths.iter().any(|l| *l > most.max(limits.max_sliding_sync_subscriptions)) {
                return Err(ApiError::invalid_param("an extension names too many lists or rooms"));
            }
        }
        if let Some(since) = self.extensions.to_device.as_ref().and_then(|t| t.since.as_deref())
            && since.parse::<u64>().is_err()
        {
            return Err(ApiError::invalid_param("to_device.since is not a to-device token"));
        }
        Ok(())
    }
}

impl ListConfig {
    /// The list's ranges (none: the whole list).
    pub(crate) fn ranges(&self) -> &[(u64, u64)] {
        const ALL: [(u64, u64); 1] = [(0, u64::MAX)];
        self.ranges.as_deref().unwrap_or(&ALL)
    }

    pub(crate) fn config(&self) -> RoomConfig {
        RoomConfig::new(self.timeline_limit, &self.required_state)
    }
}

impl RoomParams {
    pub(crate) fn config(&self) -> RoomConfig {
        RoomConfig::new(self.timeline_limit, &self.required_state)
    }
}

/// What the client wants of a room (lists' and subscriptions' combined): how many timeline
/// events, and which state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RoomConfig {
    pub(crate) timeline_limit: u64,
    pub(crate) state: RequiredState,
}

impl RoomConfig {
    fn new(timeline_limit: u64, required_state: &[(String, String)]) -> Self {
        RoomConfig {
            timeline_limit: timeline_limit.min(MAX_TIMELINE),
            state: RequiredState::new(required_state),
        }
    }

    /// The superset of two configs.
    pub(crate) fn combine(&self, other: &RoomConfig) -> RoomConfig {
        let mut entries = self.state.entries.clone();
        entries.extend(other.state.entries.iter().cloned());
        RoomConfig {
            timeline_limit: self.timeline_limit.max(other.timeline_limit),
            state: RequiredState { entries, lazy: self.state.lazy || other.state.lazy },
        }
    }
}

/// The `*` of a type or a state key.
pub(crate) const WILDCARD: &str = "*";
/// `["m.room.member", "$LAZY"]`: the members of the timeline's senders.
const LAZY: &str = "$LAZY";
/// A state key standing for the requesting user.
pub(crate) const ME: &str = "$ME";

/// The state a room's answer carries: `(type, state_key)` patterns (`*` matching anything,
/// `$ME` the user), and whether the timeline's senders' members are added (`$LAZY`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RequiredState {
    pub(crate) entries: BTreeSet<(String, String)>,
    pub(crate) lazy: bool,
}

impl RequiredState {
    fn new(required: &[(String, String)]) -> Self {
        let mut state = RequiredState::default();
        for (kind, key) in required {
            if kind == "m.room.member" && key == LAZY {
                state.lazy = true;
            } else {
                state.entries.insert((kind.clone(), key.clone()));
            }
        }
        state
    }

    /// Whether some entry matches more than one state key (then the whole state is read).
    pub(crate) fn has_wildcard(&self) -> bool {
        self.entries.iter().any(|(kind, key)| kind == WILDCARD || key == WILDCARD)
    }

    /// Whether the state event `(kind, key)` is asked for, `user` standing for `$ME`.
    pub(crate) fn wants(&self, kind: &str, key: &str, user: &str) -> bool {
        self.entries.iter().any(|(k, s)| {
            (k == WILDCARD || k == kind) && (s == WILDCARD || s == key || (s == ME && key == user))
        })
    }

    /// The entries with neither wildcard, `$ME` resolved.
    pub(crate) fn exact<'a>(&'a self, user: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.entries
            .iter()
            .filter(|(kind, key)| kind != WILDCARD && key != WILDCARD)
            .map(move |(kind, key)| (kind.as_str(), if key == ME { user } else { key.as_str() }))
    }
}

/// A sliding sync position: the stream token the answer covered and the connection state it
/// left (`seq`): `s{stream}_{counter}_{seq}`. `/messages` takes it as it takes `next_batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) token: Token,
    pub(crate) seq: u64,
}

impl Pos {
    pub(crate) fn parse(text: &str) -> Option<Pos> {
        let (token, seq) = text.rsplit_once('_')?;
        Some(Pos { token: Token::parse(token)?, seq: seq.parse().ok()? })
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.token, self.seq)
    }
}

/// A JSON value that is `true`.
pub(crate) fn is_true(value: Option<bool>) -> bool {
    value == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let pos =
            Pos { token: Token { stream: matrix_storage::StreamPos(42), counter: 7 }, seq: 9 };
        assert_eq!(pos.to_string(), "s42_7_9");
        assert_eq!(Pos::parse("s42_7_9"), Some(pos));
        assert_eq!(Pos::parse("s42_7"), None);
        assert_eq!(Pos::parse("42_7_9"), None);
        assert_eq!(Pos::parse(""), None);
    }

    #[test]
    fn required_state_matches() {
        let state = RequiredState::new(&[
            ("m.room.name".into(), "".into()),
            ("m.room.member".into(), "$LAZY".into()),
            ("m.room.member".into(), "$ME".into()),
            ("m.space.child".into(), "*".into()),
        ]);
        assert!(state.lazy);
        assert!(state.wants("m.room.name", "", "@a:x"));
        assert!(!state.wants("m.room.topic", "", "@a:x"));
        assert!(state.wants("m.room.member", "@a:x", "@a:x"));
        assert!(!state.wants("m.room.member", "@b:x", "@a:x"));
        assert!(state.wants("m.space.child", "!c:x", "@a:x"));
        assert!(state.has_wildcard());
        let exact: Vec<_> = state.exact("@a:x").collect();
        assert_eq!(exact, [("m.room.member", "@a:x"), ("m.room.name", "")]);
    }
}
