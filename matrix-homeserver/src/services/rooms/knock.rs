//! Knocking (`POST /knock/{roomIdOrAlias}`, room versions 7 and later): a user asks to be
//! let in; the room's members with the power to invite accept (an invite) or deny (a kick),
//! and the knocker may rescind (a leave).
//!
//! - A room one of our users is joined to: the knock is built and authorized as any event of
//!   ours (the authorization rules allow it only with the join rule `knock`, or
//!   `knock_restricted` from version 10, and refuse it to a joined, invited or banned user).
//! - A room of other servers: `make_knock` on one of them (the `via` servers, then the server
//!   of the room id), the template signed by us, `send_knock`, and the room's stripped state
//!   of its answer (`knock_room_state`, checked as an invite's is) kept with the knock in a
//!   stub of the room, so that `/sync` shows it in `rooms.knock`. Rescinding it is a leave
//!   through `make_leave`/`send_leave` on a server the stripped state names.

use matrix_core::{RoomVersionRules, Value};
use matrix_federation::client::FederationClient;
use matrix_federation::keys::KeyProvider;
use ruma::UserId;

use super::Rooms;
use super::invite_remote::{bounded_stripped_state, check_stripped_state};
use crate::error::ApiError;

/// The most servers a knock (or the rescinding leave) tries.
const MAX_KNOCK_SERVERS: usize = 10;

