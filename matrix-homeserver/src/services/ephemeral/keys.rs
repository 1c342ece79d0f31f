//! The end-to-end encryption keys of devices, indexed by user (a `/keys/query` reads only the
//! users it names), with a bound on one-time keys per device, fallback keys that are marked
//! used when claimed, and the log of users whose device lists changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde_json::Value;

/// How many device-list changes are remembered for incremental syncs; a sync whose token is
/// older than the oldest one kept is told that every device list changed.
const LOG_LEN: usize = 4096;

#[derive(Debug, Clone)]
struct Fallback {
    id: String,
    key: Value,
    used: bool,
}

#[derive(Debug, Default)]
struct DeviceKeys {
    keys: Option<Value>,
    one_time: BTreeMap<String, Value>,
    /// Ids of one-time keys claimed already (the latest ones), which may not come back.
    used: VecDeque<String>,
    used_set: HashSet<String>,
    /// Algorithm -> the device's fallback key for it.
    fallback: BTreeMap<String, Fallback>,
}

/// Why an upload was refused (nothing of it was stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UploadRefused {
    /// The device would hold more one-time keys than allowed.
    TooManyOneTimeKeys(usize),
    /// A one-time key id is held already with other content, or was claimed already.
    KeyIdReused(String),
    /// The device would hold fallback keys of more algorithms than allowed.
    TooManyFallbackAlgorithms(usize),
}

/// How many algorithms a device may hold a fallback key for (clients use one).
pub(crate) const MAX_FALLBACK_ALGORITHMS: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct Keys {
    /// User -> device -> keys.
    by_user: HashMap<String, BTreeMap<String, DeviceKeys>>,
    /// (counter, user) whose device list changed, oldest first.
    log: VecDeque<(u64, String)>,
    /// The counter of the latest change dropped from the log: a token at or after it is
    /// still covered.
    dropped_upto: u64,
}

fn algorithm(key_id: &str) -> &str {
    key_id.split(':').next().unwrap_or_default()
}

impl Keys {
    /// Stores a device's keys; answers whether its device keys changed. `max_one_time` bounds
    /// the unclaimed one-time keys the device holds.
    pub(crate) fn upload(
        &mut self,
        user: &str,
        device: &str,
        device_keys: Option<Value>,
        one_time_keys: BTreeMap<String, Value>,
        fallback_keys: BTreeMap<String, Value>,
        max_one_time: usize,
    ) -> Result<bool, UploadRefused> {
        let held = self.by_user.get(user).and_then(|d| d.get(device));
        let mut new = 0;
        for (id, key) in &one_time_keys {
            // The same key again (a retry) is fine; another key under a held or used id
            // would make two devices of the world disagree about which key that id is.
            match held.and_then(|h| h.one_time.get(id)) {
                Some(existing) if existing == key => {}
                Some(_) => return Err(UploadRefused::KeyIdReused(id.clone())),
                None if held.is_some_and(|h| h.used_set.contains(id)) => {
                    return Err(UploadRefused::KeyIdReused(id.clone()));
                }
                None => new += 1,
            }
        }
        if held.map_or(0, |h| h.one_time.len()) + new > max_one_time {
            return Err(UploadRefused::TooManyOneTimeKeys(max_one_time));
        }
        let mut algorithms: std::collections::BTreeSet<&str> =
            held.map(|h| h.fallback.keys().map(String::as_str).collect()).unwrap_or_default();
        algorithms.extend(fallback_keys.keys().map(|id| algorithm(id)));
        if algorithms.len() > MAX_FALLBACK_ALGORITHMS {
            return Err(UploadRefused::TooManyFallbackAlgorithms(MAX_FALLBACK_ALGORITHMS));
        }
        let entry = self.by_user.entry(user.to_owned()).or_default();
        let entry = entry.entry(device.to_owned()).or_default();
        let mut changed = false;
        if let Some(keys) = device_keys {
            changed = entry.keys.as_ref() != Some(&keys);
            entry.keys = Some(keys);
        }
        entry.one_time.extend(one_time_keys);
        for (id, key) in fallback_keys {
            let algorithm = algorithm(&id).to_owned();
            // A new key replaces the algorithm's old one and is unused; the same key again
            // keeps its state.
            if entry.fallback.get(&algorithm).is_some_and(|f| f.id == id && f.key == key) {
                continue;
            }
            entry.fallback.insert(algorithm, Fallback { id, key, used: false });
        }
        Ok(changed)
    }

