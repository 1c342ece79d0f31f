//! The domains of schema 2: end-to-end encryption keys, the device-list stream, to-device
//! queues, receipts, client transaction ids, aliases and the directory, redactions, profiles,
//! forgotten rooms, media quotas and the stream positions of account data. Their part of a
//! change set ([`apply_in`]), the key claim, and their reads.
//!
//! Tables keyed by a stream position (`DEVICE_LIST`, `INBOX`, `RECEIPT_LOG`, `ACCOUNT_DATA_LOG`)
//! put it last, big-endian, so a range over the key is a range of positions. Entries of those
//! logs are deleted (a delivered message, a replaced receipt...), so the last position handed
//! out is kept in the META `stream_head` entry as well.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::batch::Tx;
use super::{
    ACCOUNT_DATA, ACCOUNT_DATA_LOG, ACCOUNT_DATA_POS, ALIAS, APPSERVICE_LIST, CLIENT_TXN,
    DEHYDRATED, DEVICE_KEYS, DEVICE_LIST, FALLBACK_KEY, FORGOTTEN, INBOX, INBOX_LOG, KEY_SIGNATURE,
    MEDIA_USAGE, ONE_TIME_KEY, PROFILE, PUBLISHED, RECEIPT, RECEIPT_LOG, REDACTION, ROOM_ALIAS,
    SledStore, unavailable,
};
use crate::codec::{Dec, Enc};
use crate::{
    AccountDataChange, AddressedToDevice, Alias, AppserviceListing, ChangeSet, ClaimedKey,
    DehydratedDevice, DirectoryStore, E2eeStore, ErrorKind, FallbackKey, InboxStore, Profile,
    Receipt, ReceiptKey, ReceiptStore, Result, StorageError, StoredReceipt, StreamPos,
    ToDeviceMessage, ToDeviceUsage,
};

/// Names what did not decode: `what` is the kind of record.
fn corrupt(what: &'static str) -> impl FnOnce(StorageError) -> StorageError {
    move |error| {
        StorageError::with_source(
            ErrorKind::Corrupt,
            format!("a stored {what} does not decode"),
            error,
        )
    }
}

/// Refuses a change set that records a transaction id recorded already, or one id twice:
/// called under the writer lock before anything of the change set is written.
pub(super) fn check_transaction_ids(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    let mut seen = HashSet::new();
    for t in &changes.transaction_ids {
        let key = txn_key(&t.user_id, &t.device_id, &t.scope, &t.txn_id);
        if tx.get(&key)?.is_some() || !seen.insert(key) {
            return Err(StorageError::new(
                ErrorKind::Conflict,
                format!("transaction id {} was used already", t.txn_id),
            ));
        }
    }
    Ok(())
}

fn txn_key(user: &str, device: &str, scope: &str, txn_id: &str) -> Vec<u8> {
    Enc::table(CLIENT_TXN).str(user).str(device).str(scope).str(txn_id).done()
}

