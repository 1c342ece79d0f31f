//! What other servers ask of our rooms: join templates and joins through us (`make_join`,
//! `send_join`).

use std::collections::BTreeSet;
use std::sync::Arc;

use matrix_core::json::Object;
use matrix_federation::inbound::StateIds;
use ruma::UserId;

use super::Rooms;
use super::remote::{ReceiveError, Received};
use crate::error::ApiError;

impl Rooms {
    /// `make_join`, `make_knock` (with the room versions the requesting server supports) or
    /// `make_leave`: the `membership` event of `user` (of the requesting server) in a room
    /// of ours, unsigned, and the room version, if the room's ACL and the authorization rules
    /// allow it now.
    pub(crate) async fn membership_template(
        &self,
        room_id: &str,
        user: &UserId,
        membership: &str,
        versions: Option<&[String]>,
    ) -> Result<(Object, &'static str), ApiError> {
        let rules = self.rules(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        if !self.server_allowed(room_id, user.server_name().as_str()).await? {
            return Err(ApiError::forbidden("the room's server ACL denies your server"));
        }
        if let Some(versions) = versions
            && !versions.iter().any(|v| v == rules.id)
        {
            return Err(ApiError::incompatible_room_version(rules.id));
        }
        let info = self.storage().room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let snapshot =
            info.current_state.ok_or_else(|| ApiError::unknown("the room has no state"))?;
        let mut content = Object::new();
        content.insert("membership", membership);
        let mut draft = super::Draft::state("m.room.member", user.as_str(), content);
        if membership == "join"
            && let Some(via) = self.restricted_join_authoriser(rules, room_id, user).await?
        {
            draft.content.insert("join_authorised_via_users_server", via);
        }
        let built = self.build(room_id, &info, snapshot, rules, user, draft).await?;
        let mut json = built.json;
        // The joining server signs and sends it: it is its origin.
        if json.contains_key("origin") {
            json.insert("origin", user.server_name().as_str());
        }
        // A restricted join is checked as we will countersign it on `send_join`.
        let mut checked = json.clone();
        if checked
            .get_object("content")
            .is_some_and(|c| c.contains_key("join_authorised_via_users_server"))
        {
            matrix_core::signing::sign_event(
                &mut checked,
                self.server_name().as_str(),
                self.key(),
                rules,
            );
        }
        let provisional = matrix_core::Pdu::with_event_id(checked, String::new(), rules);
        let auth_refs: Vec<&matrix_core::Pdu> =
            built.auth_pdus.iter().map(|p| p.as_ref()).collect();
        matrix_core::auth::check_with_auth_events(
            rules,
            &provisional,
            &auth_refs,
            built.create.as_deref(),
        )
        .map_err(|rejection| {
            ApiError::forbidden(format!("the {membership} is not allowed: {rejection}"))
        })?;
        Ok((json, rules.id))
    }
}

/// What `send_join` answers: the join as stored, the state before it and the auth chain of
/// both. With `omit_members` asked, the state holds no member events but the joining user's
/// own and (in a room with no name nor canonical alias) the heroes', the auth chain leaves
/// out the events already in the state, and `servers_in_room` is set.
#[derive(Debug)]
pub(crate) struct Joined {
    pub(crate) event: Arc<matrix_core::Pdu>,
    pub(crate) state: Vec<Arc<matrix_core::Pdu>>,
    pub(crate) auth_chain: Vec<Arc<matrix_core::Pdu>>,
    pub(crate) members_omitted: bool,
    /// The servers with joined members before the join, when members are omitted.
    pub(crate) servers_in_room: Option<Vec<String>>,
}

/// How many heroes a room summary names (the client-server `m.heroes`).
const HEROES: usize = 5;

impl Rooms {
    /// `send_join`: stores the join of a user of `origin` (built from our template and signed
    /// by their server) after the checks every received event goes through. `omit_members`:
    /// the joining server accepts a partial state (spec: `send_join` v2, `omit_members`).
    pub(crate) async fn join_through_us(
        &self,
        keys: &dyn matrix_federation::keys::KeyProvider,
        origin: &str,
        room_id: &str,
        event_id: &str,
        event: Object,
        omit_members: bool,
    ) -> Result<Joined, ApiError> {
        let stored =
            self.membership_through_us(keys, origin, room_id, event_id, event, "join").await?;
        let before = self.state_before_map(&stored).await?;
        let (state_ids, servers_in_room) = if omit_members {
            let joining = stored.state_key().unwrap_or_default();
            let (kept, servers) = self.partial_join_state(&before, joining).await?;
            (kept, Some(servers))
        } else {
            (before.into_values().collect::<Vec<_>>(), None)
        };
        // The join's own auth chain starts with its auth events (the authorising user's
        // membership of a restricted join among them, which a partial state leaves out).
        let mut chain_from: Vec<&str> = state_ids.iter().map(String::as_str).collect();
        chain_from.push(stored.event_id());
        let mut chain_ids = self.storage().auth_chain(&chain_from).await?;
        if omit_members {
            // What is in `state` need not be repeated in `auth_chain`.
            let in_state: BTreeSet<&str> = state_ids.iter().map(String::as_str).collect();
            chain_ids.retain(|id| !in_state.contains(id.as_str()));
        }
        Ok(Joined {
            state: self.pdus(&state_ids).await?,
            auth_chain: self.pdus(&chain_ids).await?,
            event: stored,
            members_omitted: omit_members,
            servers_in_room,
        })
    }

