//! Room aliases and the local room directory.

use std::collections::BTreeSet;
use std::sync::Arc;

use matrix_storage::{AppserviceListing, SnapshotId};
use ruma::UserId;
use serde_json::{Value, json};

use super::Rooms;
use crate::error::ApiError;
use crate::services::appservice::transactions::Note;
use matrix_storage::{Alias, ChangeSet};

/// Which room list `publicRooms` answers with (its `include_all_networks` and
/// `third_party_instance_id`, as Synapse reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Network {
    /// The server's own directory (the default).
    Main,
    /// The directory and every application service's network lists.
    All,
    /// One network of one application service (`{appservice id}|{network id}`).
    Instance {
        /// The service's registration id.
        appservice_id: String,
        /// The network.
        network_id: String,
    },
}

impl Network {
    /// The list a request names: `include_all_networks` and a `third_party_instance_id`
    /// together are refused (the spec: the one only without the other).
    pub(crate) fn of(
        include_all_networks: bool,
        third_party_instance_id: Option<&str>,
    ) -> Result<Self, ApiError> {
        match (include_all_networks, third_party_instance_id) {
            (true, Some(_)) => Err(ApiError::invalid_param(
                "include_all_networks cannot be used with a third_party_instance_id",
            )),
            (true, None) => Ok(Network::All),
            (false, None) => Ok(Network::Main),
            (false, Some(instance)) => match instance.split_once('|') {
                Some((service, network)) if !network.contains('|') => Ok(Network::Instance {
                    appservice_id: service.to_owned(),
                    network_id: network.to_owned(),
                }),
                _ => Err(ApiError::invalid_param(
                    "third_party_instance_id is not of the form {appservice}|{network}",
                )),
            },
        }
    }
}

impl Rooms {
    /// Where an alias of this server points (others' are asked by `resolve_any_alias`).
    pub(crate) async fn resolve_alias(&self, alias: &str) -> Result<Alias, ApiError> {
        let alias = ruma::RoomAliasId::parse(alias)
            .map_err(|e| ApiError::invalid_param(format!("not a room alias: {e}")))?;
        if alias.server_name().as_str() != self.server_name().as_str() {
            return Err(ApiError::not_found("the alias is of another server"));
        }
        self.storage()
            .alias(alias.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found("no such alias"))
    }

