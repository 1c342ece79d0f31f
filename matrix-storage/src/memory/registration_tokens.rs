//! Registration tokens in memory.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::MemoryStore;
use crate::{ChangeSet, RegistrationToken, RegistrationTokenStore, Result};

/// Token -> record.
#[derive(Debug, Default)]
pub(super) struct RegistrationTokens(BTreeMap<String, RegistrationToken>);

impl RegistrationTokens {
    /// Applies the change set's part (after it is validated as a whole).
    pub(super) fn apply(&mut self, changes: &mut ChangeSet) {
        for token in changes.registration_tokens.drain(..) {
            self.0.insert(token.token.clone(), token);
        }
        for token in changes.deleted_registration_tokens.drain(..) {
            self.0.remove(&token);
        }
    }
}

#[async_trait]
impl RegistrationTokenStore for MemoryStore {
    async fn registration_token(&self, token: &str) -> Result<Option<RegistrationToken>> {
        Ok(self.lock()?.registration_tokens.0.get(token).cloned())
    }

    async fn registration_tokens(&self) -> Result<Vec<RegistrationToken>> {
        Ok(self.lock()?.registration_tokens.0.values().cloned().collect())
    }
}