/// This module's part of a change set, as buffered writes, after the rest of it (so in the
/// in-memory backend's order: a deleted device's keys go before new keys are added).
/// `next` is the first free stream position; returns the first free one after.
pub(super) fn apply_in(tx: &Tx<'_>, changes: &ChangeSet, mut next: u64) -> Result<u64> {
    let mut take = || {
        next += 1;
        next - 1
    };
    for (user, device) in &changes.deleted_devices {
        delete_device(tx, user, device)?;
    }
    for dehydrated in &changes.dehydrated_devices {
        tx.insert(
            Enc::table(DEHYDRATED).str(&dehydrated.user_id).done(),
            Enc::default().str(&dehydrated.device_id).bytes(&dehydrated.device_data).done(),
        )?;
    }

    // Account data: the value where it always was, its position and a log by position.
    for (user, room, kind, content) in &changes.account_data {
        let pos = take();
        let room = room.as_deref();
        tx.insert(
            Enc::table(ACCOUNT_DATA).str(user).opt_str(room).str(kind).done(),
            content.clone(),
        )?;
        forget_account_data_pos(tx, user, room, kind)?;
        tx.insert(
            Enc::table(ACCOUNT_DATA_POS).str(user).opt_str(room).str(kind).done(),
            Enc::default().u64(pos).done(),
        )?;
        tx.insert(
            Enc::table(ACCOUNT_DATA_LOG).str(user).u64(pos).done(),
            Enc::default().opt_str(room).str(kind).done(),
        )?;
    }
    for (user, room, kind) in &changes.deleted_account_data {
        let room = room.as_deref();
        tx.remove(Enc::table(ACCOUNT_DATA).str(user).opt_str(room).str(kind).done())?;
        forget_account_data_pos(tx, user, room, kind)?;
    }
    for (user, bytes) in &changes.media_usage {
        tx.insert(Enc::table(MEDIA_USAGE).str(user).done(), Enc::default().u64(*bytes).done())?;
    }

    // Keys.
    for (user, device, keys) in &changes.device_keys {
        tx.insert(Enc::table(DEVICE_KEYS).str(user).str(device).done(), keys.clone())?;
    }
    for key in &changes.one_time_keys {
        let id = one_time_key(&key.user_id, &key.device_id, &key.key_id);
        // A key id the device holds keeps its stored key.
        if tx.get(&id)?.is_none() {
            tx.insert(id, key.key.clone())?;
        }
    }
    for key in &changes.fallback_keys {
        tx.insert(
            Enc::table(FALLBACK_KEY)
                .str(&key.user_id)
                .str(&key.device_id)
                .str(&key.algorithm)
                .done(),
            encode_fallback(&key.key_id, &key.key, key.used),
        )?;
    }
    for user in &changes.device_list_changes {
        tx.insert(Enc::table(DEVICE_LIST).u64(take()).done(), Enc::default().str(user).done())?;
    }

    // To-device messages.
    for message in &changes.to_device {
        let pos = take();
        tx.insert(
            Enc::table(INBOX).str(&message.user_id).str(&message.device_id).u64(pos).done(),
            Enc::default().str(&message.sender).str(&message.kind).bytes(&message.content).done(),
        )?;
        tx.insert(
            Enc::table(INBOX_LOG).u64(pos).done(),
            Enc::default().str(&message.user_id).str(&message.device_id).done(),
        )?;
    }
    for (user, device, upto) in &changes.to_device_delivered {
        for (key, _) in tx.scan_prefix(&Enc::table(INBOX).str(user).str(device).done())? {
            let pos = inbox_pos(&key)?;
            if pos > upto.0 {
                break;
            }
            tx.remove(key)?;
            tx.remove(Enc::table(INBOX_LOG).u64(pos).done())?;
        }
    }

    // Receipts: each under its key, indexed by (room, position of its last change).
    for key in &changes.deleted_receipts {
        forget_receipt(tx, key)?;
    }
    for receipt in &changes.receipts {
        let pos = take();
        let key = &receipt.key;
        forget_receipt(tx, key)?;
        tx.insert(
            receipt_key(key),
            Enc::default()
                .u64(pos)
                .str(&receipt.event_id)
                .u64(receipt.event_pos.0)
                .u64(receipt.ts)
                .done(),
        )?;
        tx.insert(
            Enc::table(RECEIPT_LOG).str(&key.room_id).u64(pos).done(),
            Enc::default().str(&key.user_id).str(&key.kind).opt_str(key.thread.as_deref()).done(),
        )?;
    }

    // Transaction ids (checked before anything was written: see `check_transaction_ids`).
    for t in &changes.transaction_ids {
        tx.insert(
            txn_key(&t.user_id, &t.device_id, &t.scope, &t.txn_id),
            Enc::default().str(&t.result).done(),
        )?;
    }

    // Aliases and the directory.
    for alias in &changes.aliases {
        forget_alias(tx, &alias.alias)?;
        tx.insert(
            Enc::table(ALIAS).str(&alias.alias).done(),
            Enc::default().str(&alias.room_id).str(&alias.creator).done(),
        )?;
        tx.insert(
            Enc::table(ROOM_ALIAS).str(&alias.room_id).str(&alias.alias).done(),
            Enc::default().str(&alias.creator).done(),
        )?;
    }
    for alias in &changes.deleted_aliases {
        forget_alias(tx, alias)?;
    }
    for (listing, published) in &changes.appservice_directory {
        let key = Enc::table(APPSERVICE_LIST)
            .str(&listing.appservice_id)
            .str(&listing.network_id)
            .str(&listing.room_id)
            .done();
        if *published {
            tx.insert(key, vec![])?;
        } else {
            tx.remove(key)?;
        }
    }
    for (room, published) in &changes.directory {
        let key = Enc::table(PUBLISHED).str(room).done();
        if *published {
            tx.insert(key, vec![])?;
        } else {
            tx.remove(key)?;
        }
    }

    // Small records.
    for (event, redaction) in &changes.redactions {
        tx.insert(Enc::table(REDACTION).str(event).done(), Enc::default().str(redaction).done())?;
    }
    for (user, profile) in &changes.profiles {
        tx.insert(
            Enc::table(PROFILE).str(user).done(),
            Enc::default()
                .opt_str(profile.displayname.as_deref())
                .opt_str(profile.avatar_url.as_deref())
                .done(),
        )?;
    }
    for (user, room, forgotten) in &changes.forgotten {
        let key = Enc::table(FORGOTTEN).str(room).str(user).done();
        if *forgotten {
            tx.insert(key, vec![])?;
        } else {
            tx.remove(key)?;
        }
    }
    Ok(next)
}

