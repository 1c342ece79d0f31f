//! Which users' presence changed since a sync token: a bounded log of changes numbered by the
//! typing counter (so one counter of the sync token covers both). The presence itself is
//! kept by `services/presence.rs` (live) and in storage (saved); this is only the "since".

use super::Ephemeral;

/// How many presence changes are remembered; a sync token older than the oldest one gets the
/// presence of every user it concerns instead of the changes.
pub(crate) const PRESENCE_CHANGES_KEPT: usize = 10_000;

impl Ephemeral {
    /// Notes that `user`'s presence changed, and wakes the syncs of `user` and of the users
    /// sharing a room with them.
    pub(crate) async fn presence_changed(&self, user: &str) {
        {
            let mut inner = self.lock();
            inner.counter += 1;
            let counter = inner.counter;
            inner.presence_log.push_back((counter, user.to_owned()));
            while inner.presence_log.len() > PRESENCE_CHANGES_KEPT {
                if let Some((dropped, _)) = inner.presence_log.pop_front() {
                    inner.presence_floor = dropped;
                }
            }
        }
        self.note_for_appservices(&crate::services::appservice::transactions::Note::Presence(
            user.to_owned(),
        ));
        self.wake_sharing(user).await;
    }

    /// The users whose presence changed after the counter `since`, sorted, each once; `None`
    /// when changes since then may have been forgotten (a token from before this process
    /// started, or older than the log): the caller then lists everybody's presence.
    pub(crate) fn presence_since(&self, since: u64) -> Option<Vec<String>> {
        let inner = self.lock();
        if since < inner.presence_floor {
            return None;
        }
        let mut users: Vec<String> = inner
            .presence_log
            .iter()
            .rev()
            .take_while(|(counter, _)| *counter > since)
            .map(|(_, user)| user.clone())
            .collect();
        users.sort();
        users.dedup();
        Some(users)
    }
}
