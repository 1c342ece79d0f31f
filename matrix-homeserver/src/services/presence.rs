//! Presence: whether users are `online`, `unavailable` (idle) or `offline`, with a status
//! message and when they were last active; shown to the users who share a joined room with
//! them (and to themselves), and sent to the servers in those rooms.
//!
//! **Our users.** Each device that syncs (with `set_presence` `online`, the default, or
//! `unavailable`) or sets its presence counts with that state; a user's state is the highest
//! of their devices' (`online` over `unavailable` over `offline`), as Synapse combines them.
//! A sync with `set_presence=online`, a sent event and a presence set to `online` are
//! activity. One timer task (not one per user) looks at the users with live devices every
//! `tick`: a device with no activity for `idle_timeout_ms` becomes `unavailable`; a device
//! that has not synced (nor been active) for `offline_timeout_ms` and has no sync running no
//! longer counts; a user with no device left is `offline`. `currently_active` is true while
//! the last activity is younger than `active_window_ms`.
//!
//! **What is saved.** A change worth telling (Synapse's rule: the state, the status message,
//! `currently_active` of an online user, or a last-active time that moved by more than the
//! active window while not currently active) is saved in storage before anybody is told,
//! and a presence set through the API is saved before its 200. Between such changes the
//! last-active time moves in memory only: at most a few writes per user per active window,
//! and after a restart the saved time is at most that old. At start, users saved as not
//! offline are timed out like a device that stopped syncing (ours) or like a server that went
//! quiet (others').
//!
//! **Other servers.** A change of one of our users goes, as an `m.presence` EDU, to every
//! server with a joined member in a room the user has joined (in memory, like typing: it is
//! not worth a durable queue; the state itself is saved), and again every
//! [`FEDERATION_PING_MS`] while the user is not offline so that those servers do not time
//! it out. Received updates are taken only for users of the sending server who share a
//! room with one of ours whose ACL allows that server (see `federation/edus.rs`), and time
//! out to `offline` after [`REMOTE_TIMEOUT_MS`] without news.
//!
//! Syncs learn what changed since their token from the log in [`Ephemeral`].
//!
//! Not yet: a join does not send the joiner the presence of the room's members, nor them (or
//! their servers) the joiner's; each learns the other's at its next change (or ping).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use matrix_core::{Object, Value as CoreValue};
use matrix_storage::{ChangeSet, Presence, PresenceState, Storage};
use serde_json::{Map, Value, json};

use super::ephemeral::Ephemeral;
use super::rooms::{EventFilter, Rooms};
use crate::config::PresenceConfig;
use crate::error::ApiError;

/// How long a remote user's presence lasts without news from their server (servers send it
/// again every 25 minutes; Synapse's `FEDERATION_TIMEOUT`).
pub(crate) const REMOTE_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// How often our users' presence is sent again to the servers sharing a room with them
/// (Synapse's `FEDERATION_PING_INTERVAL`).
pub(crate) const FEDERATION_PING_MS: u64 = 25 * 60 * 1000;
/// The most users one `m.presence` EDU we send names (more go in several EDUs), and the most
/// entries of a received one that are looked at (the rest are dropped).
pub(crate) const MAX_PUSH: usize = 100;

/// The time now, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn rank(state: PresenceState) -> u8 {
    match state {
        PresenceState::Online => 2,
        PresenceState::Unavailable => 1,
        PresenceState::Offline => 0,
    }
}

/// Presence nobody set: offline, never active.
fn offline() -> Presence {
    Presence {
        state: PresenceState::Offline,
        status_msg: None,
        last_active_ts: 0,
        currently_active: false,
    }
}

/// Whether going from `old` to `new` is worth telling (Synapse's `should_notify`).
fn worth_telling(old: &Presence, new: &Presence, window: u64) -> bool {
    if old.status_msg != new.status_msg || old.state != new.state {
        return true;
    }
    let bumped = new.last_active_ts.saturating_sub(old.last_active_ts) > window;
    if old.state == PresenceState::Online {
        new.currently_active != old.currently_active || (bumped && !new.currently_active)
    } else {
        bumped
    }
}

/// One device of one of our users.
#[derive(Debug, Clone)]
struct Device {
    state: PresenceState,
    last_active: u64,
    last_sync: u64,
    /// Syncs of the device running now.
    syncs: usize,
}

