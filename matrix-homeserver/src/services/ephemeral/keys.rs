//! The end-to-end encryption keys of devices, in storage: device keys, one-time keys (each
//! claimed once, by storage) and fallback keys, with the bounds a device's upload is checked
//! against, and the device-list changes an upload makes.

use std::collections::{BTreeMap, BTreeSet};

use matrix_storage::{ChangeSet, FallbackKey, OneTimeKey};
use serde_json::Value;

use super::Ephemeral;
use crate::error::ApiError;
use crate::services::appservice::transactions::Note;
use crate::services::federation::fan_out::{DeviceChange, device_list_updates};

/// Why an upload was refused (nothing of it was stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UploadRefused {
    /// The device would hold more one-time keys than allowed.
    TooManyOneTimeKeys(usize),
    /// A one-time key id is held already with other content.
    KeyIdReused(String),
    /// The device would hold fallback keys of more algorithms than allowed.
    TooManyFallbackAlgorithms(usize),
}

impl From<UploadRefused> for ApiError {
    fn from(refused: UploadRefused) -> Self {
        match refused {
            UploadRefused::TooManyOneTimeKeys(max) => ApiError::limit_exceeded_with(
                0,
                format!("a device may hold at most {max} one-time keys"),
            ),
            UploadRefused::KeyIdReused(id) => ApiError::invalid_param(format!(
                "the one-time key id {id:?} is held already with other content"
            )),
            UploadRefused::TooManyFallbackAlgorithms(max) => ApiError::invalid_param(format!(
                "a device may hold fallback keys of at most {max} algorithms"
            )),
        }
    }
}

/// How many algorithms a device may hold a fallback key for (clients use one).
pub(crate) const MAX_FALLBACK_ALGORITHMS: usize = 8;

/// The keys of a new device ([`Ephemeral::note_new_device_keys`]), as in `/keys/upload`.
#[derive(Debug)]
pub(crate) struct NewDeviceKeys {
    pub(crate) device_keys: Value,
    pub(crate) one_time_keys: BTreeMap<String, Value>,
    pub(crate) fallback_keys: BTreeMap<String, Value>,
}

/// How many key claims of one request run at once ([`Ephemeral::claim_keys`]).
const CLAIMS_AT_ONCE: usize = 32;

fn algorithm(key_id: &str) -> &str {
    key_id.split(':').next().unwrap_or_default()
}

pub(super) fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub(super) fn json_value(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|_| ApiError::unknown("a stored key does not parse"))
}

