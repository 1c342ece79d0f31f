//! The administrators' lists of users and rooms, a page at a time.
//!
//! The `USER` and `ROOM` tables are keyed by length-prefixed ids, which sort by length before
//! bytes: a page in byte order is found by one scan of the table that keeps the `limit`
//! smallest ids above the cursor (memory bounded by the page, time by the table).

use std::collections::BTreeSet;

use super::records::decode_user;
use super::{ROOM, SledStore, USER, unavailable};
use crate::codec::{Dec, Enc};
use crate::{Result, User};

/// The ids of `table` (keyed by one string) above `after`, sorted, at most `limit`.
pub(super) fn page(
    store: &SledStore,
    table: u8,
    after: &str,
    limit: usize,
) -> Result<BTreeSet<String>> {
    let mut page = BTreeSet::new();
    if limit == 0 {
        return Ok(page);
    }
    for entry in store.tree.scan_prefix([table]) {
        let (key, _) = entry.map_err(unavailable)?;
        let id = Dec::new(&key).skip_table()?.str()?;
        if id.as_str() <= after {
            continue;
        }
        if page.len() == limit {
            if page.last().is_some_and(|last| *last < id) {
                continue;
            }
            page.pop_last();
        }
        page.insert(id);
    }
    Ok(page)
}

/// [`crate::AccountStore::users`].
pub(super) fn users(store: &SledStore, after: &str, limit: usize) -> Result<Vec<User>> {
    let mut users = Vec::new();
    for id in page(store, USER, after, limit)? {
        // A user deleted between the scan and this read is left out.
        if let Some(value) = store.get(&Enc::table(USER).str(&id).done())? {
            users.push(decode_user(&id, &value)?);
        }
    }
    Ok(users)
}

/// [`crate::RoomStore::room_ids`].
pub(super) fn room_ids(store: &SledStore, after: &str, limit: usize) -> Result<Vec<String>> {
    Ok(page(store, ROOM, after, limit)?.into_iter().collect())
}
