//! The authorization rules for room versions 1-12.
//!
//! [`check`] decides whether an event is allowed given a room state (the state built from its
//! auth events, the state before it, or the current state: the three checks a server makes on
//! receipt). [`check_auth_events`] checks the event's `auth_events` list itself (the spec's
//! "Considering the event's auth_events" rule). Both return `Ok(())` or an [`AuthRejection`]
//! naming the rule that rejected the event; a rejection is a protocol outcome, not an error.
//!
//! The rules are generic over the event type through [`AuthEvent`], so state resolution and
//! storage can run them on their own event representations.
//!
//! Two inputs are the caller's duty, as the spec puts them outside the rules themselves: state
//! must hold only accepted (not rejected) events, and signatures (including the one the
//! `join_authorised_via_users_server` rule requires) are verified by
//! [`crate::signing::verify_event`] before authorization; here that rule checks the signature is
//! present.

mod power_levels;

use std::collections::HashMap;

use crate::json::{Object, Value};
use crate::room_version::RoomVersionRules;
use crate::signing::{PublicKey, signing_input};
use power_levels::PowerLevels;
pub use power_levels::parse_level;

/// The fields of an event the authorization rules read.
pub trait AuthEvent {
    /// The event id.
    fn event_id(&self) -> &str;
    /// The room id (for a room version 12 create event, the one it defines).
    fn room_id(&self) -> &str;
    /// Whether the event carries a `room_id` field.
    fn has_room_id(&self) -> bool;
    /// The sender.
    fn sender(&self) -> &str;
    /// The event type.
    fn kind(&self) -> &str;
    /// The state key, if a state event.
    fn state_key(&self) -> Option<&str>;
    /// The content.
    fn content(&self) -> &Object;
    /// The event a redaction redacts.
    fn redacts(&self) -> Option<&str>;
    /// The ids of `prev_events`.
    fn prev_event_ids(&self) -> impl Iterator<Item = &str>;
    /// Whether `signatures` has an entry for `server`.
    fn has_signature_from(&self, server: &str) -> bool;
}

impl AuthEvent for crate::pdu::Pdu {
    fn event_id(&self) -> &str {
        self.event_id()
    }
    fn room_id(&self) -> &str {
        self.room_id()
    }
    fn has_room_id(&self) -> bool {
        self.has_room_id()
    }
    fn sender(&self) -> &str {
        self.sender()
    }
    fn kind(&self) -> &str {
        self.kind()
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key()
    }
    fn content(&self) -> &Object {
        self.content()
    }
    fn redacts(&self) -> Option<&str> {
        self.redacts()
    }
    fn prev_event_ids(&self) -> impl Iterator<Item = &str> {
        self.prev_events()
    }
    fn has_signature_from(&self, server: &str) -> bool {
        self.json()
            .get_object("signatures")
            .and_then(|s| s.get_object(server))
            .is_some_and(|keys| !keys.is_empty())
    }
}

impl<T: AuthEvent> AuthEvent for &T {
    fn event_id(&self) -> &str {
        (**self).event_id()
    }
    fn room_id(&self) -> &str {
        (**self).room_id()
    }
    fn has_room_id(&self) -> bool {
        (**self).has_room_id()
    }
    fn sender(&self) -> &str {
        (**self).sender()
    }
    fn kind(&self) -> &str {
        (**self).kind()
    }
    fn state_key(&self) -> Option<&str> {
        (**self).state_key()
    }
    fn content(&self) -> &Object {
        (**self).content()
    }
    fn redacts(&self) -> Option<&str> {
        (**self).redacts()
    }
    fn prev_event_ids(&self) -> impl Iterator<Item = &str> {
        (**self).prev_event_ids()
    }
    fn has_signature_from(&self, server: &str) -> bool {
        (**self).has_signature_from(server)
    }
}

/// A room state the rules look events up in, by `(type, state_key)`.
pub trait AuthState<E> {
    /// The state event of this type and state key, if any.
    fn get(&self, kind: &str, state_key: &str) -> Option<&E>;
}