impl Ephemeral {
    /// Stores a device's keys and one-time keys; answers the one-time key counts. When the
    /// device keys changed, the change goes into the device-list stream (in the same change
    /// set, with `announce`, the change's EDUs for other servers) and the users sharing a
    /// room with the owner are woken. Answers the counts and whether the device keys changed
    /// (`announce` was queued).
    pub(crate) async fn upload_keys(
        &self,
        user: &str,
        device: &str,
        device_keys: Option<Value>,
        one_time_keys: BTreeMap<String, Value>,
        fallback_keys: BTreeMap<String, Value>,
        announce: Vec<(String, std::sync::Arc<[u8]>)>,
    ) -> Result<(BTreeMap<String, u64>, bool), ApiError> {
        // Uploads are checked against what is stored and then written: one at a time, so
        // that two concurrent uploads of a device cannot both pass a bound.
        let uploads = self.uploads.lock().await;
        let storage = &self.storage;
        let mut changes = ChangeSet::new();
        let mut new = 0;
        for (id, key) in &one_time_keys {
            // The same key again (a retry) is fine; another key under a held id would make
            // two devices of the world disagree about which key that id is.
            match storage.one_time_key(user, device, id).await? {
                Some(held) if held == json_bytes(key) => {}
                Some(_) => return Err(UploadRefused::KeyIdReused(id.clone()).into()),
                None => {
                    new += 1;
                    changes.one_time_keys.push(OneTimeKey {
                        user_id: user.to_owned(),
                        device_id: device.to_owned(),
                        key_id: id.clone(),
                        key: json_bytes(key),
                    });
                }
            }
        }
        let max = self.limits.one_time_keys;
        if new > 0 {
            let held: u64 = storage.one_time_key_counts(user, device).await?.values().sum();
            if usize::try_from(held).unwrap_or(usize::MAX).saturating_add(new) > max {
                return Err(UploadRefused::TooManyOneTimeKeys(max).into());
            }
        }
        if !fallback_keys.is_empty() {
            let held = storage.fallback_keys(user, device).await?;
            let mut algorithms: BTreeSet<&str> =
                held.iter().map(|f| f.algorithm.as_str()).collect();
            algorithms.extend(fallback_keys.keys().map(|id| algorithm(id)));
            if algorithms.len() > MAX_FALLBACK_ALGORITHMS {
                return Err(
                    UploadRefused::TooManyFallbackAlgorithms(MAX_FALLBACK_ALGORITHMS).into()
                );
            }
            for (id, key) in fallback_keys {
                let bytes = json_bytes(&key);
                // The same key again keeps its state (used or not); a new one is unused.
                if held.iter().any(|f| f.key_id == id && f.key == bytes) {
                    continue;
                }
                changes.fallback_keys.push(FallbackKey {
                    user_id: user.to_owned(),
                    device_id: device.to_owned(),
                    algorithm: algorithm(&id).to_owned(),
                    key_id: id,
                    key: bytes,
                    used: false,
                });
            }
        }
        let mut changed = false;
        if let Some(keys) = device_keys {
            let bytes = json_bytes(&keys);
            let stored = storage.device_keys(user).await?;
            changed = !stored.iter().any(|(d, k)| d == device && *k == bytes);
            if changed {
                changes.device_keys.push((user.to_owned(), device.to_owned(), bytes));
                changes.device_list_changes.push(user.to_owned());
                changes.enqueue = announce;
            }
        }
        let keys_changed = !changes.one_time_keys.is_empty() || !changes.fallback_keys.is_empty();
        if keys_changed || !changes.device_keys.is_empty() {
            storage.apply(changes).await?;
        }
        if keys_changed {
            self.note_for_appservices(&Note::Keys(user.to_owned()));
        }
        drop(uploads);
        if changed {
            self.wake_sharing(user).await;
        }
        Ok((storage.one_time_key_counts(user, device).await?, changed))
    }

    /// Adds to a change set that creates `device` of `user` (nothing of it stored yet) its
    /// keys, bounded as an upload is, with a device-list change and, when federating, its
    /// `m.device_list_update` (with `display_name`) for the servers sharing a room with the
    /// user. The caller wakes those users once it applied the change set ([`Self::device_added`]).
    pub(crate) async fn note_new_device_keys(
        &self,
        changes: &mut ChangeSet,
        user: &str,
        device: &str,
        display_name: Option<String>,
        keys: NewDeviceKeys,
    ) -> Result<(), ApiError> {
        let NewDeviceKeys { device_keys, one_time_keys, fallback_keys } = keys;
        let max = self.limits.one_time_keys;
        if one_time_keys.len() > max {
            return Err(ApiError::list_too_long("one_time_keys", max));
        }
        let algorithms: BTreeSet<&str> = fallback_keys.keys().map(|id| algorithm(id)).collect();
        if algorithms.len() > MAX_FALLBACK_ALGORITHMS {
            return Err(UploadRefused::TooManyFallbackAlgorithms(MAX_FALLBACK_ALGORITHMS).into());
        }
        for (id, key) in one_time_keys {
            changes.one_time_keys.push(OneTimeKey {
                user_id: user.to_owned(),
                device_id: device.to_owned(),
                key_id: id,
                key: json_bytes(&key),
            });
        }
        for (id, key) in fallback_keys {
            changes.fallback_keys.push(FallbackKey {
                user_id: user.to_owned(),
                device_id: device.to_owned(),
                algorithm: algorithm(&id).to_owned(),
                key_id: id,
                key: json_bytes(&key),
                used: false,
            });
        }
        changes.device_keys.push((user.to_owned(), device.to_owned(), json_bytes(&device_keys)));
        changes.device_list_changes.push(user.to_owned());
        if let Some((_, ours)) = self.outbound.get() {
            let change = DeviceChange::Keys {
                device_id: device.to_owned(),
                display_name,
                keys: device_keys,
            };
            let storage = self.storage.as_ref();
            changes.enqueue.extend(device_list_updates(storage, ours, user, &[change]).await?);
        }
        Ok(())
    }