    /// Notes that `user`'s device list changed, as change number `counter`.
    pub(crate) fn log_change(&mut self, counter: u64, user: &str) {
        self.log.push_back((counter, user.to_owned()));
        if self.log.len() > LOG_LEN
            && let Some((dropped, _)) = self.log.pop_front()
        {
            self.dropped_upto = dropped;
        }
    }

    /// The users whose device list changed in `(since, upto]`, or `None` when the log does
    /// not reach back to `since` (then anything may have changed).
    pub(crate) fn changed(&self, since: u64, upto: u64) -> Option<BTreeSet<String>> {
        if since < self.dropped_upto {
            return None;
        }
        Some(
            self.log
                .iter()
                .filter(|(c, _)| *c > since && *c <= upto)
                .map(|(_, u)| u.clone())
                .collect(),
        )
    }

    pub(crate) fn one_time_key_counts(&self, user: &str, device: &str) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        if let Some(keys) = self.by_user.get(user).and_then(|d| d.get(device)) {
            for key_id in keys.one_time.keys() {
                *counts.entry(algorithm(key_id).to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The algorithms of a device's fallback keys not claimed yet.
    pub(crate) fn unused_fallback_types(&self, user: &str, device: &str) -> Vec<String> {
        self.by_user
            .get(user)
            .and_then(|d| d.get(device))
            .map(|k| k.fallback.iter().filter(|(_, f)| !f.used).map(|(a, _)| a.clone()).collect())
            .unwrap_or_default()
    }

    /// The device keys of a user's devices (all, or those named).
    pub(crate) fn device_keys(&self, user: &str, devices: &[String]) -> BTreeMap<String, Value> {
        let Some(of_user) = self.by_user.get(user) else { return BTreeMap::new() };
        let keys = |(d, k): (&String, &DeviceKeys)| Some((d.clone(), k.keys.clone()?));
        if devices.is_empty() {
            of_user.iter().filter_map(keys).collect()
        } else {
            devices.iter().filter_map(|d| of_user.get_key_value(d)).filter_map(keys).collect()
        }
    }

    /// Takes one one-time key of `algorithm` of a device, or, when none is left, its fallback
    /// key, which stays but is marked used (the client then uploads a new one).
    pub(crate) fn claim(
        &mut self,
        user: &str,
        device: &str,
        algorithm: &str,
        remember_used: usize,
    ) -> Option<(String, Value)> {
        let keys = self.by_user.get_mut(user)?.get_mut(device)?;
        let prefix = format!("{algorithm}:");
        let id = keys.one_time.range(prefix.clone()..).next().map(|(k, _)| k.clone());
        if let Some(id) = id.filter(|k| k.starts_with(&prefix))
            && let Some(claimed) = keys.one_time.remove_entry(&id)
        {
            keys.used.push_back(id.clone());
            keys.used_set.insert(id);
            while keys.used.len() > remember_used {
                if let Some(old) = keys.used.pop_front() {
                    keys.used_set.remove(&old);
                }
            }
            return Some(claimed);
        }
        let fallback = keys.fallback.get_mut(algorithm)?;
        fallback.used = true;
        Some((fallback.id.clone(), fallback.key.clone()))
    }

    /// Forgets a deleted device's keys; answers whether it had any.
    pub(crate) fn device_deleted(&mut self, user: &str, device: &str) -> bool {
        let Some(of_user) = self.by_user.get_mut(user) else { return false };
        let had = of_user.remove(device).is_some();
        if of_user.is_empty() {
            self.by_user.remove(user);
        }
        had
    }
}