impl<E> AuthState<E> for HashMap<(String, String), E> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&E> {
        // Allocation-free lookups would need a borrowed key type; state maps used on hot paths
        // (state resolution) implement `AuthState` themselves.
        HashMap::get(self, &(kind.to_owned(), state_key.to_owned()))
    }
}

/// A state made of a handful of events (an event's auth events), searched linearly.
#[derive(Debug, Clone)]
pub struct EventList<'a, E>(pub Vec<&'a E>);

impl<E: AuthEvent> AuthState<E> for EventList<'_, E> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&E> {
        self.0.iter().copied().find(|e| e.kind() == kind && e.state_key() == Some(state_key))
    }
}

/// Why the authorization rules reject an event. Each variant names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthRejection {
    /// `m.room.create`: it has `prev_events`.
    #[error("m.room.create: has prev_events")]
    CreateHasPrevEvents,
    /// `m.room.create` (v1-11): the room id's domain is not the sender's.
    #[error("m.room.create: room_id domain does not match sender domain")]
    CreateRoomIdDomain,
    /// `m.room.create` (v12): the event has a `room_id`.
    #[error("m.room.create: has a room_id")]
    CreateHasRoomId,
    /// `m.room.create`: `content.room_version` is not a known version.
    #[error("m.room.create: unknown room_version")]
    CreateUnknownRoomVersion,
    /// `m.room.create` (v12): `additional_creators` is not an array of user ids.
    #[error("m.room.create: additional_creators is not an array of valid user ids")]
    CreateInvalidAdditionalCreators,
    /// `m.room.create` (v1-10): `content` has no `creator`.
    #[error("m.room.create: content has no creator")]
    CreateWithoutCreator,
    /// (v12) The room id is not that of the room's create event.
    #[error("room_id is not the id of an accepted m.room.create event")]
    RoomIdNotCreateEvent,
    /// (v1-11) There is no `m.room.create` event among the auth events.
    #[error("no m.room.create event in the auth events")]
    NoCreateEvent,
    /// Two auth events have the same type and state key.
    #[error("duplicate auth event for ({0}, {1})")]
    DuplicateAuthEvent(String, String),
    /// An auth event is not one the auth events selection algorithm picks.
    #[error("auth event ({0}, {1}) is not one the selection algorithm allows")]
    UnexpectedAuthEvent(String, String),
    /// An auth event is in another room.
    #[error("auth event {0} is in another room")]
    AuthEventInOtherRoom(String),
    /// `m.federate` is false and the sender is on another server than the creator.
    #[error("room is not federated and the sender is from another server")]
    NotFederated,
    /// `m.room.aliases` (v1-5): no state key, or the state key is not the sender's server.
    #[error("m.room.aliases: state_key must be the sender's server")]
    AliasesStateKey,
    /// `m.room.member`: no state key or no `membership`.
    #[error("m.room.member: missing state_key or membership")]
    MemberMissingFields,
    /// `m.room.member` (v8+): not signed by the `join_authorised_via_users_server` user's
    /// server, or that key is not a user id.
    #[error("m.room.member: not signed by the join_authorised_via_users_server server")]
    JoinAuthorisedViaNotSigned,
    /// join: the sender is not the state key.
    #[error("join: sender does not match state_key")]
    JoinSenderNotTarget,
    /// join: the sender is banned.
    #[error("join: sender is banned")]
    JoinBanned,
    /// join: the join rule is invite (or knock) and the user is neither invited nor joined.
    #[error("join: join rule requires an invite")]
    JoinNotInvited,
    /// join: restricted join without a joined authorising user who can invite.
    #[error("join: restricted join not authorised by a joined user who can invite")]
    JoinRestrictedNotAuthorised,
    /// join: the join rule does not allow joining.
    #[error("join: the join rule does not allow joining")]
    JoinRuleForbids,
    /// invite (third party): the target is banned.
    #[error("third-party invite: target is banned")]
    ThirdPartyInviteBanned,
    /// invite (third party): `signed` is missing or lacks `mxid`/`token`.
    #[error("third-party invite: signed block missing or incomplete")]
    ThirdPartyInviteMalformed,
    /// invite (third party): `mxid` is not the state key.
    #[error("third-party invite: mxid does not match state_key")]
    ThirdPartyInviteMxid,
    /// invite (third party): no `m.room.third_party_invite` for the token.
    #[error("third-party invite: no m.room.third_party_invite for the token")]
    ThirdPartyInviteNoToken,
    /// invite (third party): the sender did not send the `m.room.third_party_invite`.
    #[error("third-party invite: sender does not match the m.room.third_party_invite sender")]
    ThirdPartyInviteSender,
    /// invite (third party): no signature matches the invite's public keys.
    #[error("third-party invite: no valid signature by the invite's public keys")]
    ThirdPartyInviteSignature,
    /// invite: the sender is not joined.
    #[error("invite: sender is not joined")]
    InviteSenderNotJoined,
    /// invite: the target is joined or banned.
    #[error("invite: target is joined or banned")]
    InviteTargetJoinedOrBanned,
    /// invite: the sender's power is below the invite level.
    #[error("invite: sender's power level is below the invite level")]
    InviteLevel,
    /// leave (self): the user is not invited, joined (or knocking).
    #[error("leave: user is not invited, joined or knocking")]
    LeaveNotMember,
    /// leave (kick or unban): the sender is not joined.
    #[error("leave: sender is not joined")]
    LeaveSenderNotJoined,
    /// leave: unbanning needs the ban level.
    #[error("leave: unban requires the ban level")]
    UnbanLevel,
    /// leave: kicking needs the kick level and more power than the target.
    #[error("leave: kick requires the kick level and more power than the target")]
    KickLevel,
    /// ban: the sender is not joined.
    #[error("ban: sender is not joined")]
    BanSenderNotJoined,
    /// ban: banning needs the ban level and more power than the target.
    #[error("ban: requires the ban level and more power than the target")]
    BanLevel,
    /// knock: the join rule is not knock (or knock_restricted).
    #[error("knock: the join rule does not allow knocking")]
    KnockJoinRule,
    /// knock: the sender is not the state key.
    #[error("knock: sender does not match state_key")]
    KnockSenderNotTarget,
    /// knock: the sender is banned, invited or joined.
    #[error("knock: sender is banned, invited or joined")]
    KnockMembership,
    /// `m.room.member`: unknown membership.
    #[error("m.room.member: unknown membership")]
    UnknownMembership,
    /// The sender is not joined to the room.
    #[error("sender is not joined to the room")]
    SenderNotJoined,
    /// `m.room.third_party_invite`: the sender's power is below the invite level.
    #[error("m.room.third_party_invite: sender's power level is below the invite level")]
    ThirdPartyInviteEventLevel,
    /// The sender's power is below the level the event type requires.
    #[error("sender's power level is below the level required for this event type")]
    EventLevel,
    /// A state key starting with `@` that is not the sender.
    #[error("state_key starts with @ and is not the sender")]
    StateKeyNotSender,
    /// `m.room.power_levels`: a value has the wrong type.
    #[error("m.room.power_levels: invalid content ({0})")]
    PowerLevelsInvalid(&'static str),
    /// `m.room.power_levels` (v12): `users` names a room creator.
    #[error("m.room.power_levels: users contains a room creator")]
    PowerLevelsCreatorInUsers,
    /// `m.room.power_levels`: a change involves a level above the sender's.
    #[error("m.room.power_levels: changes {0} beyond the sender's power")]
    PowerLevelsChange(&'static str),
    /// `m.room.redaction` (v1-2): neither the redact level nor the same server.
    #[error("m.room.redaction: below the redact level and redacting another server's event")]
    RedactionLevel,
}

/// The server name of a user or event id (`@local:server` / `$opaque:server`).
pub(crate) fn server_of(id: &str) -> &str {
    id.split_once(':').map_or("", |(_, server)| server)
}

fn is_valid_user_id(id: &str) -> bool {
    ruma_common::UserId::parse(id).is_ok()
}

/// The room creators: the create event's sender and (v12) its `additional_creators`; for
/// v1-10 the `creator` of its content.
fn creators<'a, E: AuthEvent>(rules: &RoomVersionRules, create: &'a E) -> Vec<&'a str> {
    if !rules.auth.creator_is_sender {
        return create.content().get_str("creator").into_iter().collect();
    }
    let mut creators = vec![create.sender()];
    if rules.auth.privileged_creators
        && let Some(Value::Array(more)) = create.content().get("additional_creators")
    {
        creators.extend(more.iter().filter_map(Value::as_str));
    }
    creators
}