/// One of our users with devices that count.
#[derive(Debug)]
struct Local {
    /// The presence now (its last-active time live, the rest as last told).
    presence: Presence,
    devices: HashMap<String, Device>,
    /// When the presence was last sent to other servers.
    last_federated: u64,
}

impl Local {
    /// Recomputes the user's presence from the devices at `now`, with `status_msg` if given;
    /// answers whether the change is worth telling.
    fn recompute(
        &mut self,
        now: u64,
        status_msg: Option<Option<String>>,
        config: &PresenceConfig,
    ) -> bool {
        let state = self
            .devices
            .values()
            .map(|d| d.state)
            .max_by_key(|s| rank(*s))
            .unwrap_or(PresenceState::Offline);
        let mut new = self.presence.clone();
        new.state = state;
        if let Some(status_msg) = status_msg {
            new.status_msg = status_msg;
        }
        new.currently_active = state == PresenceState::Online
            && now.saturating_sub(new.last_active_ts) < config.active_window_ms;
        let tell = worth_telling(&self.presence, &new, config.active_window_ms);
        self.presence = new;
        tell
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Our users with devices that count (or whose offline is yet to be saved).
    local: HashMap<String, Local>,
    /// Other servers' users who are not offline -> when their server last told us.
    remote: HashMap<String, u64>,
    /// Our users whose change worth telling could not be saved (storage failed): saved and
    /// told at the next tick.
    unsaved: BTreeSet<String>,
}

/// What a client asks of a sync for presence (`set_presence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SetPresence {
    /// Marked online (the default).
    #[default]
    Online,
    /// Marked idle.
    Unavailable,
    /// Not marked at all.
    Offline,
}

impl SetPresence {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "online" => Some(SetPresence::Online),
            "unavailable" => Some(SetPresence::Unavailable),
            "offline" => Some(SetPresence::Offline),
            _ => None,
        }
    }
}

/// The presence of our users and the timers that move it.
pub(crate) struct PresenceTracker {
    config: PresenceConfig,
    storage: Arc<dyn Storage>,
    ephemeral: Arc<Ephemeral>,
    rooms: Arc<Rooms>,
    inner: Mutex<Inner>,
    /// Serialises saving, so that the last saved of a user is their latest presence.
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for PresenceTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceTracker").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A running sync's place in its device's presence: dropping it (the sync answered or was
/// abandoned) notes when the device last synced.
pub(crate) struct SyncGuard<'a> {
    tracker: Option<(&'a PresenceTracker, String, String)>,
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        if let Some((tracker, user, device)) = self.tracker.take() {
            let now = now_ms();
            let mut inner = tracker.lock();
            if let Some(d) = inner.local.get_mut(&user).and_then(|l| l.devices.get_mut(&device)) {
                d.syncs = d.syncs.saturating_sub(1);
                d.last_sync = now;
            }
        }
    }
}