impl Rooms {
    /// `user` knocks on `room_id`: here when one of our users is in it, else through one of
    /// `servers` (federation).
    pub(crate) async fn knock_anywhere(
        &self,
        federation: Option<&crate::services::federation::Federation>,
        room_id: &str,
        user: &UserId,
        reason: Option<String>,
        servers: &[String],
    ) -> Result<(), ApiError> {
        let known = self.rules(room_id).await?.is_some();
        let resident = known && self.is_resident(room_id).await?;
        if resident {
            return self.knock(room_id, user, reason).await;
        }
        let Some(federation) = federation else {
            return Err(ApiError::room_not_found());
        };
        // A room we hold a stub of: what our user is there now decides first.
        if known {
            match self.storage().membership(room_id, user.as_str()).await?.as_deref() {
                Some("knock") => return Ok(()),
                Some("invite") => {
                    return Err(ApiError::forbidden("you are invited to the room: join it"));
                }
                _ => {}
            }
        }
        let mut candidates: Vec<String> = servers.to_vec();
        if let Some((_, server)) = room_id.split_once(':') {
            candidates.push(server.to_owned());
        }
        candidates.dedup();
        candidates.retain(|s| s.as_str() != self.server_name().as_str());
        candidates.truncate(MAX_KNOCK_SERVERS);
        let mut last_error =
            ApiError::not_found("no server in the room could be asked: give one with `via`");
        for server in &candidates {
            match self
                .knock_through(
                    federation.client(),
                    federation.keys(),
                    server,
                    room_id,
                    user,
                    &reason,
                )
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!("federation: knocking on {room_id} through {server}: {e}");
                    // A refusal of the room itself says more than a server that was down.
                    let refused = e.status().is_client_error();
                    last_error = e;
                    if refused {
                        break;
                    }
                }
            }
        }
        Err(last_error)
    }

    /// Checks that `rules` allow knocking at all (room versions 7 and later).
    fn knocking_supported(rules: &RoomVersionRules) -> Result<(), ApiError> {
        if rules.auth.knocking {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "room version {} does not support knocking (version 7 and later do)",
                rules.id
            )))
        }
    }

    /// `user` knocks on a room stored here that one of our users is joined to.
    pub(crate) async fn knock(
        &self,
        room_id: &str,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        let rules = self.rules(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        Self::knocking_supported(rules)?;
        match self.storage().membership(room_id, user.as_str()).await?.as_deref() {
            Some("join") => return Err(ApiError::forbidden("you are already in the room")),
            Some("invite") => {
                return Err(ApiError::forbidden("you are invited to the room: join it"));
            }
            Some("ban") => return Err(ApiError::forbidden("you are banned from the room")),
            Some("knock") => return Ok(()),
            _ => {}
        }
        let info = self.storage().room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let snapshot = info.current_state.ok_or_else(ApiError::room_not_found)?;
        let join_rule = self
            .state_pdu(snapshot, "m.room.join_rules", "")
            .await?
            .and_then(|p| p.content().get_str("join_rule").map(str::to_owned));
        let knockable = match join_rule.as_deref() {
            Some("knock") => true,
            Some("knock_restricted") => rules.auth.knock_restricted,
            _ => false,
        };
        if !knockable {
            return Err(ApiError::forbidden(format!(
                "the room's join rule is {}, not knock: it cannot be knocked on",
                join_rule.as_deref().unwrap_or("(none)")
            )));
        }
        let draft = self.member_draft(user, "knock", reason).await?;
        self.append(room_id, user, draft).await?;
        Ok(())
    }

    /// A knock through `server`: `make_knock`, our signature, `send_knock`, and the stub.
    async fn knock_through(
        &self,
        client: &FederationClient,
        keys: &dyn KeyProvider,
        server: &str,
        room_id: &str,
        user: &UserId,
        reason: &Option<String>,
    ) -> Result<(), ApiError> {
        let versions: Vec<&str> =
            RoomVersionRules::ALL.iter().filter(|r| r.auth.knocking).map(|r| r.id).collect();
        let template = client
            .make_knock(server, room_id, user.as_str(), &versions)
            .await
            .map_err(super::join_remote::refusal(server, "knock"))?;
        let version = template.get_str("room_version").unwrap_or("1");
        let rules = RoomVersionRules::get(version).ok_or_else(|| {
            ApiError::unsupported_room_version(format!("the room is of version {version}"))
        })?;
        Self::knocking_supported(rules)?;
        let mut template = template;
        if let Some(reason) = reason
            && let Some(Value::Object(event)) = template.get_mut("event")
        {
            event.object_entry("content").insert("reason", reason.as_str());
        }
        // Our user's display name and avatar go in the knock, as in a join.
        let profile = self.storage().profile(user.as_str()).await?.unwrap_or_default();
        let knock = self.sign_template(&template, rules, room_id, user, "knock", Some(&profile))?;
        let answer = client
            .send_knock(server, room_id, knock.event_id(), knock.json())
            .await
            .map_err(super::join_remote::refusal(server, "knock"))?;
        let state = match answer.get("knock_room_state") {
            Some(Value::Array(list)) => bounded_stripped_state(list.clone()),
            _ => Vec::new(),
        };
        if let Err(why) = check_stripped_state(keys, rules, room_id, &state).await? {
            // The knock is in the room now; its state is what is wrong: keep the knock alone.
            tracing::warn!("federation: the knock_room_state of {room_id} from {server}: {why}");
            self.store_stub(rules, knock, Some(("knock_room_state", Vec::new()))).await?;
            return Ok(());
        }
        self.store_stub(rules, knock, Some(("knock_room_state", state))).await?;
        Ok(())
    }

    /// The servers to ask to rescind our user's knock on a room of other servers: those of
    /// the senders of the stripped state kept with it, then the room id's.
    pub(super) async fn knocked_through(
        &self,
        room_id: &str,
        user: &UserId,
    ) -> Result<Vec<String>, ApiError> {
        let Some(info) = self.storage().room(room_id).await? else { return Ok(Vec::new()) };
        let Some(snapshot) = info.current_state else { return Ok(Vec::new()) };
        let Some(knock) = self.state_pdu(snapshot, "m.room.member", user.as_str()).await? else {
            return Ok(Vec::new());
        };
        if knock.content().get_str("membership") != Some("knock") {
            return Ok(Vec::new());
        }
        let mut servers: Vec<String> = Vec::new();
        if let Some(Value::Array(state)) =
            knock.json().get_object("unsigned").and_then(|u| u.get("knock_room_state"))
        {
            for event in state.iter().filter_map(Value::as_object) {
                if let Some((_, server)) = event.get_str("sender").and_then(|s| s.split_once(':'))
                    && !servers.iter().any(|s| s == server)
                {
                    servers.push(server.to_owned());
                }
            }
        }
        if let Some((_, server)) = room_id.split_once(':')
            && !servers.iter().any(|s| s == server)
        {
            servers.push(server.to_owned());
        }
        servers.retain(|s| s.as_str() != self.server_name().as_str());
        servers.truncate(MAX_KNOCK_SERVERS);
        Ok(servers)
    }

    /// Our user rescinds a knock on a room of other servers: a leave through the first of
    /// `servers` that takes it.
    pub(super) async fn rescind_remote_knock(
        &self,
        client: &FederationClient,
        room_id: &str,
        user: &UserId,
        servers: &[String],
    ) -> Result<(), ApiError> {
        let mut last_error = ApiError::not_found("no server in the room could be asked");
        for server in servers {
            match self.leave_remote(client, room_id, user, server).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(
                        "federation: rescinding a knock on {room_id} through {server}: {e}"
                    );
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }
}

impl Rooms {
    /// A PDU that ends our user's knock (or invite) on a room no user of ours is in: a leave
    /// (a denied knock, a revoked invite) or a ban by a user of `origin`, signed by it. We
    /// hold no state of the room to check it against, so it is taken on its signature and
    /// kept as the stub's one event, as our own leave would be. `None`: the PDU is not one
    /// (it takes the ordinary path, which refuses events of rooms we are not in).
    pub(crate) async fn out_of_band_membership(
        &self,
        keys: &dyn KeyProvider,
        origin: &str,
        event: &matrix_core::Object,
    ) -> Result<Option<super::remote::Received>, ApiError> {
        use super::remote::Received;
        let room_id = event.get_str("room_id").unwrap_or_default();
        let looks_like = event.get_str("type") == Some("m.room.member")
            && event
                .get_object("content")
                .and_then(|c| c.get_str("membership"))
                .is_some_and(|m| m == "leave" || m == "ban");
        if !looks_like {
            return Ok(None);
        }
        let Some(rules) = self.rules(room_id).await? else { return Ok(None) };
        if self.is_resident(room_id).await? {
            return Ok(None);
        }
        let Ok(pdu) = matrix_core::Pdu::from_object(event.clone(), rules) else {
            return Ok(None);
        };
        let Some(target) = pdu.state_key().and_then(|t| <&UserId>::try_from(t).ok()) else {
            return Ok(None);
        };
        let ours = |user: &str| {
            user.split_once(':').is_some_and(|(_, server)| server == self.server_name().as_str())
        };
        if !ours(target.as_str()) || ours(pdu.sender()) {
            return Ok(None);
        }
        let current = self.storage().membership(room_id, target.as_str()).await?;
        if !matches!(current.as_deref(), Some("knock" | "invite")) {
            return Ok(None);
        }
        if pdu.sender().split_once(':').map(|(_, s)| s) != Some(origin) {
            return Ok(Some(Received::Rejected(
                "a membership of a room we are not in must come from its sender's server"
                    .to_owned(),
            )));
        }
        let sent = pdu.json().clone();
        let verified = super::join_remote::verify_all(keys, rules, vec![pdu]).await?;
        let Some(pdu) = verified.into_iter().next().filter(|p| p.json() == &sent) else {
            return Ok(Some(Received::Rejected("the event fails its signature checks".to_owned())));
        };
        if self.storage().event(pdu.event_id()).await?.is_some() {
            return Ok(Some(Received::Known));
        }
        let stored = self.store_stub(rules, pdu, None).await?;
        Ok(Some(Received::Accepted(stored)))
    }
}
