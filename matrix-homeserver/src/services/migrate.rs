//! Upgrades of what earlier releases stored.
//!
//! Releases up to the one with typed storage domains kept room aliases, the room directory,
//! redactions, profiles, forgotten rooms and media quotas as account data under reserved
//! owners (strings no user id can equal, as a user id starts with `@`), one owner per kind,
//! each item's type being its key and its content JSON (`null` for a deleted record). At
//! start the records still there move to their tables, each owner in one change set that
//! also deletes them, so the move is done once and a crash half-way repeats only what did
//! not commit.

use std::sync::Arc;

use matrix_storage::{Alias, ChangeSet, Profile, Storage};
use serde::Deserialize;

use crate::error::ApiError;

/// Room alias -> `{"room_id", "creator"}`.
const ALIASES: &str = "!aliases";
/// Room id -> `true`.
const DIRECTORY: &str = "!directory";
/// Redacted event id -> the redaction's event id.
const REDACTIONS: &str = "!redactions";
/// User id -> `{"displayname"?, "avatar_url"?}`.
const PROFILES: &str = "!profiles";
/// `"{user_id} {room_id}"` -> `true`.
const FORGOTTEN: &str = "!forgotten";
/// User id -> bytes uploaded.
const MEDIA_USAGE: &str = "!media_usage";

#[derive(Deserialize)]
struct OldAlias {
    room_id: String,
    creator: String,
}

#[derive(Deserialize)]
struct OldProfile {
    displayname: Option<String>,
    avatar_url: Option<String>,
}

/// What [`from_records`] moved, per kind, in the order of [`KINDS`].
pub(crate) type Moved = [usize; 6];

const KINDS: [&str; 6] = [ALIASES, DIRECTORY, REDACTIONS, PROFILES, FORGOTTEN, MEDIA_USAGE];

/// Moves the records of earlier releases to their tables; answers how many of each kind.
pub(crate) async fn from_records(storage: &Arc<dyn Storage>) -> Result<Moved, ApiError> {
    let mut moved = [0; 6];
    for (i, owner) in KINDS.into_iter().enumerate() {
        let items = storage.all_account_data(owner).await?;
        if items.is_empty() {
            continue;
        }
        let mut changes = ChangeSet::new();
        for item in items {
            let key = item.kind;
            let content: serde_json::Value = serde_json::from_slice(&item.content)
                .map_err(|e| corrupt(owner, &key, &e.to_string()))?;
            if !content.is_null() {
                add(&mut changes, owner, &key, content)?;
                moved[i] += 1;
            }
            changes.deleted_account_data.push((owner.to_owned(), item.room_id, key));
        }
        storage.apply(changes).await?;
    }
    Ok(moved)
}

fn corrupt(owner: &str, key: &str, why: &str) -> ApiError {
    ApiError::unknown(format!(
        "a stored record of an earlier release ({owner} {key}) does not read: {why}"
    ))
}

fn add(
    changes: &mut ChangeSet,
    owner: &str,
    key: &str,
    content: serde_json::Value,
) -> Result<(), ApiError> {
    let parse_error = |e: serde_json::Error| corrupt(owner, key, &e.to_string());
    match owner {
        ALIASES => {
            let old: OldAlias = serde_json::from_value(content).map_err(parse_error)?;
            changes.aliases.push(Alias {
                alias: key.to_owned(),
                room_id: old.room_id,
                creator: old.creator,
            });
        }
        DIRECTORY => changes.directory.push((key.to_owned(), content == true)),
        REDACTIONS => {
            let redaction: String = serde_json::from_value(content).map_err(parse_error)?;
            changes.redactions.push((key.to_owned(), redaction));
        }
        PROFILES => {
            let old: OldProfile = serde_json::from_value(content).map_err(parse_error)?;
            let profile = Profile { displayname: old.displayname, avatar_url: old.avatar_url };
            changes.profiles.push((key.to_owned(), profile));
        }
        FORGOTTEN => {
            let (user, room) =
                key.split_once(' ').ok_or_else(|| corrupt(owner, key, "not \"user room\""))?;
            changes.forgotten.push((user.to_owned(), room.to_owned(), content == true));
        }
        _ => {
            let bytes: u64 = serde_json::from_value(content).map_err(parse_error)?;
            changes.media_usage.push((key.to_owned(), bytes));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use matrix_storage::memory::MemoryStore;

    fn old(owner: &str, key: &str, json: &str) -> (String, Option<String>, String, Vec<u8>) {
        (owner.to_owned(), None, key.to_owned(), json.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn records_move_to_their_tables_once() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStore::new());
        let mut changes = ChangeSet::new();
        changes.account_data = vec![
            old(ALIASES, "#a:x", r#"{"room_id":"!r:x","creator":"@a:x"}"#),
            old(ALIASES, "#gone:x", "null"),
            old(DIRECTORY, "!r:x", "true"),
            old(REDACTIONS, "$victim", r#""$redaction""#),
            old(PROFILES, "@a:x", r#"{"displayname":"Alice"}"#),
            old(FORGOTTEN, "@a:x !old:x", "true"),
            old(MEDIA_USAGE, "@a:x", "1234"),
            old("@a:x", "m.push_rules", "{}"),
        ];
        storage.apply(changes).await.expect("applies");
        let moved = from_records(&storage).await.expect("migrates");
        assert_eq!(moved, [1, 1, 1, 1, 1, 1]);
        let alias = storage.alias("#a:x").await.expect("reads").expect("moved");
        assert_eq!((alias.room_id.as_str(), alias.creator.as_str()), ("!r:x", "@a:x"));
        assert_eq!(storage.alias("#gone:x").await.expect("reads"), None);
        assert!(storage.published("!r:x").await.expect("reads"));
        assert_eq!(
            storage.redaction_of("$victim").await.expect("reads").as_deref(),
            Some("$redaction")
        );
        let profile = storage.profile("@a:x").await.expect("reads").expect("moved");
        assert_eq!((profile.displayname.as_deref(), profile.avatar_url), (Some("Alice"), None));
        assert!(storage.forgotten("!old:x", "@a:x").await.expect("reads"));
        assert_eq!(storage.media_usage("@a:x").await.expect("reads"), 1234);
        for owner in KINDS {
            assert!(storage.all_account_data(owner).await.expect("reads").is_empty(), "{owner}");
        }
        assert_eq!(
            storage.all_account_data("@a:x").await.expect("reads").len(),
            1,
            "users' own data stays"
        );
        assert_eq!(from_records(&storage).await.expect("runs again"), [0; 6], "once");
    }

    #[tokio::test]
    async fn a_corrupt_record_is_an_error_naming_it() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStore::new());
        let mut changes = ChangeSet::new();
        changes.account_data = vec![old(ALIASES, "#a:x", r#"{"room":1}"#)];
        storage.apply(changes).await.expect("applies");
        let error = from_records(&storage).await.expect_err("refused");
        assert!(format!("{error:?}").contains("#a:x"), "{error:?}");
        assert!(storage.alias("#a:x").await.expect("reads").is_none());
    }
}