    /// The state a partial-state join is answered (`before`: the state before the join): every
    /// state event but the member events, except the joining user's own membership and, in a
    /// room with neither a name nor a canonical alias, the heroes' (the first members, joined
    /// or invited, else left or banned, the joining user aside); and the servers with joined
    /// members.
    async fn partial_join_state(
        &self,
        before: &StateIds,
        joining: &str,
    ) -> Result<(Vec<String>, Vec<String>), ApiError> {
        let mut kept = Vec::new();
        let mut servers = BTreeSet::new();
        let (mut present, mut gone) = (Vec::new(), Vec::new());
        for ((kind, state_key), id) in before {
            if kind != "m.room.member" {
                kept.push(id.clone());
                continue;
            }
            if state_key == joining {
                kept.push(id.clone());
            }
            let Some(pdu) = self.pdu(id).await? else { continue };
            let membership = pdu.content().get_str("membership");
            if membership == Some("join")
                && let Some((_, server)) = state_key.split_once(':')
            {
                servers.insert(server.to_owned());
            }
            if state_key == joining {
                continue;
            }
            match membership {
                Some("join" | "invite") if present.len() < HEROES => present.push(id.clone()),
                Some("leave" | "ban") if gone.len() < HEROES => gone.push(id.clone()),
                _ => {}
            }
        }
        if !self.has_title(before).await? {
            kept.extend(if present.is_empty() { gone } else { present });
        }
        Ok((kept, servers.into_iter().collect()))
    }

    /// Whether a state names the room: an `m.room.name` or an `m.room.canonical_alias` that is
    /// set and not empty (else clients name it after its heroes).
    async fn has_title(&self, state: &StateIds) -> Result<bool, ApiError> {
        for (kind, field) in [("m.room.name", "name"), ("m.room.canonical_alias", "alias")] {
            let Some(id) = state.get(&(kind.to_owned(), String::new())) else { continue };
            if let Some(pdu) = self.pdu(id).await?
                && pdu.content().get_str(field).is_some_and(|value| !value.is_empty())
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `send_join` or `send_leave`: stores the `membership` event of a user of `origin`
    /// after the checks every received event goes through.
    pub(crate) async fn membership_through_us(
        &self,
        keys: &dyn matrix_federation::keys::KeyProvider,
        origin: &str,
        room_id: &str,
        event_id: &str,
        event: Object,
        membership: &str,
    ) -> Result<Arc<matrix_core::Pdu>, ApiError> {
        let rules = self.rules(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let pdu = matrix_core::Pdu::from_object(event.clone(), rules)
            .map_err(|e| ApiError::bad_json(format!("the join is not a valid event: {e}")))?;
        let sender = pdu.sender();
        let is_membership = pdu.kind() == "m.room.member"
            && pdu.state_key() == Some(sender)
            && pdu.content().get_str("membership") == Some(membership);
        if !is_membership {
            return Err(ApiError::bad_json(format!(
                "the event is not a {membership} of its sender"
            )));
        }
        if sender.split_once(':').map(|(_, server)| server) != Some(origin) {
            return Err(ApiError::forbidden("the joining user is not of the requesting server"));
        }
        if pdu.room_id() != room_id || pdu.event_id() != event_id {
            return Err(ApiError::bad_json("the event's room or id is not the one in the path"));
        }
        if !self.server_allowed(room_id, origin).await? {
            return Err(ApiError::forbidden("the room's server ACL denies your server"));
        }
        // A restricted join authorised by one of our users needs our signature too.
        let mut event = event;
        let ours = format!(":{}", self.server_name());
        if membership == "join"
            && pdu
                .content()
                .get_str("join_authorised_via_users_server")
                .is_some_and(|user| user.ends_with(&ours))
        {
            matrix_core::signing::sign_event(
                &mut event,
                self.server_name().as_str(),
                self.key(),
                rules,
            );
        }
        let stored = match self.receive(keys, event).await {
            Ok(Received::Accepted(pdu)) => pdu,
            Ok(Received::Known) => self
                .pdu(event_id)
                .await?
                .ok_or_else(|| ApiError::unknown("a stored join is not readable"))?,
            Ok(Received::SoftFailed(reason) | Received::Rejected(reason)) => {
                return Err(ApiError::forbidden(format!(
                    "the {membership} is not allowed: {reason}"
                )));
            }
            Err(ReceiveError::Missing(id)) => {
                return Err(ApiError::bad_json(format!("the event names an unknown event {id}")));
            }
            Err(ReceiveError::Failed(e) | ReceiveError::Transient(e)) => return Err(e),
        };
        // The other servers in the room learn of it from us, the server it went through.
        self.forward(&stored, origin).await?;
        Ok(stored)
    }

    /// Sends an event that reached the room through us (a join or leave by `send_join` or
    /// `send_leave`) to the room's other servers, except `origin`.
    async fn forward(&self, pdu: &matrix_core::Pdu, origin: &str) -> Result<(), ApiError> {
        let Some(sender) = self.outbound.get() else { return Ok(()) };
        let Some(info) = self.storage().room(pdu.room_id()).await? else { return Ok(()) };
        let Some(snapshot) = info.current_state else { return Ok(()) };
        let servers: Vec<String> = self
            .remote_servers(pdu.room_id(), snapshot)
            .await?
            .iter()
            .filter(|server| server.as_str() != origin)
            .cloned()
            .collect();
        if servers.is_empty() {
            return Ok(());
        }
        let item = matrix_federation::sender::Outbound::Pdu(pdu.json().clone());
        let items = servers.into_iter().map(|server| (server, item.clone())).collect();
        sender.enqueue(items).await.map_err(ApiError::from)
    }
}
