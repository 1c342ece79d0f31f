//! Notifications: each timeline event this server appends or receives is evaluated against
//! the push rules of the room's local members (matrix-core's evaluator, the spec's default
//! rules until a user changes theirs), and every outcome that notifies is stored
//! ([`matrix_storage::Notification`]). Unread counts (`/sync`), `/notifications` and the
//! push sender all read these, so counts survive restarts and are the same in every process.
//!
//! Who is evaluated: local users joined to the room, and the local target of an invite; never
//! the sender, never a stranger. Events other processes append are evaluated by them.
//!
//! The notifications of an event are stored in a change set of their own, right after the
//! event is durable and before anyone is woken for it (a crash between the two loses the
//! notifications of that one event, not the event).

use matrix_core::Pdu;
use matrix_core::push::{PushContext, evaluate};
use matrix_storage::{
    ChangeSet, Notification, ReadUpTo, Storage, StoredReceipt, StreamPos, UnreadCounts,
};
use ruma::push::Ruleset;

use super::Rooms;
use crate::error::ApiError;

/// The account data type push rules are kept under.
pub(crate) const PUSH_RULES: &str = "m.push_rules";

/// A user's rule set: what they saved, else the spec's defaults.
pub(crate) async fn rules_of(
    storage: &dyn Storage,
    user: &ruma::UserId,
) -> Result<Ruleset, ApiError> {
    let stored = storage.account_data(user.as_str(), None, PUSH_RULES).await?;
    let Some(bytes) = stored else { return Ok(Ruleset::server_default(user)) };
    #[derive(serde::Deserialize)]
    struct Stored {
        global: Ruleset,
    }
    serde_json::from_slice::<Stored>(&bytes)
        .map(|s| s.global)
        .map_err(|_| ApiError::unknown("the stored push rules do not parse"))
}

/// The `m.push_rules` account data event of a user who never changed their rules (the
/// spec's defaults), which every initial sync carries as Synapse's does: clients read their
/// push rules from it. `None` when the user saved rules (those are ordinary account data).
pub(crate) async fn default_push_rules_event(
    storage: &dyn Storage,
    user: &ruma::UserId,
) -> Result<Option<serde_json::Value>, ApiError> {
    if storage.account_data(user.as_str(), None, PUSH_RULES).await?.is_some() {
        return Ok(None);
    }
    let rules = serde_json::to_value(Ruleset::server_default(user))
        .map_err(|e| ApiError::unknown(e.to_string()))?;
    Ok(Some(serde_json::json!({"type": PUSH_RULES, "content": {"global": rules}})))
}

/// The thread an event is in: the root named by an `m.thread` relation.
fn thread_of(pdu: &Pdu) -> Option<String> {
    let relation = pdu.content().get_object("m.relates_to")?;
    (relation.get_str("rel_type") == Some("m.thread"))
        .then(|| relation.get_str("event_id").map(str::to_owned))
        .flatten()
}

impl Rooms {
    /// Evaluates a timeline event at `pos` for the room's local members and stores what
    /// notifies them; a failure is logged (the event stands).
    pub(crate) async fn notify(&self, pdu: &Pdu, pos: StreamPos) {
        if let Err(error) = self.notify_members(pdu, pos).await {
            tracing::warn!("could not evaluate push rules for {}: {error:?}", pdu.event_id());
        }
    }

    async fn notify_members(&self, pdu: &Pdu, pos: StreamPos) -> Result<(), ApiError> {
        let room_id = pdu.room_id();
        let members = self.storage.members(room_id).await?;
        let suffix = format!(":{}", self.server_name());
        let invited = (pdu.kind() == "m.room.member"
            && pdu.content().get_str("membership") == Some("invite"))
        .then(|| pdu.state_key())
        .flatten();
        let member_count = members.iter().filter(|(_, m)| m == "join").count() as u64;
        let users: Vec<&str> = members
            .iter()
            .filter(|(user, m)| m == "join" || Some(user.as_str()) == invited)
            .map(|(user, _)| user.as_str())
            .filter(|user| user.ends_with(&suffix) && *user != pdu.sender())
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        let Some(info) = self.storage.room(room_id).await? else { return Ok(()) };
        let Some(snapshot) = info.current_state else { return Ok(()) };
        let levels = self.state_pdu(snapshot, "m.room.power_levels", "").await?;
        let create = self.state_pdu(snapshot, "m.room.create", "").await?;
        let sender_level = matrix_core::auth::user_power_level(
            pdu.rules(),
            levels.as_deref(),
            create.as_deref(),
            pdu.sender(),
        );
        let notification_levels =
            levels.as_ref().and_then(|l| l.content().get_object("notifications"));
        let thread_id = thread_of(pdu);
        let ts = u64::try_from(super::now_ms()).unwrap_or(0);
        let mut changes = ChangeSet::new();
        for user in users {
            let Ok(user_id) = ruma::UserId::parse(user) else { continue };
            let rules = rules_of(self.storage.as_ref(), &user_id).await?;
            let member = self.state_pdu(snapshot, "m.room.member", user).await?;
            let display_name = member.as_ref().and_then(|m| m.content().get_str("displayname"));
            let ctx = PushContext {
                room_id,
                user_id: user,
                display_name,
                member_count,
                sender_power_level: i64::try_from(sender_level).unwrap_or(i64::MAX),
                notification_levels,
            };
            let Some(outcome) = evaluate(&rules, pdu.json(), &ctx) else { continue };
            if !outcome.notifies() {
                continue;
            }
            changes.notifications.push(Notification {
                user_id: user.to_owned(),
                pos,
                room_id: room_id.to_owned(),
                event_id: pdu.event_id().to_owned(),
                thread_id: thread_id.clone(),
                highlight: outcome.highlights(),
                actions: serde_json::to_vec(outcome.actions)
                    .map_err(|e| ApiError::unknown(e.to_string()))?,
                ts,
            });
        }
        if changes.notifications.is_empty() {
            return Ok(());
        }
        self.storage.apply(changes).await?;
        self.push_wake.notify_one();
        Ok(())
    }

    /// A user's unread counts in a room: their notifications after their read receipts
    /// (see [`read_up_to`]).
    pub(crate) async fn unread(
        &self,
        room_id: &str,
        user: &ruma::UserId,
    ) -> Result<UnreadCounts, ApiError> {
        let receipts = self.storage.user_receipts(room_id, user.as_str()).await?;
        let read = read_up_to(&receipts);
        Ok(self.storage.unread_counts(user.as_str(), room_id, &read).await?)
    }
}

/// Where a user's receipts in a room read up to: `m.read` and `m.read.private` receipts; an
/// unthreaded receipt reads every thread, a `main` one the main timeline, a threaded one its
/// thread.
pub(crate) fn read_up_to(receipts: &[StoredReceipt]) -> ReadUpTo {
    let mut unthreaded = StreamPos(0);
    let mut read = ReadUpTo::default();
    for r in receipts.iter().map(|r| &r.receipt) {
        if !matches!(r.key.kind.as_str(), "m.read" | "m.read.private") {
            continue;
        }
        let at = r.event_pos;
        match r.key.thread.as_deref() {
            None => unthreaded = unthreaded.max(at),
            Some("main") => read.main = read.main.max(at),
            Some(thread) => {
                let entry = read.threads.entry(thread.to_owned()).or_default();
                *entry = (*entry).max(at);
            }
        }
    }
    read.main = read.main.max(unthreaded);
    read.other_threads = unthreaded;
    for pos in read.threads.values_mut() {
        *pos = (*pos).max(unthreaded);
    }
    read
}
