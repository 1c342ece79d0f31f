//! Membership: join, invite, leave, kick, ban, unban, forget (knocks: `knock.rs`). The authorization rules decide
//! who may do what; these build the `m.room.member` events.

use matrix_core::json::{Object, Value};
use matrix_storage::ChangeSet;
use ruma::UserId;

use super::{Draft, Rooms};
use crate::error::ApiError;

impl Rooms {
    /// A member event of `user` (with their profile for joins and invites).
    pub(crate) async fn member_draft(
        &self,
        target: &UserId,
        membership: &str,
        reason: Option<String>,
    ) -> Result<Draft, ApiError> {
        let mut content = Object::new();
        content.insert("membership", membership);
        if matches!(membership, "join" | "invite")
            && let Some(profile) = self.storage().profile(target.as_str()).await?
        {
            if let Some(name) = profile.displayname {
                content.insert("displayname", name);
            }
            if let Some(url) = profile.avatar_url {
                content.insert("avatar_url", url);
            }
        }
        if let Some(reason) = reason {
            content.insert("reason", reason);
        }
        Ok(Draft::state("m.room.member", target.as_str(), content))
    }

    /// Joins `user` to a room: here when one of our users is in it, else through one of
    /// `servers` (federation).
    pub(crate) async fn join_anywhere(
        &self,
        federation: Option<&crate::services::federation::Federation>,
        room_id: &str,
        user: &UserId,
        reason: Option<String>,
        servers: &[String],
    ) -> Result<(), ApiError> {
        refuse_blocked(self, room_id).await?;
        let known = self.rules(room_id).await?.is_some();
        let resident = known && self.is_resident(room_id).await?;
        match federation {
            Some(federation) if !resident => {
                let mut candidates: Vec<String> = Vec::new();
                // Invited: the inviter's server is in the room.
                if let Some(inviter) = self.invited_by(room_id, user).await? {
                    candidates.push(inviter);
                }
                candidates.extend(servers.iter().cloned());
                // Room ids of versions 1-11 name the server that made the room.
                if let Some((_, server)) = room_id.split_once(':') {
                    candidates.push(server.to_owned());
                }
                candidates.dedup();
                self.join_remote(
                    federation.client(),
                    federation.keys(),
                    room_id,
                    user,
                    &candidates,
                )
                .await?;
                self.forget_undo(room_id, user).await
            }
            _ => self.join(room_id, user, reason).await,
        }
    }

    /// Joins `user` to a room stored here.
    pub(crate) async fn join(
        &self,
        room_id: &str,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        let Some(rules) = self.rules(room_id).await? else {
            return Err(ApiError::room_not_found());
        };
        refuse_blocked(self, room_id).await?;
        let mut draft = self.member_draft(user, "join", reason).await?;
        if let Some(via) = self.restricted_join_authoriser(rules, room_id, user).await? {
            draft.content.insert("join_authorised_via_users_server", via);
        }
        self.append(room_id, user, draft).await?;
        self.forget_undo(room_id, user).await
    }