/// Deletes what a device held: its device keys, one-time and fallback keys, to-device queue,
/// transaction ids, the signatures on its keys and its dehydrated-device record (its tokens
/// are deleted with the device itself).
fn delete_device(tx: &Tx<'_>, user: &str, device: &str) -> Result<()> {
    tx.remove(Enc::table(DEVICE_KEYS).str(user).str(device).done())?;
    let dehydrated = Enc::table(DEHYDRATED).str(user).done();
    if let Some(value) = tx.get(&dehydrated)?
        && decode_dehydrated(user, &value)?.device_id == device
    {
        tx.remove(dehydrated)?;
    }
    for table in [ONE_TIME_KEY, FALLBACK_KEY, INBOX, CLIENT_TXN, KEY_SIGNATURE] {
        for (key, _) in tx.scan_prefix(&Enc::table(table).str(user).str(device).done())? {
            if table == INBOX {
                tx.remove(Enc::table(INBOX_LOG).u64(inbox_pos(&key)?).done())?;
            }
            tx.remove(key)?;
        }
    }
    Ok(())
}

/// A dehydrated-device record of `user`.
pub(super) fn decode_dehydrated(user: &str, value: &[u8]) -> Result<DehydratedDevice> {
    let read = || {
        let mut dec = Dec::new(value);
        Ok(DehydratedDevice {
            user_id: user.to_owned(),
            device_id: dec.str()?,
            device_data: dec.bytes()?.to_vec(),
        })
    };
    read().map_err(corrupt("dehydrated device"))
}

/// Removes the position of an item of account data and its log entry, if it has them (items
/// written before schema 2 have none).
fn forget_account_data_pos(tx: &Tx<'_>, user: &str, room: Option<&str>, kind: &str) -> Result<()> {
    let key = Enc::table(ACCOUNT_DATA_POS).str(user).opt_str(room).str(kind).done();
    if let Some(old) = tx.remove(key)? {
        let old = Dec::new(&old).u64().map_err(corrupt("account-data position"))?;
        tx.remove(Enc::table(ACCOUNT_DATA_LOG).str(user).u64(old).done())?;
    }
    Ok(())
}

fn receipt_key(key: &ReceiptKey) -> Vec<u8> {
    Enc::table(RECEIPT)
        .str(&key.room_id)
        .str(&key.user_id)
        .str(&key.kind)
        .opt_str(key.thread.as_deref())
        .done()
}

/// Removes a receipt and its log entry, if stored.
fn forget_receipt(tx: &Tx<'_>, key: &ReceiptKey) -> Result<()> {
    if let Some(old) = tx.remove(receipt_key(key))? {
        let old = Dec::new(&old).u64().map_err(corrupt("receipt"))?;
        tx.remove(Enc::table(RECEIPT_LOG).str(&key.room_id).u64(old).done())?;
    }
    Ok(())
}

/// Removes an alias and its room's index entry, if stored.
fn forget_alias(tx: &Tx<'_>, alias: &str) -> Result<()> {
    if let Some(old) = tx.remove(Enc::table(ALIAS).str(alias).done())? {
        let room = Dec::new(&old).str().map_err(corrupt("alias"))?;
        tx.remove(Enc::table(ROOM_ALIAS).str(&room).str(alias).done())?;
    }
    Ok(())
}

