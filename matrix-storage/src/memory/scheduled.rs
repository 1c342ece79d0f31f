//! OpenID tokens and delayed events in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;

use super::MemoryStore;
use crate::{ChangeSet, DelayedEvent, DelayedEventStore, OpenIdStore, OpenIdToken, Result};

/// The tables of this domain.
#[derive(Debug, Default)]
pub(super) struct Scheduled {
    /// Token hash -> owner.
    openid: HashMap<String, OpenIdToken>,
    /// (user, delay id) -> event.
    delayed: BTreeMap<(String, String), DelayedEvent>,
    /// (send time, user, delay id): the order they are due in.
    due: BTreeSet<(u64, String, String)>,
}

impl Scheduled {
    /// Applies the change set's part (after it is validated as a whole).
    pub(super) fn apply(&mut self, changes: &mut ChangeSet) {
        for (hash, token) in changes.openid_tokens.drain(..) {
            self.openid.insert(hash, token);
        }
        for hash in changes.deleted_openid_tokens.drain(..) {
            self.openid.remove(&hash);
        }
        for event in changes.delayed_events.drain(..) {
            let key = (event.user_id.clone(), event.delay_id.clone());
            if let Some(old) = self.delayed.remove(&key) {
                self.due.remove(&(old.send_ts(), key.0.clone(), key.1.clone()));
            }
            self.due.insert((event.send_ts(), key.0.clone(), key.1.clone()));
            self.delayed.insert(key, event);
        }
        for key in changes.deleted_delayed_events.drain(..) {
            if let Some(old) = self.delayed.remove(&key) {
                self.due.remove(&(old.send_ts(), key.0, key.1));
            }
        }
    }
}

#[async_trait]
impl OpenIdStore for MemoryStore {
    async fn openid_token(&self, token_hash: &str) -> Result<Option<OpenIdToken>> {
        Ok(self.lock()?.scheduled.openid.get(token_hash).cloned())
    }

    async fn expired_openid_tokens(&self, now_ts: u64, limit: usize) -> Result<Vec<String>> {
        let inner = self.lock()?;
        let mut expired: Vec<String> = inner
            .scheduled
            .openid
            .iter()
            .filter(|(_, t)| t.expires_ts <= now_ts)
            .map(|(h, _)| h.clone())
            .collect();
        expired.sort();
        expired.truncate(limit);
        Ok(expired)
    }
}

#[async_trait]
impl DelayedEventStore for MemoryStore {
    async fn delayed_event(&self, user_id: &str, delay_id: &str) -> Result<Option<DelayedEvent>> {
        let inner = self.lock()?;
        Ok(inner.scheduled.delayed.get(&(user_id.to_owned(), delay_id.to_owned())).cloned())
    }

    async fn delayed_events_of(&self, user_id: &str) -> Result<Vec<DelayedEvent>> {
        let inner = self.lock()?;
        let mut events: Vec<DelayedEvent> = inner
            .scheduled
            .delayed
            .range((user_id.to_owned(), String::new())..)
            .take_while(|((user, _), _)| user == user_id)
            .map(|(_, e)| e.clone())
            .collect();
        events.sort_by(|a, b| (a.send_ts(), &a.delay_id).cmp(&(b.send_ts(), &b.delay_id)));
        Ok(events)
    }

    async fn next_delayed_events(&self, limit: usize) -> Result<Vec<DelayedEvent>> {
        let inner = self.lock()?;
        let scheduled = &inner.scheduled;
        Ok(scheduled
            .due
            .iter()
            .take(limit)
            .filter_map(|(_, user, id)| scheduled.delayed.get(&(user.clone(), id.clone())))
            .cloned()
            .collect())
    }
}
