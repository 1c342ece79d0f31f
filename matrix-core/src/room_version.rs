//! Room versions 1-12 as data: one [`RoomVersionRules`] value per version.
//!
//! Code asks a rules value a question (`rules.auth.knocking`) instead of matching on version
//! names, so a new room version is one new constant here.
//!
//! ```
//! use matrix_core::room_version::{RoomVersionRules, StateResAlgorithm};
//!
//! let v12 = RoomVersionRules::get("12").unwrap();
//! assert!(v12.room_id_from_create_event);
//! assert_eq!(v12.state_res, StateResAlgorithm::V2_1);
//! assert!(RoomVersionRules::get("13").is_none());
//! ```

/// How event ids are made (and whether events carry their own `event_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventIdFormat {
    /// Rooms 1-2: `$opaque:server`, chosen by the sender and carried in the event.
    Opaque,
    /// Room 3: `$` + standard unpadded base64 of the reference hash.
    ReferenceHashStandard,
    /// Rooms 4+: `$` + URL-safe unpadded base64 of the reference hash.
    ReferenceHashUrlSafe,
}

/// The shape of `prev_events` / `auth_events` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventFormat {
    /// Rooms 1-2: `[[event_id, {"sha256": ...}], ...]` and an `event_id` field.
    V1,
    /// Rooms 3+: `[event_id, ...]`, no `event_id` field.
    V3,
}

/// Which state resolution algorithm the room uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateResAlgorithm {
    /// State resolution v1 (room 1).
    V1,
    /// State resolution v2 (rooms 2-11).
    V2,
    /// State resolution v2.1 (room 12, MSC4297).
    V2_1,
}

/// What the redaction algorithm keeps, beyond what every version keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RedactionRules {
    /// v11+: `origin`, `membership` and `prev_state` are no longer kept at the top level.
    pub v11_top_level_keys: bool,
    /// v1-5: `m.room.aliases` keeps `aliases`.
    pub keep_aliases: bool,
    /// v8+: `m.room.join_rules` keeps `allow`.
    pub keep_join_rules_allow: bool,
    /// v9+: `m.room.member` keeps `join_authorised_via_users_server`.
    pub keep_join_authorised_via: bool,
    /// v11+: `m.room.member` keeps `third_party_invite.signed`, `m.room.create` keeps all of
    /// `content`, `m.room.power_levels` keeps `invite`, `m.room.redaction` keeps `redacts`.
    pub v11_content_keys: bool,
}

/// The authorization-rule switches that differ between versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct AuthRules {
    /// v1-5: the `m.room.aliases` rule.
    pub aliases_rule: bool,
    /// v1-2: the `m.room.redaction` rule (redact level or same domain).
    pub redaction_rule: bool,
    /// v6+: `notifications` is checked in power-level changes.
    pub notifications_in_power_levels: bool,
    /// v7+: the `knock` membership and join rule.
    pub knocking: bool,
    /// v8+: the `restricted` join rule and `join_authorised_via_users_server`.
    pub restricted_join: bool,
    /// v10+: the `knock_restricted` join rule.
    pub knock_restricted: bool,
    /// v10+: power levels must be integers (no strings) and are type-checked.
    pub integer_power_levels: bool,
    /// v11+: the creator is the create event's `sender` (no `content.creator`).
    pub creator_is_sender: bool,
    /// v12: creators (sender and `additional_creators`) have infinite power; the create event
    /// is never an auth event and the room id is derived from it.
    pub privileged_creators: bool,
    /// v1-5: power levels may be floats (truncated toward zero).
    pub float_power_levels: bool,
}

/// Everything that differs between room versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RoomVersionRules {
    /// The version identifier, as in `m.room.create`'s `room_version`.
    pub id: &'static str,
    /// The wire format of event references.
    pub event_format: EventFormat,
    /// How event ids are made.
    pub event_id_format: EventIdFormat,
    /// v6+: events must be strict canonical JSON.
    pub strict_canonical_json: bool,
    /// v5+: signing keys must be valid at the event's `origin_server_ts`.
    pub enforce_key_validity: bool,
    /// v12: the room id is `!` + the create event's reference hash; create has no `room_id`.
    pub room_id_from_create_event: bool,
    /// v11+: `redacts` moved from the top level into `content`.
    pub redacts_in_content: bool,
    /// The redaction algorithm.
    pub redaction: RedactionRules,
    /// The authorization rules.
    pub auth: AuthRules,
    /// The state resolution algorithm.
    pub state_res: StateResAlgorithm,
}

const REDACTION_V1: RedactionRules = RedactionRules {
    v11_top_level_keys: false,
    keep_aliases: true,
    keep_join_rules_allow: false,
    keep_join_authorised_via: false,
    v11_content_keys: false,
};

