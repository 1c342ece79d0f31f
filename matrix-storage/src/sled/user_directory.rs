//! The user directory: its part of a change set ([`apply_in`]) and its reads. Tables added
//! after schema 3 without a new number: a store written before has an empty directory.
//!
//! One record per user, keyed by the user id: the display name and the avatar URL. One
//! empty record per room whose join rule is `public`, keyed by the room id.

use async_trait::async_trait;

use super::batch::Tx;
use super::{PUBLIC_JOIN_ROOM, SledStore, USER_DIRECTORY};
use crate::codec::{Dec, Enc};
use crate::{ChangeSet, DirectoryUser, ErrorKind, Result, StorageError, UserDirectoryStore};

fn key(user: &str) -> Vec<u8> {
    Enc::table(USER_DIRECTORY).tail(user).done()
}

fn room_key(room: &str) -> Vec<u8> {
    Enc::table(PUBLIC_JOIN_ROOM).tail(room).done()
}

/// The id after a key's table byte (keys sort by it: see [`Enc::tail`]).
fn tail(key: &[u8]) -> Result<String> {
    Dec::new(key).skip_table().and_then(|mut d| d.tail())
}

fn encode(user: &DirectoryUser) -> Vec<u8> {
    Enc::default().opt_str(user.displayname.as_deref()).opt_str(user.avatar_url.as_deref()).done()
}

fn corrupt(what: &str) -> impl Fn(StorageError) -> StorageError + '_ {
    move |error| {
        StorageError::with_source(ErrorKind::Corrupt, format!("{what} does not decode"), error)
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<DirectoryUser> {
    let user_id = tail(key).map_err(corrupt("a user directory key"))?;
    let mut dec = Dec::new(value);
    let mut read = || Ok((dec.opt_str()?, dec.opt_str()?));
    let (displayname, avatar_url) = read().map_err(corrupt("a user directory entry"))?;
    Ok(DirectoryUser { user_id, displayname, avatar_url })
}

/// Writes the change set's user directory entries and public rooms.
pub(super) fn apply_in(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    for user in &changes.directory_users {
        tx.insert(key(&user.user_id), encode(user))?;
    }
    for user in &changes.deleted_directory_users {
        tx.remove(key(user))?;
    }
    for (room, public) in &changes.public_join_rules {
        if *public {
            tx.insert(room_key(room), Vec::new())?;
        } else {
            tx.remove(room_key(room))?;
        }
    }
    Ok(())
}

#[async_trait]
impl UserDirectoryStore for SledStore {
    async fn search_user_directory(&self, term: &str, limit: usize) -> Result<Vec<DirectoryUser>> {
        self.flusher.check()?;
        let mut out = Vec::new();
        for entry in self.scan(Enc::table(USER_DIRECTORY).done()) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let user = decode(&key, &value)?;
            if user.matches(term) {
                out.push(user);
            }
        }
        Ok(out)
    }

    async fn public_join_rooms(&self) -> Result<Vec<String>> {
        self.flusher.check()?;
        let mut out = Vec::new();
        for entry in self.scan(Enc::table(PUBLIC_JOIN_ROOM).done()) {
            let (key, _) = entry?;
            let room = tail(&key).map_err(corrupt("a public room key"))?;
            out.push(room);
        }
        Ok(out)
    }
}