impl PresenceTracker {
    /// The tracker, with the users saved as not offline loaded to be timed out, and its
    /// timer task started (when presence is enabled). The task ends when the tracker is
    /// dropped.
    pub(crate) async fn start(
        config: &PresenceConfig,
        storage: Arc<dyn Storage>,
        ephemeral: Arc<Ephemeral>,
        rooms: Arc<Rooms>,
    ) -> Result<Arc<Self>, matrix_storage::StorageError> {
        let tracker = Arc::new(PresenceTracker {
            config: config.clone(),
            storage,
            ephemeral,
            rooms,
            inner: Mutex::new(Inner::default()),
            writes: tokio::sync::Mutex::new(()),
        });
        if !config.enabled {
            return Ok(tracker);
        }
        let now = now_ms();
        {
            let present = tracker.storage.present_users().await?;
            let mut inner = tracker.lock();
            for (user, presence) in present {
                if tracker.is_ours(&user) {
                    // As a device that just stopped syncing: it counts until the offline
                    // timeout, and a client that comes back takes over.
                    let device = Device {
                        state: presence.state,
                        last_active: presence.last_active_ts,
                        last_sync: now,
                        syncs: 0,
                    };
                    let devices = HashMap::from([(String::new(), device)]);
                    inner.local.insert(user, Local { presence, devices, last_federated: now });
                } else {
                    inner.remote.insert(user, now);
                }
            }
        }
        let tick = [config.idle_timeout_ms, config.offline_timeout_ms, config.active_window_ms]
            .into_iter()
            .min()
            .unwrap_or(1000)
            / 4;
        let tick = Duration::from_millis(tick.clamp(50, 5000));
        let weak = Arc::downgrade(&tracker);
        tokio::spawn(run_timers(weak, tick));
        Ok(tracker)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain maps of numbers; a panic elsewhere leaves them usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether presence is on.
    pub(crate) fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn is_ours(&self, user: &str) -> bool {
        user.split_once(':').is_some_and(|(_, server)| server == self.rooms.server_name().as_str())
    }

    /// The longest status message accepted.
    pub(crate) fn max_status_msg_bytes(&self) -> usize {
        self.config.max_status_msg_bytes
    }

    /// Changes one of our users' device at `now` with `change`, recomputes the user's
    /// presence (with `status_msg` if given), and saves and tells it if worth it (or if
    /// `save` says so).
    async fn update_device(
        &self,
        user: &str,
        device: &str,
        status_msg: Option<Option<String>>,
        save: bool,
        change: impl FnOnce(&mut Device, &mut Presence, u64),
    ) -> Result<(), ApiError> {
        let live = self.lock().local.contains_key(user);
        // Not live: start from what is saved (its status message stays).
        let saved = if live {
            None
        } else {
            Some(self.storage.presence(user).await?.unwrap_or_else(offline))
        };
        let now = now_ms();
        let tell = {
            let mut inner = self.lock();
            let local = inner.local.entry(user.to_owned()).or_insert_with(|| Local {
                presence: saved.unwrap_or_else(offline),
                devices: HashMap::new(),
                last_federated: 0,
            });
            let entry = local.devices.entry(device.to_owned()).or_insert(Device {
                state: PresenceState::Offline,
                last_active: 0,
                last_sync: now,
                syncs: 0,
            });
            change(entry, &mut local.presence, now);
            local.recompute(now, status_msg, &self.config)
        };
        if tell || save {
            let users = [user.to_owned()];
            if let Err(error) = self.save_local(&users, tell).await {
                if tell {
                    self.lock().unsaved.insert(user.to_owned());
                }
                return Err(error);
            }
        }
        Ok(())
    }

    /// A sync of `device` starts: with `set_presence` other than `offline` the device counts
    /// (with that state) until the offline timeout after the guard is dropped.
    pub(crate) async fn syncing<'a>(
        &'a self,
        user: &str,
        device: &str,
        set_presence: SetPresence,
    ) -> Result<SyncGuard<'a>, ApiError> {
        let state = match set_presence {
            _ if !self.config.enabled => return Ok(SyncGuard { tracker: None }),
            SetPresence::Offline => return Ok(SyncGuard { tracker: None }),
            SetPresence::Online => PresenceState::Online,
            SetPresence::Unavailable => PresenceState::Unavailable,
        };
        self.update_device(user, device, None, false, |d, presence, now| {
            d.state = state;
            d.syncs += 1;
            d.last_sync = now;
            d.last_active = now;
            if state == PresenceState::Online {
                presence.last_active_ts = now;
            }
        })
        .await?;
        Ok(SyncGuard { tracker: Some((self, user.to_owned(), device.to_owned())) })
    }

    /// `PUT /presence/{userId}/status`: saved before it returns. Nothing when presence is
    /// off.
    pub(crate) async fn set(
        &self,
        user: &str,
        device: &str,
        state: PresenceState,
        status_msg: Option<String>,
    ) -> Result<(), ApiError> {
        if !self.config.enabled {
            return Ok(());
        }
        self.update_device(user, device, Some(status_msg), true, |d, presence, now| {
            d.state = state;
            d.last_active = now;
            if state == PresenceState::Online {
                presence.last_active_ts = now;
            }
        })
        .await
    }

    /// The user did something (sent an event): activity of the device, which is online again
    /// if it was idle.
    pub(crate) async fn active(&self, user: &str, device: &str) -> Result<(), ApiError> {
        if !self.config.enabled {
            return Ok(());
        }
        self.update_device(user, device, None, false, |d, presence, now| {
            d.last_active = now;
            if d.state != PresenceState::Online {
                d.state = PresenceState::Online;
            }
            presence.last_active_ts = now;
        })
        .await
    }

    /// Saves the live presence of our `users` (serialised with every other save, so the last
    /// one saved is the latest), then, if `tell`, tells the syncs and servers concerned.
    async fn save_local(&self, users: &[String], tell: bool) -> Result<(), ApiError> {
        let saved = {
            let _writes = self.writes.lock().await;
            let mut changes = ChangeSet::new();
            {
                let inner = self.lock();
                for user in users {
                    if let Some(local) = inner.local.get(user) {
                        changes.presence.push((user.clone(), local.presence.clone()));
                    }
                }
            }
            if changes.presence.is_empty() {
                return Ok(());
            }
            let saved = changes.presence.clone();
            self.storage.apply(changes).await?;
            saved
        };
        if tell {
            for (user, _) in &saved {
                self.ephemeral.presence_changed(user).await;
            }
            self.federate(&saved).await?;
        }
        Ok(())
    }

    /// Sends our users' presence to the servers sharing a room with each.
    async fn federate(&self, updates: &[(String, Presence)]) -> Result<(), ApiError> {
        let Some(sender) = self.rooms.outbound() else { return Ok(()) };
        let now = now_ms();
        let mut per_server: BTreeMap<String, Vec<Object>> = BTreeMap::new();
        for (user, presence) in updates {
            let mut servers = BTreeSet::new();
            for (room, membership) in self.storage.rooms_of_user(user).await? {
                if membership != "join" {
                    continue;
                }
                let Some(info) = self.storage.room(&room).await? else { continue };
                let Some(snapshot) = info.current_state else { continue };
                servers.extend(self.rooms.remote_servers(&room, snapshot).await?.iter().cloned());
            }
            if servers.is_empty() {
                continue;
            }
            let mut entry = Object::new();
            entry.insert("user_id", user.as_str());
            entry.insert("presence", presence.state.as_str());
            if let Some(status) = &presence.status_msg {
                entry.insert("status_msg", status.as_str());
            }
            let ago = now.saturating_sub(presence.last_active_ts);
            entry.insert("last_active_ago", i64::try_from(ago).unwrap_or(i64::MAX));
            entry.insert("currently_active", presence.currently_active);
            for server in servers {
                per_server.entry(server).or_default().push(entry.clone());
            }
            if let Some(local) = self.lock().local.get_mut(user) {
                local.last_federated = now;
            }
        }
        for (server, entries) in per_server {
            for chunk in entries.chunks(MAX_PUSH) {
                let push: Vec<CoreValue> = chunk.iter().cloned().map(CoreValue::from).collect();
                let mut content = Object::new();
                content.insert("push", push);
                let mut edu = Object::new();
                edu.insert("edu_type", "m.presence");
                edu.insert("content", content);
                sender.send_ephemeral(&server, edu);
            }
        }
        Ok(())
    }

    /// Takes other servers' users' presence (checked by the caller: users of the sending
    /// server sharing a room with ours): saves and tells what is worth it, and notes them
    /// for the remote timeout.
    pub(crate) async fn received(&self, updates: Vec<(String, Presence)>) -> Result<(), ApiError> {
        if !self.config.enabled || updates.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let _writes = self.writes.lock().await;
        let users: Vec<&str> = updates.iter().map(|(u, _)| u.as_str()).collect();
        let saved: HashMap<String, Presence> =
            self.storage.presences(&users).await?.into_iter().collect();
        let mut changes = ChangeSet::new();
        let mut seen = BTreeSet::new();
        // The last update of a user in the EDU wins.
        for (user, new) in updates.into_iter().rev() {
            if !seen.insert(user.clone()) {
                continue;
            }
            {
                let mut inner = self.lock();
                if new.state == PresenceState::Offline {
                    inner.remote.remove(&user);
                } else {
                    inner.remote.insert(user.clone(), now);
                }
            }
            let old = saved.get(&user).cloned().unwrap_or_else(offline);
            if worth_telling(&old, &new, self.config.active_window_ms) {
                changes.presence.push((user, new));
            }
        }
        if changes.presence.is_empty() {
            return Ok(());
        }
        let told: Vec<String> = changes.presence.iter().map(|(u, _)| u.clone()).collect();
        self.storage.apply(changes).await?;
        drop(_writes);
        for user in told {
            self.ephemeral.presence_changed(&user).await;
        }
        Ok(())
    }

    /// One look at the timers.
    async fn tick(&self) -> Result<(), ApiError> {
        let now = now_ms();
        let config = &self.config;
        let mut changed = BTreeSet::new();
        let mut pings = Vec::new();
        let mut expired = Vec::new();
        {
            let mut inner = self.lock();
            changed.extend(std::mem::take(&mut inner.unsaved));
            for (user, local) in inner.local.iter_mut() {
                local.devices.retain(|_, d| {
                    if d.state == PresenceState::Online
                        && now.saturating_sub(d.last_active) > config.idle_timeout_ms
                    {
                        d.state = PresenceState::Unavailable;
                    }
                    d.syncs > 0
                        || now.saturating_sub(d.last_sync.max(d.last_active))
                            <= config.offline_timeout_ms
                });
                if local.recompute(now, None, config) {
                    changed.insert(user.clone());
                } else if local.presence.state != PresenceState::Offline
                    && now.saturating_sub(local.last_federated) > FEDERATION_PING_MS
                {
                    pings.push((user.clone(), local.presence.clone()));
                }
            }
            inner.remote.retain(|user, at| {
                let live = now.saturating_sub(*at) <= REMOTE_TIMEOUT_MS;
                if !live {
                    expired.push(user.clone());
                }
                live
            });
        }
        if !changed.is_empty() {
            let changed: Vec<String> = changed.into_iter().collect();
            if let Err(error) = self.save_local(&changed, true).await {
                self.lock().unsaved.extend(changed);
                return Err(error);
            }
        }
        {
            // Users offline with no device left are saved and told: forget them.
            let mut inner = self.lock();
            inner.local.retain(|_, l| {
                !(l.devices.is_empty() && l.presence.state == PresenceState::Offline)
            });
        }
        if !pings.is_empty() {
            self.federate(&pings).await?;
        }
        if !expired.is_empty() {
            let users: Vec<&str> = expired.iter().map(String::as_str).collect();
            let mut updates = Vec::new();
            for (user, mut presence) in self.storage.presences(&users).await? {
                presence.state = PresenceState::Offline;
                presence.currently_active = false;
                updates.push((user, presence));
            }
            self.received(updates).await?;
        }
        Ok(())
    }

    /// The presence of `user` now: live for our users with devices that count, else as
    /// saved, else offline.
    async fn current(&self, user: &str) -> Result<Presence, ApiError> {
        if let Some(local) = self.lock().local.get(user) {
            return Ok(local.presence.clone());
        }
        Ok(self.storage.presence(user).await?.unwrap_or_else(offline))
    }

    /// The presence of many users now; those who never had any are left out.
    async fn current_of(&self, users: &[String]) -> Result<Vec<(String, Presence)>, ApiError> {
        let mut out = Vec::new();
        let mut unknown = Vec::new();
        {
            let inner = self.lock();
            for user in users {
                match inner.local.get(user) {
                    Some(local) => out.push((user.clone(), local.presence.clone())),
                    None => unknown.push(user.as_str()),
                }
            }
        }
        out.extend(self.storage.presences(&unknown).await?);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The `m.presence` events of `users` now (for application services, MSC2409); none
    /// when presence is off.
    pub(crate) async fn events_of(&self, users: &[String]) -> Result<Vec<Value>, ApiError> {
        if !self.config.enabled {
            return Ok(Vec::new());
        }
        let now = now_ms();
        Ok(self
            .current_of(users)
            .await?
            .into_iter()
            .map(|(sender, presence)| {
                json!({
                    "type": "m.presence",
                    "sender": sender,
                    "content": Value::Object(content(&presence, now)),
                })
            })
            .collect())
    }

    /// `GET /presence/{userId}/status` by `viewer`: their own, or that of a user sharing a
    /// joined room with them (403 otherwise, as Synapse); `offline` when presence is off.
    pub(crate) async fn status(&self, viewer: &str, target: &str) -> Result<Value, ApiError> {
        if !self.config.enabled {
            return Ok(json!({"presence": "offline"}));
        }
        if viewer != target {
            let candidates = BTreeSet::from([target.to_owned()]);
            if self.ephemeral.sharing_among(viewer, candidates).await?.is_empty() {
                return Err(ApiError::forbidden("You are not allowed to see their presence."));
            }
        }
        let presence = self.current(target).await?;
        Ok(Value::Object(content(&presence, now_ms())))
    }

    /// The `presence` events of a sync of `user` from the counter `since` (`None`: an initial
    /// sync): the changes since then of the users sharing a room with them (and their own),
    /// or, for an initial sync or a token older than what is remembered, everybody's who is
    /// not offline.
    pub(crate) async fn sync_events(
        &self,
        user: &str,
        since: Option<u64>,
        filter: &EventFilter,
    ) -> Result<Vec<Value>, ApiError> {
        if !self.config.enabled || !filter.keeps_type("m.presence") {
            return Ok(Vec::new());
        }
        let (users, everybody) = match since.and_then(|c| self.ephemeral.presence_since(c)) {
            Some(changed) => {
                let changed: BTreeSet<String> = changed.into_iter().collect();
                (self.ephemeral.sharing_among(user, changed).await?, false)
            }
            None => (self.ephemeral.sharing(user).await?.into_iter().collect(), true),
        };
        let users: Vec<String> = users
            .into_iter()
            .filter(|u| {
                filter.senders.as_ref().is_none_or(|s| s.contains(u))
                    && !filter.not_senders.contains(u)
            })
            .collect();
        let now = now_ms();
        let mut events = Vec::new();
        for (sender, presence) in self.current_of(&users).await? {
            if everybody && presence.state == PresenceState::Offline {
                continue;
            }
            events.push(json!({
                "type": "m.presence",
                "sender": sender,
                "content": Value::Object(content(&presence, now)),
            }));
        }
        Ok(events)
    }
}