    /// Wakes the users who share a room with `user` after a device with keys was added
    /// ([`Self::note_new_device_keys`]).
    pub(crate) async fn device_added(&self, user: &str) {
        self.wake_sharing(user).await;
    }

    /// The count of one-time keys per algorithm of a device.
    pub(crate) async fn one_time_key_counts(
        &self,
        user: &str,
        device: &str,
    ) -> Result<BTreeMap<String, u64>, ApiError> {
        Ok(self.storage.one_time_key_counts(user, device).await?)
    }

    /// The algorithms of a device's unused fallback keys.
    pub(crate) async fn fallback_key_types(
        &self,
        user: &str,
        device: &str,
    ) -> Result<Vec<String>, ApiError> {
        let keys = self.storage.fallback_keys(user, device).await?;
        Ok(keys.into_iter().filter(|k| !k.used).map(|k| k.algorithm).collect())
    }

    /// The device keys of a user's devices (all, or those named), with the signatures the
    /// user's self-signing key made on them merged in.
    pub(crate) async fn device_keys(
        &self,
        user: &str,
        devices: &[String],
    ) -> Result<BTreeMap<String, Value>, ApiError> {
        let mut out = BTreeMap::new();
        for (device, keys) in self.storage.device_keys(user).await? {
            if devices.is_empty() || devices.contains(&device) {
                out.insert(device, json_value(&keys)?);
            }
        }
        self.merge_device_signatures(user, &mut out).await?;
        Ok(out)
    }