/// The power level of `user` in a room with these power levels and create events (either may
/// be unknown): what state resolution orders senders by. Room version 12 creators are
/// infinitely powerful (`i128::MAX`); before, the creator has 100 when there are no power levels.
pub fn user_power_level<E: AuthEvent>(
    rules: &RoomVersionRules,
    power_levels: Option<&E>,
    create: Option<&E>,
    user: &str,
) -> i128 {
    let creators = create.map(|create| creators(rules, create)).unwrap_or_default();
    PowerLevels::new(rules, power_levels.map(|e| e.content()), &creators).user(user)
}

/// The `(type, state_key)` pairs the auth events selection algorithm picks for `event`.
pub fn auth_types_for_event<E: AuthEvent>(
    rules: &RoomVersionRules,
    event: &E,
) -> Vec<(String, String)> {
    let mut types = Vec::with_capacity(5);
    if event.kind() == "m.room.create" {
        return types;
    }
    if !rules.room_id_from_create_event {
        types.push(("m.room.create".to_owned(), String::new()));
    }
    types.push(("m.room.power_levels".to_owned(), String::new()));
    types.push(("m.room.member".to_owned(), event.sender().to_owned()));
    if event.kind() == "m.room.member"
        && let Some(target) = event.state_key()
    {
        let content = event.content();
        let membership = content.get_str("membership");
        types.push(("m.room.member".to_owned(), target.to_owned()));
        if matches!(membership, Some("join" | "invite" | "knock")) {
            types.push(("m.room.join_rules".to_owned(), String::new()));
        }
        if membership == Some("invite")
            && let Some(token) = content
                .get_object("third_party_invite")
                .and_then(|tpi| tpi.get_object("signed"))
                .and_then(|signed| signed.get_str("token"))
        {
            types.push(("m.room.third_party_invite".to_owned(), token.to_owned()));
        }
        if membership == Some("join")
            && rules.auth.restricted_join
            && let Some(via) = content.get_str("join_authorised_via_users_server")
        {
            types.push(("m.room.member".to_owned(), via.to_owned()));
        }
    }
    types
}

