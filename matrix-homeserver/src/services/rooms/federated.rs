//! What other servers ask of our rooms: join templates and joins through us (`make_join`,
//! `send_join`).

use matrix_core::json::Object;
use ruma::UserId;

use super::Rooms;
use crate::error::ApiError;

impl Rooms {
    /// `make_join`: the join event `user` (of the requesting server) would send to a room of
    /// ours, unsigned, and the room version, if the join would be allowed now. `versions`
    /// are the room versions the requesting server supports.
    pub(crate) async fn join_template(
        &self,
        room_id: &str,
        user: &UserId,
        versions: &[String],
    ) -> Result<(Object, &'static str), ApiError> {
        let rules = self.rules(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        if !self.server_allowed(room_id, user.server_name().as_str()).await? {
            return Err(ApiError::forbidden("the room's server ACL denies your server"));
        }
        if !versions.iter().any(|v| v == rules.id) {
            return Err(ApiError::incompatible_room_version(rules.id));
        }
        let info = self.storage().room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let snapshot =
            info.current_state.ok_or_else(|| ApiError::unknown("the room has no state"))?;
        let mut content = Object::new();
        content.insert("membership", "join");
        let mut draft = super::Draft::state("m.room.member", user.as_str(), content);
        if let Some(via) = self.restricted_join_authoriser(rules, room_id, user).await? {
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
