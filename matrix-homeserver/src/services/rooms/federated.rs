//! What other servers ask of our rooms: join templates and joins through us (`make_join`,
//! `send_join`).

use std::sync::Arc;

use matrix_core::json::Object;
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
        let provisional = matrix_core::Pdu::with_event_id(json.clone(), String::new(), rules);
        let auth_refs: Vec<&matrix_core::Pdu> =
            built.auth_pdus.iter().map(|p| p.as_ref()).collect();
        matrix_core::auth::check_with_auth_events(
            rules,
            &provisional,
            &auth_refs,
            built.create.as_deref(),
        )
        .map_err(|rejection| {
            ApiError::forbidden(format!("the join is not allowed: {rejection}"))
        })?;
        Ok((json, rules.id))
    }
}

/// What `send_join` answers: the join as stored, the state before it and the auth chain of
/// both.
#[derive(Debug)]
pub(crate) struct Joined {
    pub(crate) event: Arc<matrix_core::Pdu>,
    pub(crate) state: Vec<Arc<matrix_core::Pdu>>,
    pub(crate) auth_chain: Vec<Arc<matrix_core::Pdu>>,
}

impl Rooms {
    /// `send_join`: stores the join of a user of `origin` (built from our template and signed
    /// by their server) after the checks every received event goes through.
    pub(crate) async fn join_through_us(
        &self,
        keys: &dyn matrix_federation::keys::KeyProvider,
        origin: &str,
        room_id: &str,
        event_id: &str,
        event: Object,
    ) -> Result<Joined, ApiError> {
        let stored =
            self.membership_through_us(keys, origin, room_id, event_id, event, "join").await?;
        let state_ids = self.state_before_ids(&stored).await?;
        let mut chain_from: Vec<&str> = state_ids.iter().map(String::as_str).collect();
        chain_from.extend(stored.auth_events());
        let chain_ids = self.storage().auth_chain(&chain_from).await?;
        Ok(Joined {
            state: self.pdus(&state_ids).await?,
            auth_chain: self.pdus(&chain_ids).await?,
            event: stored,
        })
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
            matrix_core::signing::sign_json(&mut event, self.server_name().as_str(), self.key());
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