/// The rule on the event's `auth_events` list: no duplicates, only what the selection algorithm
/// picks, all in the event's room, and (v1-11) a create event among them (v12: none).
/// That no auth event was itself rejected is for the caller to ensure.
pub fn check_auth_events<E: AuthEvent>(
    rules: &RoomVersionRules,
    event: &E,
    auth_events: &[&E],
) -> Result<(), AuthRejection> {
    if event.kind() == "m.room.create" {
        return Ok(());
    }
    let allowed = auth_types_for_event(rules, event);
    let mut seen: Vec<(&str, &str)> = Vec::with_capacity(auth_events.len());
    let mut has_create = false;
    for auth in auth_events {
        let key = (auth.kind(), auth.state_key().unwrap_or_default());
        if seen.contains(&key) {
            return Err(AuthRejection::DuplicateAuthEvent(key.0.to_owned(), key.1.to_owned()));
        }
        seen.push(key);
        if auth.state_key().is_none() || !allowed.iter().any(|(k, s)| k == key.0 && s == key.1) {
            return Err(AuthRejection::UnexpectedAuthEvent(key.0.to_owned(), key.1.to_owned()));
        }
        if auth.room_id() != event.room_id() {
            return Err(AuthRejection::AuthEventInOtherRoom(auth.event_id().to_owned()));
        }
        has_create |= key == ("m.room.create", "");
    }
    if !rules.room_id_from_create_event && !has_create {
        return Err(AuthRejection::NoCreateEvent);
    }
    Ok(())
}