/// The key of a one-time key: the key id last and unprefixed, so that the keys of one
/// algorithm (`algorithm:` as a prefix) are together, in key-id order.
fn one_time_key(user: &str, device: &str, key_id: &str) -> Vec<u8> {
    Enc::table(ONE_TIME_KEY).str(user).str(device).tail(key_id).done()
}

fn one_time_key_id(key: &[u8]) -> Result<String> {
    let read = || {
        let mut dec = Dec::new(key).skip_table()?;
        let (_, _) = (dec.str()?, dec.str()?);
        dec.tail()
    };
    read().map_err(corrupt("one-time key"))
}

fn encode_fallback(key_id: &str, key: &[u8], used: bool) -> Vec<u8> {
    Enc::default().str(key_id).bytes(key).bool(used).done()
}

fn decode_fallback(user: &str, device: &str, key: &[u8], value: &[u8]) -> Result<FallbackKey> {
    let read = || {
        let mut dec = Dec::new(key).skip_table()?;
        let (_, _, algorithm) = (dec.str()?, dec.str()?, dec.str()?);
        let mut dec = Dec::new(value);
        Ok(FallbackKey {
            user_id: user.to_owned(),
            device_id: device.to_owned(),
            algorithm,
            key_id: dec.str()?,
            key: dec.bytes()?.to_vec(),
            used: dec.bool()?,
        })
    };
    read().map_err(corrupt("fallback key"))
}

fn inbox_pos(key: &[u8]) -> Result<u64> {
    let read = || {
        let mut dec = Dec::new(key).skip_table()?;
        let (_, _) = (dec.str()?, dec.str()?);
        dec.u64()
    };
    read().map_err(corrupt("to-device message"))
}

fn decode_message(key: &[u8], value: &[u8]) -> Result<ToDeviceMessage> {
    let pos = inbox_pos(key)?;
    let read = || {
        let mut dec = Dec::new(value);
        Ok(ToDeviceMessage {
            pos: StreamPos(pos),
            sender: dec.str()?,
            kind: dec.str()?,
            content: dec.bytes()?.to_vec(),
        })
    };
    read().map_err(corrupt("to-device message"))
}

fn decode_receipt(key: ReceiptKey, value: &[u8]) -> Result<StoredReceipt> {
    let mut dec = Dec::new(value);
    let pos = StreamPos(dec.u64()?);
    let event_id = dec.str()?;
    let event_pos = StreamPos(dec.u64()?);
    Ok(StoredReceipt { pos, receipt: Receipt { key, event_id, event_pos, ts: dec.u64()? } })
}

/// The claim of [`crate::Storage::claim_key`], as buffered writes: the device's first one-time
/// key of `algorithm` (deleted), else its fallback key of it (marked used).
fn claim_in(tx: &Tx<'_>, user: &str, device: &str, algorithm: &str) -> Result<Option<ClaimedKey>> {
    let prefix = one_time_key(user, device, &format!("{algorithm}:"));
    if let Some((key, value)) = tx.first_with_prefix(&prefix)? {
        tx.remove(&key)?;
        let key_id = one_time_key_id(&key)?;
        return Ok(Some(ClaimedKey { key_id, key: value.to_vec(), fallback: false }));
    }
    let id = Enc::table(FALLBACK_KEY).str(user).str(device).str(algorithm).done();
    let Some(value) = tx.get(&id)? else { return Ok(None) };
    let fallback = decode_fallback(user, device, &id, &value)?;
    tx.insert(id, encode_fallback(&fallback.key_id, &fallback.key, true))?;
    Ok(Some(ClaimedKey { key_id: fallback.key_id, key: fallback.key, fallback: true }))
}