/// The content of an `m.presence` event (also the answer of `GET .../status`).
fn content(presence: &Presence, now: u64) -> Map<String, Value> {
    let mut content = Map::new();
    content.insert("presence".to_owned(), json!(presence.state.as_str()));
    if presence.last_active_ts > 0 {
        content.insert(
            "last_active_ago".to_owned(),
            json!(now.saturating_sub(presence.last_active_ts)),
        );
    }
    if let Some(status) = &presence.status_msg {
        content.insert("status_msg".to_owned(), json!(status));
    }
    if presence.state == PresenceState::Online {
        content.insert("currently_active".to_owned(), json!(presence.currently_active));
    }
    content
}

/// The timer task: a look every `tick` while the tracker lives.
async fn run_timers(tracker: Weak<PresenceTracker>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(tracker) = tracker.upgrade() else { return };
        if let Err(error) = tracker.tick().await {
            tracing::warn!("presence timers: {error}");
        }
    }
}

/// A received update's presence, as saved: `now` less its `last_active_ago`.
pub(crate) fn from_edu(
    state: PresenceState,
    status_msg: Option<String>,
    last_active_ago: Option<u64>,
    currently_active: bool,
) -> Presence {
    let last_active_ts = last_active_ago.map_or(0, |ago| now_ms().saturating_sub(ago));
    Presence {
        state,
        status_msg,
        last_active_ts,
        currently_active: currently_active && state == PresenceState::Online,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(state: PresenceState, last_active_ts: u64, currently_active: bool) -> Presence {
        Presence { state, status_msg: None, last_active_ts, currently_active }
    }

    #[test]
    fn only_changes_worth_telling_are_told() {
        let online = at(PresenceState::Online, 1000, true);
        assert!(!worth_telling(&online, &online, 60_000));
        assert!(!worth_telling(&online, &at(PresenceState::Online, 50_000, true), 60_000));
        assert!(worth_telling(&online, &at(PresenceState::Online, 1000, false), 60_000));
        assert!(worth_telling(&online, &at(PresenceState::Unavailable, 1000, false), 60_000));
        let mut status = online.clone();
        status.status_msg = Some("hi".to_owned());
        assert!(worth_telling(&online, &status, 60_000));
        let idle = at(PresenceState::Unavailable, 1000, false);
        assert!(worth_telling(&idle, &at(PresenceState::Unavailable, 70_000, false), 60_000));
        assert!(!worth_telling(&idle, &at(PresenceState::Unavailable, 2000, false), 60_000));
    }

    #[test]
    fn set_presence_parses() {
        assert_eq!(SetPresence::parse("online"), Some(SetPresence::Online));
        assert_eq!(SetPresence::parse("unavailable"), Some(SetPresence::Unavailable));
        assert_eq!(SetPresence::parse("offline"), Some(SetPresence::Offline));
        assert_eq!(SetPresence::parse("busy"), None);
    }
}