    /// Takes one one-time key of the algorithm asked for of each device of each user of
    /// `wanted` (user -> device -> algorithm), or, when a device has none left, its fallback
    /// key (which is marked used); storage hands each key out once, durably. Answers the
    /// `one_time_keys` of a claim (user -> device -> key id -> key; every user listed,
    /// devices without a key left out).
    pub(crate) async fn claim_keys(
        &self,
        wanted: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<serde_json::Map<String, Value>, ApiError> {
        let mut claimed = serde_json::Map::new();
        let mut each = Vec::new();
        for (user, devices) in wanted {
            claimed.insert(user.clone(), Value::Object(serde_json::Map::new()));
            for (device, algorithm) in devices {
                each.push((user.clone(), device, algorithm));
            }
        }
        let keys = self.claim_each(each.clone()).await?;
        let mut noted = BTreeSet::new();
        for ((user, device, _), key) in each.into_iter().zip(keys) {
            if let Some((key_id, key)) = key
                && let Some(by_device) = claimed.get_mut(&user).and_then(Value::as_object_mut)
            {
                by_device.insert(device, serde_json::json!({ key_id: key }));
                if noted.insert(user.clone()) {
                    self.note_for_appservices(&Note::Keys(user));
                }
            }
        }
        Ok(claimed)
    }

    /// The claim of one key for each `(user, device, algorithm)` of `wanted`, answered in
    /// that order. The claims run [`CLAIMS_AT_ONCE`] at a time: each is durable on its own,
    /// and claims in flight together share their syncs to disk (sled's group commit,
    /// PostgreSQL's concurrent commits), where one after the other each waited for its own.
    async fn claim_each(
        &self,
        wanted: Vec<(String, String, String)>,
    ) -> Result<Vec<Option<(String, Value)>>, ApiError> {
        let mut answers: Vec<Option<(String, Value)>> = vec![None; wanted.len()];
        let mut running = tokio::task::JoinSet::new();
        let mut wanted = wanted.into_iter().enumerate();
        loop {
            while running.len() < CLAIMS_AT_ONCE {
                let Some((at, (user, device, algorithm))) = wanted.next() else { break };
                // An algorithm names the part of a key id before its `:`.
                if algorithm.is_empty() || algorithm.contains(':') {
                    continue;
                }
                let storage = self.storage.clone();
                running.spawn(
                    async move { (at, storage.claim_key(&user, &device, &algorithm).await) },
                );
            }
            let Some(done) = running.join_next().await else { break };
            let (at, claimed) =
                done.map_err(|_| ApiError::unknown("a key claim stopped unfinished"))?;
            if let Some(claimed) = claimed? {
                answers[at] = Some((claimed.key_id, json_value(&claimed.key)?));
            }
        }
        Ok(answers)
    }

    /// Adds to a change set that deletes `devices` of `user` a device-list change when one of
    /// them had keys (only devices with keys are in anybody's device list), and, when
    /// federating, an `m.device_list_update` per such device for the servers sharing a room
    /// with the user; answers whether it did. The storage deletes the devices' keys and
    /// queues with them.
    pub(crate) async fn note_devices_deleted(
        &self,
        changes: &mut ChangeSet,
        user: &str,
        devices: &[String],
    ) -> Result<bool, ApiError> {
        let with_keys = self.storage.device_keys(user).await?;
        let deleted: Vec<DeviceChange> = with_keys
            .iter()
            .filter(|(d, _)| devices.contains(d))
            .map(|(d, _)| DeviceChange::Deleted { device_id: d.clone() })
            .collect();
        if deleted.is_empty() {
            return Ok(false);
        }
        changes.device_list_changes.push(user.to_owned());
        if let Some((_, ours)) = self.outbound.get() {
            let storage = self.storage.as_ref();
            changes.enqueue.extend(device_list_updates(storage, ours, user, &deleted).await?);
        }
        Ok(true)
    }

    /// Adds to a change set that renames `device` of `user` a device-list change when the
    /// device has keys, and, when federating, its `m.device_list_update` (the name travels
    /// with the keys); answers whether it did.
    pub(crate) async fn note_device_renamed(
        &self,
        changes: &mut ChangeSet,
        user: &str,
        device: &str,
        name: Option<String>,
    ) -> Result<bool, ApiError> {
        let with_keys = self.storage.device_keys(user).await?;
        let Some((_, keys)) = with_keys.iter().find(|(d, _)| d == device) else {
            return Ok(false);
        };
        changes.device_list_changes.push(user.to_owned());
        if let Some((_, ours)) = self.outbound.get() {
            let change = DeviceChange::Keys {
                device_id: device.to_owned(),
                display_name: name,
                keys: json_value(keys)?,
            };
            let storage = self.storage.as_ref();
            changes.enqueue.extend(device_list_updates(storage, ours, user, &[change]).await?);
        }
        Ok(true)
    }

    /// Tells the outbound sender (when federating) that items for `destinations` were
    /// stored.
    pub(crate) fn outbound_stored<'a>(&self, destinations: impl IntoIterator<Item = &'a str>) {
        if let Some((sender, _)) = self.outbound.get() {
            let destinations: BTreeSet<&str> = destinations.into_iter().collect();
            for destination in destinations {
                sender.notify(destination);
            }
        }
    }

    /// Wakes the users who share a room with `user` after devices with keys were deleted.
    pub(crate) async fn devices_deleted(&self, user: &str) {
        self.wake_sharing(user).await;
    }

    /// Wakes the users who share a room with `user` after a device with keys was renamed.
    pub(crate) async fn device_renamed(&self, user: &str) {
        self.wake_sharing(user).await;
    }
}
