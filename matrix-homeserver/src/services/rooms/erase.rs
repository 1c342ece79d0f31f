//! Erasure (`POST /account/deactivate` with `erase: true`): the events of a user of ours who
//! asked for it are served redacted from then on, to every user and every server, with no
//! redaction event (as if pruned by the redaction algorithm of their room version). Clients
//! that already had them keep their copies; that is all the spec promises of erasure, and
//! serving no one the content is as much as a server can do. A mark in storage (account data
//! of the pseudo-owner `!erased`, of the user's id) says so, read once per user and cached:
//! an erasure is never undone. (A second process on the same storage sees an erasure once
//! its cached answer for that user is evicted.)

use super::Rooms;
use crate::error::ApiError;

/// The account-data owner of the marks.
const ERASED_OWNER: &str = "!erased";

impl Rooms {
    /// Whether `user` (any user: only ours can be erased) asked for their content to be erased.
    pub(crate) async fn is_erased(&self, user: &str) -> Result<bool, ApiError> {
        let ours =
            user.rsplit_once(':').is_some_and(|(_, server)| server == self.server_name().as_str());
        if !ours {
            return Ok(false);
        }
        if let Some(erased) = self.erased.get(user) {
            return Ok(erased);
        }
        let erased = self.storage().account_data(ERASED_OWNER, None, user).await?.is_some();
        self.erased.insert(user.to_owned(), erased);
        Ok(erased)
    }

    /// Marks `user` erased, durably, before it answers.
    pub(crate) async fn erase(&self, user: &str) -> Result<(), ApiError> {
        let mut changes = matrix_storage::ChangeSet::new();
        changes.account_data.push((ERASED_OWNER.to_owned(), None, user.to_owned(), b"{}".to_vec()));
        self.storage().apply(changes).await?;
        self.erased.insert(user.to_owned(), true);
        Ok(())
    }
}