/// Checks `event` against its auth events: [`check_auth_events`], then [`check`] on the state
/// they make (plus, for room version 12, the room's `create` event, which is never an auth
/// event).
pub fn check_with_auth_events<E: AuthEvent>(
    rules: &RoomVersionRules,
    event: &E,
    auth_events: &[&E],
    create: Option<&E>,
) -> Result<(), AuthRejection> {
    check_auth_events(rules, event, auth_events)?;
    let mut state = EventList(auth_events.to_vec());
    if rules.room_id_from_create_event
        && let Some(create) = create
    {
        state.0.push(create);
    }
    check(rules, event, &state)
}

fn check_create<E: AuthEvent>(rules: &RoomVersionRules, event: &E) -> Result<(), AuthRejection> {
    if event.prev_event_ids().next().is_some() {
        return Err(AuthRejection::CreateHasPrevEvents);
    }
    if rules.room_id_from_create_event {
        if event.has_room_id() {
            return Err(AuthRejection::CreateHasRoomId);
        }
    } else if server_of(event.room_id()) != server_of(event.sender()) {
        return Err(AuthRejection::CreateRoomIdDomain);
    }
    let content = event.content();
    if let Some(version) = content.get("room_version")
        && version.as_str().and_then(RoomVersionRules::get).is_none()
    {
        return Err(AuthRejection::CreateUnknownRoomVersion);
    }
    if rules.auth.privileged_creators
        && let Some(more) = content.get("additional_creators")
    {
        let valid = more
            .as_array()
            .is_some_and(|a| a.iter().all(|v| v.as_str().is_some_and(is_valid_user_id)));
        if !valid {
            return Err(AuthRejection::CreateInvalidAdditionalCreators);
        }
    }
    if !rules.auth.creator_is_sender && !content.contains_key("creator") {
        return Err(AuthRejection::CreateWithoutCreator);
    }
    Ok(())
}

/// Applies the authorization rules of `rules`' room version to `event` against `state`.
pub fn check<E: AuthEvent>(
    rules: &RoomVersionRules,
    event: &E,
    state: &impl AuthState<E>,
) -> Result<(), AuthRejection> {
    if event.kind() == "m.room.create" {
        return check_create(rules, event);
    }

    let create = state.get("m.room.create", "");
    let create = match create {
        Some(create) if rules.room_id_from_create_event => {
            let room_of_create = create.event_id().strip_prefix('$');
            if room_of_create.is_none() || event.room_id().strip_prefix('!') != room_of_create {
                return Err(AuthRejection::RoomIdNotCreateEvent);
            }
            create
        }
        Some(create) => create,
        None if rules.room_id_from_create_event => {
            return Err(AuthRejection::RoomIdNotCreateEvent);
        }
        None => return Err(AuthRejection::NoCreateEvent),
    };

    if create.content().get("m.federate") == Some(&Value::Bool(false))
        && server_of(event.sender()) != server_of(create.sender())
    {
        return Err(AuthRejection::NotFederated);
    }

    if rules.auth.aliases_rule && event.kind() == "m.room.aliases" {
        return match event.state_key() {
            Some(key) if key == server_of(event.sender()) => Ok(()),
            _ => Err(AuthRejection::AliasesStateKey),
        };
    }

    let creators = creators(rules, create);
    let power_levels_event = state.get("m.room.power_levels", "");
    let levels = PowerLevels::new(rules, power_levels_event.map(|e| e.content()), &creators);
    let membership_of = |user: &str| {
        state
            .get("m.room.member", user)
            .and_then(|m| m.content().get_str("membership"))
            .unwrap_or("leave")
    };

    if event.kind() == "m.room.member" {
        return check_member(rules, event, state, create, &levels, &membership_of);
    }

    if membership_of(event.sender()) != "join" {
        return Err(AuthRejection::SenderNotJoined);
    }
    let sender_level = levels.user(event.sender());

    if event.kind() == "m.room.third_party_invite" {
        return if sender_level >= levels.invite {
            Ok(())
        } else {
            Err(AuthRejection::ThirdPartyInviteEventLevel)
        };
    }

    if levels.for_event(event.kind(), event.state_key().is_some()) > sender_level {
        return Err(AuthRejection::EventLevel);
    }

    if let Some(key) = event.state_key()
        && key.starts_with('@')
        && key != event.sender()
    {
        return Err(AuthRejection::StateKeyNotSender);
    }

    if event.kind() == "m.room.power_levels" {
        return power_levels::check_change(
            rules,
            event.content(),
            power_levels_event.map(|e| e.content()),
            event.sender(),
            sender_level,
            &creators,
        );
    }

    if rules.auth.redaction_rule && event.kind() == "m.room.redaction" {
        if sender_level >= levels.redact {
            return Ok(());
        }
        let redacts = event.redacts().unwrap_or_default();
        if server_of(redacts) == server_of(event.event_id()) {
            return Ok(());
        }
        return Err(AuthRejection::RedactionLevel);
    }

    Ok(())
}