    /// Where an alias points, asking its server when it is another's: the room and servers
    /// to join it through.
    pub(crate) async fn resolve_any_alias(
        &self,
        state: &crate::State,
        alias: &str,
    ) -> Result<(String, Vec<String>), ApiError> {
        let parsed = ruma::RoomAliasId::parse(alias)
            .map_err(|e| ApiError::invalid_param(format!("not a room alias: {e}")))?;
        let server = parsed.server_name().as_str();
        let federation = match &state.federation {
            Some(federation) if server != self.server_name().as_str() => federation,
            _ => {
                let found = match self.resolve_alias(alias).await {
                    // An unknown local alias of a service's namespace: the service may create
                    // it when asked.
                    Err(e)
                        if e.errcode() == "M_NOT_FOUND"
                            && server == self.server_name().as_str()
                            && state.appservices.query_alias(parsed.as_str()).await =>
                    {
                        self.resolve_alias(alias).await?
                    }
                    other => other?,
                };
                return Ok((found.room_id, vec![self.server_name().to_string()]));
            }
        };
        let answer =
            federation.client().query_directory(server, alias).await.map_err(|e| match e {
                matrix_federation::FederationError::Status { status: 404, .. } => {
                    ApiError::not_found("no such alias")
                }
                other => other.into(),
            })?;
        let room_id = answer
            .get_str("room_id")
            .filter(|id| ruma::RoomId::parse(*id).is_ok())
            .ok_or_else(|| ApiError::unknown("the alias's server answered no room id"))?
            .to_owned();
        let mut servers: Vec<String> = match answer.get("servers") {
            Some(matrix_core::Value::Array(list)) => list
                .iter()
                .filter_map(matrix_core::Value::as_str)
                .filter(|s| ruma::ServerName::parse(*s).is_ok())
                .take(10)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        servers.insert(0, server.to_owned());
        servers.dedup();
        Ok((room_id, servers))
    }

    /// Points a new alias of this server at a room the user is in.
    pub(crate) async fn create_alias(
        &self,
        alias: &str,
        room_id: &str,
        user: &UserId,
    ) -> Result<(), ApiError> {
        let parsed = ruma::RoomAliasId::parse(alias)
            .map_err(|e| ApiError::invalid_param(format!("not a room alias: {e}")))?;
        if parsed.server_name().as_str() != self.server_name().as_str() {
            return Err(ApiError::invalid_param("the alias is not of this server"));
        }
        if self.storage().membership(room_id, user.as_str()).await?.as_deref() != Some("join") {
            return Err(ApiError::forbidden("you are not in this room"));
        }
        let _guard = self.alias_lock.lock().await;
        if self.storage().alias(alias).await?.is_some() {
            return Err(ApiError::alias_exists());
        }
        let mut changes = ChangeSet::new();
        changes.aliases.push(Alias {
            alias: alias.to_owned(),
            room_id: room_id.to_owned(),
            creator: user.to_string(),
        });
        self.storage().apply(changes).await?;
        self.ephemeral.note_for_appservices(&Note::Aliases(room_id.to_owned()));
        Ok(())
    }

    /// Deletes an alias: its creator, an administrator, or a room member allowed to change
    /// `m.room.canonical_alias` may.
    pub(crate) async fn delete_alias(
        &self,
        alias: &str,
        user: &UserId,
        admin: bool,
    ) -> Result<(), ApiError> {
        let record = self.resolve_alias(alias).await?;
        let allowed = admin
            || record.creator == user.as_str()
            || self.may_send_state(&record.room_id, user, "m.room.canonical_alias").await?;
        if !allowed {
            return Err(ApiError::forbidden("you may not delete this alias"));
        }
        let _guard = self.alias_lock.lock().await;
        let mut changes = ChangeSet::new();
        changes.deleted_aliases.push(alias.to_owned());
        self.storage().apply(changes).await?;
        self.ephemeral.note_for_appservices(&Note::Aliases(record.room_id));
        Ok(())
    }

    /// Whether `user` is joined with the level to send state `kind`.
    async fn may_send_state(
        &self,
        room_id: &str,
        user: &UserId,
        kind: &str,
    ) -> Result<bool, ApiError> {
        let Some(rules) = self.rules(room_id).await? else { return Ok(false) };
        let Some(info) = self.storage().room(room_id).await? else { return Ok(false) };
        let Some(snapshot) = info.current_state else { return Ok(false) };
        if self.storage().membership(room_id, user.as_str()).await?.as_deref() != Some("join") {
            return Ok(false);
        }
        self.has_level(rules, snapshot, user, super::Level::State(kind)).await
    }

    /// The local aliases of a room.
    pub(crate) async fn aliases_of(&self, room_id: &str) -> Result<Vec<String>, ApiError> {
        let aliases = self.storage().room_aliases(room_id).await?;
        Ok(aliases.into_iter().map(|a| a.alias).collect())
    }

    /// Whether a room is in the directory.
    pub(crate) async fn published(&self, room_id: &str) -> Result<bool, ApiError> {
        Ok(self.storage().published(room_id).await?)
    }

    /// Publishes or hides a room (members allowed to change the canonical alias may).
    pub(crate) async fn set_published(
        &self,
        room_id: &str,
        user: &UserId,
        admin: bool,
        public: bool,
    ) -> Result<(), ApiError> {
        if self.rules(room_id).await?.is_none() {
            return Err(ApiError::room_not_found());
        }
        if !admin && !self.may_send_state(room_id, user, "m.room.canonical_alias").await? {
            return Err(ApiError::forbidden("you may not change this room's visibility"));
        }
        let mut changes = ChangeSet::new();
        changes.directory.push((room_id.to_owned(), public));
        self.storage().apply(changes).await?;
        Ok(())
    }

    /// Publishes `room_id` in (or takes it out of) the room list of the network `network_id`
    /// of the application service `appservice_id`.
    pub(crate) async fn set_appservice_listed(
        &self,
        appservice_id: &str,
        network_id: &str,
        room_id: &str,
        public: bool,
    ) -> Result<(), ApiError> {
        if self.rules(room_id).await?.is_none() {
            return Err(ApiError::room_not_found());
        }
        let listing = AppserviceListing {
            appservice_id: appservice_id.to_owned(),
            network_id: network_id.to_owned(),
            room_id: room_id.to_owned(),
        };
        let mut changes = ChangeSet::new();
        changes.appservice_directory.push((listing, public));
        self.storage().apply(changes).await?;
        Ok(())
    }

    /// The rooms of the list `network`, sorted, each once.
    async fn listed_rooms(&self, network: &Network) -> Result<Vec<String>, ApiError> {
        let storage = self.storage();
        let rooms: BTreeSet<String> = match network {
            Network::Main => return Ok(storage.published_rooms().await?),
            Network::All => {
                let mut rooms: BTreeSet<String> =
                    storage.published_rooms().await?.into_iter().collect();
                rooms.extend(storage.appservice_listings().await?.into_iter().map(|l| l.room_id));
                rooms
            }
            Network::Instance { appservice_id, network_id } => storage
                .appservice_listings()
                .await?
                .into_iter()
                .filter(|l| l.appservice_id == *appservice_id && l.network_id == *network_id)
                .map(|l| l.room_id)
                .collect(),
        };
        Ok(rooms.into_iter().collect())
    }

    /// The published rooms of the list `network`, as `publicRooms` lists them (by member
    /// count, then id). Each room's entry is computed once per state snapshot and cached (the
    /// endpoint needs no authentication, so a loop of requests must not redo each room's
    /// state reads).
    pub(crate) async fn public_rooms(
        &self,
        search: Option<&str>,
        network: &Network,
    ) -> Result<Vec<Value>, ApiError> {
        let search = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let mut rooms = Vec::new();
        for room_id in self.listed_rooms(network).await? {
            let Some(info) = self.storage().room(&room_id).await? else { continue };
            let Some(snapshot) = info.current_state else { continue };
            let entry = self.cached_directory_entry(&room_id, snapshot).await?;
            if let Some(search) = &search {
                let hit = ["name", "topic", "canonical_alias"].iter().any(|key| {
                    entry[*key].as_str().is_some_and(|t| t.to_lowercase().contains(search))
                });
                if !hit {
                    continue;
                }
            }
            rooms.push(entry);
        }
        let joined = |e: &Value| e["num_joined_members"].as_u64().unwrap_or(0);
        rooms.sort_by(|a, b| {
            joined(b)
                .cmp(&joined(a))
                .then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
        });
        Ok(rooms.iter().map(|e| Value::clone(e)).collect())
    }

    /// A room's `publicRooms` entry at a state snapshot, from the cache when it was made at
    /// that snapshot.
    pub(super) async fn cached_directory_entry(
        &self,
        room_id: &str,
        snapshot: SnapshotId,
    ) -> Result<Arc<Value>, ApiError> {
        if let Some((at, entry)) = self.directory_entries.get(room_id)
            && at == snapshot
        {
            return Ok(entry);
        }
        let entry = Arc::new(self.directory_entry(room_id, snapshot).await?);
        self.directory_entries.insert(room_id.to_owned(), (snapshot, entry.clone()));
        Ok(entry)
    }

    /// A room's `publicRooms` entry at a state snapshot.
    async fn directory_entry(
        &self,
        room_id: &str,
        snapshot: SnapshotId,
    ) -> Result<Value, ApiError> {
        let text = |pdu: Option<Arc<matrix_core::Pdu>>, key: &str| {
            pdu.and_then(|p| p.content().get_str(key).map(str::to_owned))
        };
        let name = text(self.state_pdu(snapshot, "m.room.name", "").await?, "name");
        let topic = text(self.state_pdu(snapshot, "m.room.topic", "").await?, "topic");
        let alias = text(self.state_pdu(snapshot, "m.room.canonical_alias", "").await?, "alias");
        let avatar = text(self.state_pdu(snapshot, "m.room.avatar", "").await?, "url");
        let join_rule = text(self.state_pdu(snapshot, "m.room.join_rules", "").await?, "join_rule")
            .unwrap_or_else(|| "invite".to_owned());
        let history = text(
            self.state_pdu(snapshot, "m.room.history_visibility", "").await?,
            "history_visibility",
        );
        let guest =
            text(self.state_pdu(snapshot, "m.room.guest_access", "").await?, "guest_access");
        let room_type = text(self.state_pdu(snapshot, "m.room.create", "").await?, "type");
        let joined = self.member_summary(snapshot).await?.joined;
        let mut entry = json!({
            "room_id": room_id,
            "num_joined_members": joined,
            "world_readable": history.as_deref() == Some("world_readable"),
            "guest_can_join": guest.as_deref() == Some("can_join"),
            "join_rule": join_rule,
        });
        for (key, value) in [
            ("name", name),
            ("topic", topic),
            ("canonical_alias", alias),
            ("avatar_url", avatar),
            ("room_type", room_type),
        ] {
            if let Some(value) = value {
                entry[key] = json!(value);
            }
        }
        Ok(entry)
    }
}