    /// For a join to a `restricted` (or `knock_restricted`) room by a user who is neither
    /// invited nor joined: a user of this server, joined with the power to invite, who
    /// authorises it, once the joiner is shown to be in one of the rooms the join rules allow.
    /// `None` when the join needs no authoriser (the authorization rules decide the rest).
    pub(super) async fn restricted_join_authoriser(
        &self,
        rules: &'static matrix_core::RoomVersionRules,
        room_id: &str,
        user: &UserId,
    ) -> Result<Option<String>, ApiError> {
        if !rules.auth.restricted_join {
            return Ok(None);
        }
        let Some(info) = self.storage().room(room_id).await? else { return Ok(None) };
        let Some(snapshot) = info.current_state else { return Ok(None) };
        let Some(join_rules) = self.state_pdu(snapshot, "m.room.join_rules", "").await? else {
            return Ok(None);
        };
        let content = join_rules.content();
        let restricted = match content.get_str("join_rule") {
            Some("restricted") => true,
            Some("knock_restricted") => rules.auth.knock_restricted,
            _ => false,
        };
        let current = self.storage().membership(room_id, user.as_str()).await?;
        if !restricted || matches!(current.as_deref(), Some("invite" | "join")) {
            return Ok(None);
        }
        let mut allowed = false;
        if let Some(Value::Array(allow)) = content.get("allow") {
            for condition in allow.iter().filter_map(Value::as_object) {
                if condition.get_str("type") == Some("m.room_membership")
                    && let Some(space) = condition.get_str("room_id")
                    && self.storage().membership(space, user.as_str()).await?.as_deref()
                        == Some("join")
                {
                    allowed = true;
                    break;
                }
            }
        }
        if !allowed {
            return Err(ApiError::forbidden(
                "joining needs an invite or membership of a room the join rules allow",
            ));
        }
        // Candidates: the users the power levels name (and, for rooms v12, the creators),
        // then everyone joined, so that a big room's members are not all looked at when an
        // administrator can authorise.
        let suffix = format!(":{}", self.server_name());
        let mut candidates: Vec<String> = Vec::new();
        if let Some(levels) = self.state_pdu(snapshot, "m.room.power_levels", "").await?
            && let Some(users) = levels.content().get_object("users")
        {
            candidates.extend(users.iter().map(|(user, _)| user.to_owned()));
        }
        if let Some(create) = self.state_pdu(snapshot, "m.room.create", "").await? {
            candidates.push(create.sender().to_owned());
        }
        let mut joined: Vec<String> = self
            .storage()
            .members(room_id)
            .await?
            .into_iter()
            .filter(|(_, m)| m == "join")
            .map(|(u, _)| u)
            .collect();
        joined.sort();
        let is_joined: std::collections::HashSet<&str> =
            joined.iter().map(String::as_str).collect();
        for member in candidates.iter().chain(joined.iter()) {
            if !member.ends_with(&suffix) || !is_joined.contains(member.as_str()) {
                continue;
            }
            let Ok(member_id) = <&UserId>::try_from(member.as_str()) else { continue };
            if self.has_level(rules, snapshot, member_id, super::Level::Invite).await? {
                return Ok(Some(member.clone()));
            }
        }
        Err(ApiError::forbidden("no user of this server in the room can authorise the join"))
    }

    /// The server of whoever invited `user`, when `user`'s membership is an invite.
    pub(super) async fn invited_by(
        &self,
        room_id: &str,
        user: &UserId,
    ) -> Result<Option<String>, ApiError> {
        let Some(info) = self.storage().room(room_id).await? else { return Ok(None) };
        let Some(snapshot) = info.current_state else { return Ok(None) };
        let Some(member) = self.state_pdu(snapshot, "m.room.member", user.as_str()).await? else {
            return Ok(None);
        };
        if member.content().get_str("membership") != Some("invite") {
            return Ok(None);
        }
        Ok(member.sender().split_once(':').map(|(_, server)| server.to_owned()))
    }