fn check_member<'s, E: AuthEvent>(
    rules: &RoomVersionRules,
    event: &E,
    state: &'s impl AuthState<E>,
    create: &E,
    levels: &PowerLevels<'_>,
    membership_of: &impl Fn(&str) -> &'s str,
) -> Result<(), AuthRejection> {
    let content = event.content();
    let (Some(target), Some(membership)) = (event.state_key(), content.get_str("membership"))
    else {
        return Err(AuthRejection::MemberMissingFields);
    };
    let sender = event.sender();

    let authorised_via = content.get("join_authorised_via_users_server");
    if rules.auth.restricted_join
        && let Some(via) = authorised_via
    {
        let signed = via
            .as_str()
            .filter(|via| is_valid_user_id(via))
            .is_some_and(|via| event.has_signature_from(server_of(via)));
        if !signed {
            return Err(AuthRejection::JoinAuthorisedViaNotSigned);
        }
    }

    let join_rule = state
        .get("m.room.join_rules", "")
        .and_then(|e| e.content().get_str("join_rule"))
        .unwrap_or("invite");
    let target_membership = membership_of(target);
    let sender_membership = membership_of(sender);
    let sender_level = levels.user(sender);
    let target_level = levels.user(target);

    match membership {
        "join" => {
            let mut prev = event.prev_event_ids();
            let only_prev_is_create =
                prev.next() == Some(create.event_id()) && prev.next().is_none();
            // The creator: the create event's sender from v11, `content.creator` before.
            let creator = if rules.auth.creator_is_sender {
                Some(create.sender())
            } else {
                create.content().get_str("creator")
            };
            if only_prev_is_create && Some(target) == creator {
                return Ok(());
            }
            if sender != target {
                return Err(AuthRejection::JoinSenderNotTarget);
            }
            if target_membership == "ban" {
                return Err(AuthRejection::JoinBanned);
            }
            let invite_like =
                join_rule == "invite" || (rules.auth.knocking && join_rule == "knock");
            let restricted = (rules.auth.restricted_join && join_rule == "restricted")
                || (rules.auth.knock_restricted && join_rule == "knock_restricted");
            if invite_like {
                return if matches!(target_membership, "invite" | "join") {
                    Ok(())
                } else {
                    Err(AuthRejection::JoinNotInvited)
                };
            }
            if restricted {
                if matches!(target_membership, "invite" | "join") {
                    return Ok(());
                }
                let authorised = authorised_via.and_then(Value::as_str).is_some_and(|via| {
                    membership_of(via) == "join" && levels.user(via) >= levels.invite
                });
                return if authorised {
                    Ok(())
                } else {
                    Err(AuthRejection::JoinRestrictedNotAuthorised)
                };
            }
            if join_rule == "public" {
                return Ok(());
            }
            Err(AuthRejection::JoinRuleForbids)
        }
        "invite" => {
            if let Some(third_party) = content.get("third_party_invite") {
                return check_third_party_invite(event, state, third_party, target_membership);
            }
            if sender_membership != "join" {
                return Err(AuthRejection::InviteSenderNotJoined);
            }
            if matches!(target_membership, "join" | "ban") {
                return Err(AuthRejection::InviteTargetJoinedOrBanned);
            }
            if sender_level >= levels.invite {
                return Ok(());
            }
            Err(AuthRejection::InviteLevel)
        }
        "leave" => {
            if sender == target {
                let may_leave = matches!(target_membership, "invite" | "join")
                    || (rules.auth.knocking && target_membership == "knock");
                return if may_leave { Ok(()) } else { Err(AuthRejection::LeaveNotMember) };
            }
            if sender_membership != "join" {
                return Err(AuthRejection::LeaveSenderNotJoined);
            }
            if target_membership == "ban" && sender_level < levels.ban {
                return Err(AuthRejection::UnbanLevel);
            }
            if sender_level >= levels.kick && target_level < sender_level {
                return Ok(());
            }
            Err(AuthRejection::KickLevel)
        }
        "ban" => {
            if sender_membership != "join" {
                return Err(AuthRejection::BanSenderNotJoined);
            }
            if sender_level >= levels.ban && target_level < sender_level {
                return Ok(());
            }
            Err(AuthRejection::BanLevel)
        }
        "knock" if rules.auth.knocking => {
            let knockable = join_rule == "knock"
                || (rules.auth.knock_restricted && join_rule == "knock_restricted");
            if !knockable {
                return Err(AuthRejection::KnockJoinRule);
            }
            if sender != target {
                return Err(AuthRejection::KnockSenderNotTarget);
            }
            if matches!(sender_membership, "ban" | "invite" | "join") {
                return Err(AuthRejection::KnockMembership);
            }
            Ok(())
        }
        _ => Err(AuthRejection::UnknownMembership),
    }
}