impl SledStore {
    /// Claims a key under the writer lock (so that no two claims take one key) and commits the
    /// claim; the receiver says when it is on disk. `None`: nothing to hand out, nothing
    /// written.
    pub(super) fn claim(
        &self,
        user: &str,
        device: &str,
        algorithm: &str,
    ) -> Result<Option<(ClaimedKey, oneshot::Receiver<Result<()>>)>> {
        let next_stream = self
            .writer
            .lock()
            .map_err(|_| StorageError::new(ErrorKind::Unavailable, "a writer panicked"))?;
        let tx = Tx::new(&self.tree);
        let Some(claimed) = claim_in(&tx, user, device, algorithm)? else { return Ok(None) };
        let record = tx.commit(self.flusher.next_seq()?)?;
        // A commit like a change set's, without stream positions.
        let durable = self.flusher.committed(*next_stream - 1, &record)?;
        Ok(Some((claimed, durable)))
    }

    pub(super) fn redaction(&self, event_id: &str) -> Result<Option<String>> {
        self.get(&Enc::table(REDACTION).str(event_id).done())?
            .map(|v| Dec::new(&v).str().map_err(corrupt("redaction")))
            .transpose()
    }

    pub(super) fn is_forgotten(&self, room_id: &str, user_id: &str) -> Result<bool> {
        Ok(self.get(&Enc::table(FORGOTTEN).str(room_id).str(user_id).done())?.is_some())
    }

    pub(super) fn profile_of(&self, user_id: &str) -> Result<Option<Profile>> {
        self.get(&Enc::table(PROFILE).str(user_id).done())?
            .map(|v| {
                let mut dec = Dec::new(&v);
                let mut read =
                    || Ok(Profile { displayname: dec.opt_str()?, avatar_url: dec.opt_str()? });
                read().map_err(corrupt("profile"))
            })
            .transpose()
    }

    pub(super) fn transaction_result(
        &self,
        user_id: &str,
        device_id: &str,
        scope: &str,
        txn_id: &str,
    ) -> Result<Option<String>> {
        self.get(&txn_key(user_id, device_id, scope, txn_id))?
            .map(|v| Dec::new(&v).str().map_err(corrupt("transaction id")))
            .transpose()
    }

    pub(super) fn media_usage_of(&self, user_id: &str) -> Result<u64> {
        match self.get(&Enc::table(MEDIA_USAGE).str(user_id).done())? {
            Some(v) => Dec::new(&v).u64().map_err(corrupt("media quota counter")),
            None => Ok(0),
        }
    }

    pub(super) fn account_data_log(
        &self,
        user_id: &str,
        after: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<AccountDataChange>> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let from = Enc::table(ACCOUNT_DATA_LOG).str(user_id).u64(after.0 + 1).done();
        let to = Enc::table(ACCOUNT_DATA_LOG).str(user_id).u64(upto.0).done();
        let mut changes = BTreeSet::new();
        for entry in self.tree.range(from..=to) {
            let (_, value) = entry.map_err(unavailable)?;
            let mut dec = Dec::new(&value);
            let mut read = || Ok(AccountDataChange { room_id: dec.opt_str()?, kind: dec.str()? });
            changes.insert(read().map_err(corrupt("account-data log entry"))?);
        }
        Ok(changes.into_iter().collect())
    }

    /// The receipt stored under `key`, if any.
    fn receipt(&self, key: ReceiptKey) -> Result<Option<StoredReceipt>> {
        let Some(value) = self.get(&receipt_key(&key))? else { return Ok(None) };
        decode_receipt(key, &value).map_err(corrupt("receipt")).map(Some)
    }
}

#[async_trait]
impl DirectoryStore for SledStore {
    async fn alias(&self, alias: &str) -> Result<Option<Alias>> {
        self.flusher.check()?;
        self.get(&Enc::table(ALIAS).str(alias).done())?
            .map(|v| {
                let mut dec = Dec::new(&v);
                let mut read = || {
                    Ok(Alias { alias: alias.to_owned(), room_id: dec.str()?, creator: dec.str()? })
                };
                read().map_err(corrupt("alias"))
            })
            .transpose()
    }

    async fn room_aliases(&self, room_id: &str) -> Result<Vec<Alias>> {
        self.flusher.check()?;
        let mut aliases = Vec::new();
        for entry in self.scan(Enc::table(ROOM_ALIAS).str(room_id).done()) {
            let (key, value) = entry?;
            let read = || {
                let mut dec = Dec::new(&key).skip_table()?;
                let (_, alias) = (dec.str()?, dec.str()?);
                Ok(Alias { alias, room_id: room_id.to_owned(), creator: Dec::new(&value).str()? })
            };
            aliases.push(read().map_err(corrupt("alias"))?);
        }
        aliases.sort_by(|a, b| a.alias.cmp(&b.alias));
        Ok(aliases)
    }