const AUTH_V1: AuthRules = AuthRules {
    aliases_rule: true,
    redaction_rule: true,
    notifications_in_power_levels: false,
    knocking: false,
    restricted_join: false,
    knock_restricted: false,
    integer_power_levels: false,
    creator_is_sender: false,
    privileged_creators: false,
    float_power_levels: true,
};

impl RoomVersionRules {
    /// Room version 1.
    pub const V1: Self = RoomVersionRules {
        id: "1",
        event_format: EventFormat::V1,
        event_id_format: EventIdFormat::Opaque,
        strict_canonical_json: false,
        enforce_key_validity: false,
        room_id_from_create_event: false,
        redacts_in_content: false,
        redaction: REDACTION_V1,
        auth: AUTH_V1,
        state_res: StateResAlgorithm::V1,
    };
    /// Room version 2: state resolution v2.
    pub const V2: Self = RoomVersionRules { id: "2", state_res: StateResAlgorithm::V2, ..Self::V1 };
    /// Room version 3: event ids are reference hashes; no redaction auth rule.
    pub const V3: Self = RoomVersionRules {
        id: "3",
        event_format: EventFormat::V3,
        event_id_format: EventIdFormat::ReferenceHashStandard,
        auth: AuthRules { redaction_rule: false, ..AUTH_V1 },
        ..Self::V2
    };
    /// Room version 4: URL-safe event ids.
    pub const V4: Self = RoomVersionRules {
        id: "4",
        event_id_format: EventIdFormat::ReferenceHashUrlSafe,
        ..Self::V3
    };
    /// Room version 5: signing key validity is enforced.
    pub const V5: Self = RoomVersionRules { id: "5", enforce_key_validity: true, ..Self::V4 };
    /// Room version 6: strict canonical JSON, no aliases rule, notifications power levels.
    pub const V6: Self = RoomVersionRules {
        id: "6",
        strict_canonical_json: true,
        redaction: RedactionRules { keep_aliases: false, ..REDACTION_V1 },
        auth: AuthRules {
            aliases_rule: false,
            notifications_in_power_levels: true,
            float_power_levels: false,
            ..Self::V5.auth
        },
        ..Self::V5
    };
    /// Room version 7: knocking.
    pub const V7: Self = RoomVersionRules {
        id: "7",
        auth: AuthRules { knocking: true, ..Self::V6.auth },
        ..Self::V6
    };
    /// Room version 8: restricted join rules.
    pub const V8: Self = RoomVersionRules {
        id: "8",
        redaction: RedactionRules { keep_join_rules_allow: true, ..Self::V7.redaction },
        auth: AuthRules { restricted_join: true, ..Self::V7.auth },
        ..Self::V7
    };
    /// Room version 9: `join_authorised_via_users_server` survives redaction.
    pub const V9: Self = RoomVersionRules {
        id: "9",
        redaction: RedactionRules { keep_join_authorised_via: true, ..Self::V8.redaction },
        ..Self::V8
    };
    /// Room version 10: `knock_restricted`, integer-only power levels.
    pub const V10: Self = RoomVersionRules {
        id: "10",
        auth: AuthRules { knock_restricted: true, integer_power_levels: true, ..Self::V9.auth },
        ..Self::V9
    };
    /// Room version 11: creator from sender, new redaction rules, `redacts` in content.
    pub const V11: Self = RoomVersionRules {
        id: "11",
        redacts_in_content: true,
        redaction: RedactionRules {
            v11_top_level_keys: true,
            v11_content_keys: true,
            ..Self::V10.redaction
        },
        auth: AuthRules { creator_is_sender: true, ..Self::V10.auth },
        ..Self::V10
    };
    /// Room version 12: room id from the create event, privileged creators, state res v2.1.
    pub const V12: Self = RoomVersionRules {
        id: "12",
        room_id_from_create_event: true,
        auth: AuthRules { privileged_creators: true, ..Self::V11.auth },
        state_res: StateResAlgorithm::V2_1,
        ..Self::V11
    };

    /// Every known room version, oldest first.
    pub const ALL: [&'static RoomVersionRules; 12] = [
        &Self::V1,
        &Self::V2,
        &Self::V3,
        &Self::V4,
        &Self::V5,
        &Self::V6,
        &Self::V7,
        &Self::V8,
        &Self::V9,
        &Self::V10,
        &Self::V11,
        &Self::V12,
    ];

    /// The rules of room version `id`, if it is known.
    pub fn get(id: &str) -> Option<&'static RoomVersionRules> {
        Self::ALL.iter().copied().find(|rules| rules.id == id)
    }
}
