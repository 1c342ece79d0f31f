//! Small keyed records the storage traits have no domain for yet: room aliases, the room
//! directory, redactions, profiles and forgotten rooms.
//!
//! They are kept in the account-data store (atomic, durable, on every backend) under
//! reserved owners that no user id can equal (a user id starts with `@`), one owner per kind
//! of record so that listing one kind reads nothing else. This module is the only one that
//! knows that; when the storage gains these domains, only it changes.

use std::sync::Arc;

use matrix_storage::{ChangeSet, Storage};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A kind of record: the reserved owner it is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Table(&'static str);

/// Room alias -> [`AliasRecord`].
pub(crate) const ALIASES: Table = Table("!aliases");
/// Room id -> `true` for rooms published in the local room directory.
pub(crate) const DIRECTORY: Table = Table("!directory");
/// Redacted event id -> the id of the redaction that redacted it.
pub(crate) const REDACTIONS: Table = Table("!redactions");
/// User id -> [`Profile`].
pub(crate) const PROFILES: Table = Table("!profiles");
/// `user_id room_id` -> `true` for rooms a user forgot.
pub(crate) const FORGOTTEN: Table = Table("!forgotten");
/// User id -> the bytes of media the user has uploaded (for the quota).
pub(crate) const MEDIA_USAGE: Table = Table("!media_usage");

/// Where an alias points, and who made it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AliasRecord {
    pub(crate) room_id: String,
    pub(crate) creator: String,
}

/// A user's global profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Profile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) displayname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) avatar_url: Option<String>,
}

/// Reads and writes records.
#[derive(Clone)]
pub(crate) struct Records {
    storage: Arc<dyn Storage>,
}

impl Records {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> Self {
        Records { storage }
    }

    /// The record at `key`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.storage.account_data(table.0, None, key).await? {
            Some(bytes) => serde_json::from_slice::<Option<T>>(&bytes)
                .map_err(|e| ApiError::unknown(format!("a stored record does not parse: {e}"))),
            None => Ok(None),
        }
    }

    /// Every record of a table, with its key.
    pub(crate) async fn all<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, T)>, ApiError> {
        let items = self.storage.all_account_data(table.0).await?;
        Ok(items
            .into_iter()
            .filter_map(|item| {
                let value = serde_json::from_slice::<Option<T>>(&item.content).ok()??;
                Some((item.kind, value))
            })
            .collect())
    }

    /// Adds setting `key` to `value` to a change set (`None` deletes: stored as JSON `null`,
    /// which reads back as absent).
    pub(crate) fn set<T: Serialize>(
        changes: &mut ChangeSet,
        table: Table,
        key: &str,
        value: Option<&T>,
    ) {
        let bytes = match value {
            Some(value) => serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()),
            None => b"null".to_vec(),
        };
        changes.account_data.push((table.0.to_owned(), None, key.to_owned(), bytes));
    }

    /// Sets one record durably.
    pub(crate) async fn put<T: Serialize>(
        &self,
        table: Table,
        key: &str,
        value: Option<&T>,
    ) -> Result<(), ApiError> {
        let mut changes = ChangeSet::new();
        Self::set(&mut changes, table, key, value);
        self.storage.apply(changes).await?;
        Ok(())
    }
}