    async fn published(&self, room_id: &str) -> Result<bool> {
        self.flusher.check()?;
        Ok(self.get(&Enc::table(PUBLISHED).str(room_id).done())?.is_some())
    }

    async fn published_rooms(&self) -> Result<Vec<String>> {
        self.flusher.check()?;
        let mut rooms = Vec::new();
        for entry in self.scan(Enc::table(PUBLISHED).done()) {
            let (key, _) = entry?;
            let room = Dec::new(&key).skip_table().and_then(|mut d| d.str());
            rooms.push(room.map_err(corrupt("directory entry"))?);
        }
        rooms.sort();
        Ok(rooms)
    }

    async fn appservice_listings(&self) -> Result<Vec<AppserviceListing>> {
        self.flusher.check()?;
        let mut listings = Vec::new();
        for entry in self.scan(Enc::table(APPSERVICE_LIST).done()) {
            let (key, _) = entry?;
            let read = || {
                let mut dec = Dec::new(&key).skip_table()?;
                Ok(AppserviceListing {
                    appservice_id: dec.str()?,
                    network_id: dec.str()?,
                    room_id: dec.str()?,
                })
            };
            listings.push(read().map_err(corrupt("application service list entry"))?);
        }
        listings.sort();
        Ok(listings)
    }
}

#[async_trait]
impl E2eeStore for SledStore {
    async fn device_keys(&self, user_id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.flusher.check()?;
        let mut keys = Vec::new();
        for entry in self.scan(Enc::table(DEVICE_KEYS).str(user_id).done()) {
            let (key, value) = entry?;
            let read = || {
                let mut dec = Dec::new(&key).skip_table()?;
                let (_, device) = (dec.str()?, dec.str()?);
                Ok(device)
            };
            keys.push((read().map_err(corrupt("device keys"))?, value.to_vec()));
        }
        keys.sort();
        Ok(keys)
    }

    async fn one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        key_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.flusher.check()?;
        Ok(self.get(&one_time_key(user_id, device_id, key_id))?.map(|v| v.to_vec()))
    }

    async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<BTreeMap<String, u64>> {
        self.flusher.check()?;
        let mut counts = BTreeMap::new();
        for entry in self.scan(Enc::table(ONE_TIME_KEY).str(user_id).str(device_id).done()) {
            let (key, _) = entry?;
            let key_id = one_time_key_id(&key)?;
            let algorithm = key_id.split(':').next().unwrap_or_default();
            *counts.entry(algorithm.to_owned()).or_insert(0) += 1;
        }
        Ok(counts)
    }

    async fn fallback_keys(&self, user_id: &str, device_id: &str) -> Result<Vec<FallbackKey>> {
        self.flusher.check()?;
        let mut keys = Vec::new();
        for entry in self.scan(Enc::table(FALLBACK_KEY).str(user_id).str(device_id).done()) {
            let (key, value) = entry?;
            keys.push(decode_fallback(user_id, device_id, &key, &value)?);
        }
        keys.sort_by(|a, b| a.algorithm.cmp(&b.algorithm));
        Ok(keys)
    }

    async fn device_list_changes(&self, after: StreamPos, upto: StreamPos) -> Result<Vec<String>> {
        self.flusher.check()?;
        if upto <= after {
            return Ok(Vec::new());
        }
        let from = Enc::table(DEVICE_LIST).u64(after.0 + 1).done();
        let to = Enc::table(DEVICE_LIST).u64(upto.0).done();
        let mut users = BTreeSet::new();
        for entry in self.tree.range(from..=to) {
            let (_, value) = entry.map_err(unavailable)?;
            users.insert(Dec::new(&value).str().map_err(corrupt("device-list change"))?);
        }
        Ok(users.into_iter().collect())
    }
}