    /// `sender` invites `target` (a user of another server through its server's `/invite`).
    pub(crate) async fn invite(
        &self,
        room_id: &str,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<(), ApiError> {
        let remote = target.server_name().as_str() != self.server_name().as_str();
        if !remote && self.storage().user(target.as_str()).await?.is_none() {
            return Err(ApiError::not_found("the invited user does not exist"));
        }
        let mut draft = self.member_draft(target, "invite", reason).await?;
        if is_direct {
            draft.content.insert("is_direct", Value::Bool(true));
        }
        if remote {
            let (Some(client), Some(keys)) = (self.federation_client(), self.key_provider()) else {
                return Err(ApiError::forbidden(
                    "inviting users of other servers needs federation, which is off here",
                ));
            };
            let server = target.server_name().as_str();
            return self
                .invite_remote(&client, keys.as_ref(), room_id, sender, draft, server)
                .await;
        }
        self.append(room_id, sender, draft).await?;
        Ok(())
    }

    /// `sender` changes `target`'s membership to `leave` (leave, kick, unban) or `ban`.
    pub(crate) async fn set_membership(
        &self,
        room_id: &str,
        sender: &UserId,
        target: &UserId,
        membership: &str,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        let draft = self.member_draft(target, membership, reason).await?;
        self.append(room_id, sender, draft).await?;
        Ok(())
    }

    /// Kicks: only a joined or invited (or knocking) member can be kicked.
    pub(crate) async fn kick(
        &self,
        room_id: &str,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        let current = self.storage().membership(room_id, target.as_str()).await?;
        if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) {
            return Err(ApiError::forbidden("the user is not in the room"));
        }
        self.set_membership(room_id, sender, target, "leave", reason).await
    }

    /// Unbans: only a banned user can be unbanned.
    pub(crate) async fn unban(
        &self,
        room_id: &str,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        if self.storage().membership(room_id, target.as_str()).await?.as_deref() != Some("ban") {
            return Err(ApiError::forbidden("the user is not banned"));
        }
        self.set_membership(room_id, sender, target, "leave", reason).await
    }

    /// Leaves a room (or rejects an invite): through another server when no user of ours is
    /// in the room.
    pub(crate) async fn leave(
        &self,
        room_id: &str,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        if let Some(client) = self.federation_client()
            && self.rules(room_id).await?.is_some()
            && !self.is_resident(room_id).await?
        {
            if let Some(server) = self.invited_by(room_id, user).await? {
                return self.leave_remote(&client, room_id, user, &server).await;
            }
            // A knock on a room of other servers is rescinded through one of them.
            let servers = self.knocked_through(room_id, user).await?;
            if !servers.is_empty() {
                return self.rescind_remote_knock(&client, room_id, user, &servers).await;
            }
        }
        match self.storage().membership(room_id, user.as_str()).await?.as_deref() {
            Some("join" | "invite" | "knock") => {
                self.set_membership(room_id, user, user, "leave", reason).await
            }
            Some("leave") => Ok(()),
            _ => Err(ApiError::forbidden("you are not in the room")),
        }
    }

    /// Forgets a room the user has left.
    pub(crate) async fn forget(&self, room_id: &str, user: &UserId) -> Result<(), ApiError> {
        match self.storage().membership(room_id, user.as_str()).await?.as_deref() {
            Some("join" | "invite" | "knock") => {
                Err(ApiError::bad_state("leave the room before forgetting it"))
            }
            None => Err(ApiError::not_found("you were never in this room")),
            Some(_) => self.set_forgotten(room_id, user, true).await,
        }
    }

    /// Whether the user forgot the room.
    pub(crate) async fn forgotten(&self, room_id: &str, user: &UserId) -> Result<bool, ApiError> {
        Ok(self.storage().forgotten(room_id, user.as_str()).await?)
    }

    async fn set_forgotten(
        &self,
        room_id: &str,
        user: &UserId,
        forgotten: bool,
    ) -> Result<(), ApiError> {
        let mut changes = ChangeSet::new();
        changes.forgotten.push((user.to_string(), room_id.to_owned(), forgotten));
        self.storage().apply(changes).await?;
        Ok(())
    }

    async fn forget_undo(&self, room_id: &str, user: &UserId) -> Result<(), ApiError> {
        if self.forgotten(room_id, user).await? {
            self.set_forgotten(room_id, user, false).await?;
        }
        Ok(())
    }
}

/// Refuses a join to a room the server's administrators blocked (Synapse's room block).
async fn refuse_blocked(rooms: &Rooms, room_id: &str) -> Result<(), ApiError> {
    if crate::services::admin::rooms::is_blocked(rooms.storage(), room_id).await? {
        return Err(ApiError::forbidden("This room has been blocked on this server"));
    }
    Ok(())
}
