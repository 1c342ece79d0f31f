//! Administrators' decisions about users, and their tokens acting as users, in memory.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::MemoryStore;
use crate::{ChangeSet, ModerationStore, PuppetToken, Result, UserModeration};

/// User -> record; token hash -> token.
#[derive(Debug, Default)]
pub(super) struct Moderation {
    users: BTreeMap<String, UserModeration>,
    tokens: BTreeMap<String, PuppetToken>,
}

impl Moderation {
    /// Applies the change set's part (after it is validated as a whole).
    pub(super) fn apply(&mut self, changes: &mut ChangeSet) {
        for record in changes.user_moderation.drain(..) {
            if record.is_empty() {
                self.users.remove(&record.user_id);
            } else {
                self.users.insert(record.user_id.clone(), record);
            }
        }
        for token in changes.puppet_tokens.drain(..) {
            self.tokens.insert(token.token_hash.clone(), token);
        }
        for token in changes.deleted_puppet_tokens.drain(..) {
            self.tokens.remove(&token);
        }
    }
}

#[async_trait]
impl ModerationStore for MemoryStore {
    async fn user_moderation(&self, user_id: &str) -> Result<Option<UserModeration>> {
        Ok(self.lock()?.moderation.users.get(user_id).cloned())
    }

    async fn puppet_token(&self, token_hash: &str) -> Result<Option<PuppetToken>> {
        Ok(self.lock()?.moderation.tokens.get(token_hash).cloned())
    }
}