#[async_trait]
impl InboxStore for SledStore {
    async fn to_device(
        &self,
        user_id: &str,
        device_id: &str,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>> {
        self.flusher.check()?;
        if upto <= after {
            return Ok(Vec::new());
        }
        let from = Enc::table(INBOX).str(user_id).str(device_id).u64(after.0 + 1).done();
        let to = Enc::table(INBOX).str(user_id).str(device_id).u64(upto.0).done();
        let mut messages = Vec::new();
        for entry in self.tree.range(from..=to).take(limit) {
            let (key, value) = entry.map_err(unavailable)?;
            messages.push(decode_message(&key, &value)?);
        }
        Ok(messages)
    }

    async fn to_device_range(
        &self,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<AddressedToDevice>> {
        self.flusher.check()?;
        if upto <= after {
            return Ok(Vec::new());
        }
        let from = Enc::table(INBOX_LOG).u64(after.0 + 1).done();
        let to = Enc::table(INBOX_LOG).u64(upto.0).done();
        let mut messages = Vec::new();
        for entry in self.tree.range(from..=to) {
            if messages.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(unavailable)?;
            let read = || {
                let pos = Dec::new(&key).skip_table()?.u64()?;
                let mut dec = Dec::new(&value);
                Ok((pos, dec.str()?, dec.str()?))
            };
            let (pos, user_id, device_id) = read().map_err(corrupt("to-device log entry"))?;
            let inbox = Enc::table(INBOX).str(&user_id).str(&device_id).u64(pos).done();
            // Written and deleted together with its INBOX entry; one missing was delivered
            // between the two reads.
            let Some(value) = self.tree.get(&inbox).map_err(unavailable)? else { continue };
            let message = decode_message(&inbox, &value)?;
            messages.push(AddressedToDevice { user_id, device_id, message });
        }
        Ok(messages)
    }

    async fn to_device_usage(
        &self,
        user_id: &str,
        device_id: &str,
        sender: &str,
    ) -> Result<ToDeviceUsage> {
        self.flusher.check()?;
        let mut usage = ToDeviceUsage::default();
        for entry in self.scan(Enc::table(INBOX).str(user_id).str(device_id).done()) {
            let (key, value) = entry?;
            usage.count(&decode_message(&key, &value)?, sender);
        }
        Ok(usage)
    }
}

#[async_trait]
impl ReceiptStore for SledStore {
    async fn receipts(
        &self,
        room_id: &str,
        after: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<StoredReceipt>> {
        self.flusher.check()?;
        if upto <= after {
            return Ok(Vec::new());
        }
        let from = Enc::table(RECEIPT_LOG).str(room_id).u64(after.0 + 1).done();
        let to = Enc::table(RECEIPT_LOG).str(room_id).u64(upto.0).done();
        let mut receipts = Vec::new();
        for entry in self.tree.range(from..=to) {
            let (key, value) = entry.map_err(unavailable)?;
            let read = || {
                let mut dec = Dec::new(&key).skip_table()?;
                let (_, pos) = (dec.str()?, dec.u64()?);
                let mut dec = Dec::new(&value);
                let key = ReceiptKey {
                    room_id: room_id.to_owned(),
                    user_id: dec.str()?,
                    kind: dec.str()?,
                    thread: dec.opt_str()?,
                };
                Ok((pos, key))
            };
            let (pos, key) = read().map_err(corrupt("receipt log entry"))?;
            // A receipt replaced or deleted since this entry was read (by a write after the
            // caller's position) is skipped: its new position is past `upto`.
            if let Some(receipt) = self.receipt(key)?
                && receipt.pos.0 == pos
            {
                receipts.push(receipt);
            }
        }
        Ok(receipts)
    }

    async fn user_receipts(&self, room_id: &str, user_id: &str) -> Result<Vec<StoredReceipt>> {
        self.flusher.check()?;
        let mut keys = Vec::new();
        for entry in self.scan(Enc::table(RECEIPT).str(room_id).str(user_id).done()) {
            let (key, _) = entry?;
            let read = || {
                let mut dec = Dec::new(&key).skip_table()?;
                let (room_id, user_id) = (dec.str()?, dec.str()?);
                Ok(ReceiptKey { room_id, user_id, kind: dec.str()?, thread: dec.opt_str()? })
            };
            keys.push(read().map_err(corrupt("receipt"))?);
        }
        keys.sort();
        let mut receipts = Vec::new();
        for key in keys {
            receipts.extend(self.receipt(key)?);
        }
        Ok(receipts)
    }
}