fn check_third_party_invite<E: AuthEvent>(
    event: &E,
    state: &impl AuthState<E>,
    third_party: &Value,
    target_membership: &str,
) -> Result<(), AuthRejection> {
    if target_membership == "ban" {
        return Err(AuthRejection::ThirdPartyInviteBanned);
    }
    let signed = third_party
        .as_object()
        .and_then(|tpi| tpi.get_object("signed"))
        .ok_or(AuthRejection::ThirdPartyInviteMalformed)?;
    let (Some(mxid), Some(token)) = (signed.get_str("mxid"), signed.get_str("token")) else {
        return Err(AuthRejection::ThirdPartyInviteMalformed);
    };
    if Some(mxid) != event.state_key() {
        return Err(AuthRejection::ThirdPartyInviteMxid);
    }
    let invite = state
        .get("m.room.third_party_invite", token)
        .ok_or(AuthRejection::ThirdPartyInviteNoToken)?;
    if invite.sender() != event.sender() {
        return Err(AuthRejection::ThirdPartyInviteSender);
    }
    let invite_content = invite.content();
    let mut public_keys: Vec<PublicKey> = Vec::new();
    if let Some(key) =
        invite_content.get_str("public_key").and_then(|k| PublicKey::from_base64(k).ok())
    {
        public_keys.push(key);
    }
    if let Some(Value::Array(keys)) = invite_content.get("public_keys") {
        public_keys.extend(
            keys.iter()
                .filter_map(|k| k.as_object()?.get_str("public_key"))
                .filter_map(|k| PublicKey::from_base64(k).ok()),
        );
    }
    let message = signing_input(signed);
    let signatures = signed.get_object("signatures").into_iter().flat_map(|by_server| {
        by_server.iter().filter_map(|(_, keys)| keys.as_object()).flat_map(|keys| {
            keys.iter().filter_map(|(_, sig)| sig.as_str().and_then(crate::b64::decode_array::<64>))
        })
    });
    for signature in signatures {
        if public_keys.iter().any(|key| key.verify(&message, &signature)) {
            return Ok(());
        }
    }
    Err(AuthRejection::ThirdPartyInviteSignature)
}
