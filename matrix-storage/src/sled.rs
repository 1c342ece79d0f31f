//! The embedded store: the default, one directory, nothing else to run; on sled, or on fjall
//! (feature `fjall`, opened with `FjallOptions`) through the small engine layer of
//! `sled/engine.rs`, everything else being the same code.
//!
//! Everything lives in one ordered tree under table-prefixed keys, so a change set is one atomic
//! batch. **Durability:** a change set is applied to the tree as one atomic batch under a writer
//! lock (reads see the change set's own pending writes; no sled transaction is needed, and those
//! cost several times more), and its writes go as one record to a write-ahead log of our own
//! (`sled/wal.rs`); [`Storage::apply`] returns once that record is synced to disk, so an
//! acknowledged change set survives a crash. **Group commit:** one flusher thread appends the
//! records of every change set committed since its last append and syncs once for all of them. The
//! engine itself is flushed only at checkpoints (every 2 s, or past 64 MiB of log), after which the
//! log's older segments are deleted; at open, the records the engine does not hold yet are applied
//! again. [`Storage::apply_ordered`] answers once the batch is applied, so a caller's own lock (a
//! room's) need not be held across the sync. A failed sync stops the store (fail-stop): what it
//! covered was applied in memory but is not known to be on disk, so nothing more is served or
//! acknowledged until a restart recovers the log. **Stream order:** the next position is kept under
//! the writer lock, so positions follow commit order; timeline events, account-data writes,
//! device-list changes, to-device messages and receipts all take theirs from it. At open it is
//! found again from the last stream entry, or from the META `stream_head` entry that a change set
//! handing out other positions writes (their entries can be deleted), whichever is higher.
//! [`RoomStore::stream_position`] is the stream head of the last successful log sync: a reader
//! never passes a position that is not yet committed, nor one that is not yet on disk (which a
//! crash could lose, and whose position would then be handed out again). **Key claims**
//! ([`Storage::claim_key`]) take the writer lock too, so no key is handed out twice, and are
//! flushed like a change set before they return. **State snapshots** are the layered records of
//! `layers.rs`, with `(type, state_key)` and event ids interned to `u64` (`sled/snapshots.rs`); a
//! read touches at most 8 records.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

mod auth_chain;
mod backfill;
mod backup;
mod batch;
mod domains;
mod engine;
mod flusher;
mod listing;
mod media;
mod moderation;
mod presence;
mod purge;
mod push;
mod records;
mod registration_tokens;
mod relations;
mod scheduled;
mod search;
mod snapshots;
mod user_data;
mod user_directory;
mod wal;

use self::batch::Tx;
use self::engine::{Engine, EngineError, Journal, Tree};
use self::flusher::Flusher;
use self::records::{
    decode_event, decode_room, decode_user, encode_event, encode_room, encode_user,
};
use crate::codec::{Dec, Enc};
use crate::layers::LayerCache;
use crate::{
    AccountDataChange, AccountDataItem, AccountDataStore, AccountStore, Applied, AuthChainEntry,
    BackfillItem, BackfillPos, ChangeSet, ClaimedKey, DehydratedDevice, Device, Direction,
    ErrorKind, EventStore, KeyStore, Media, MediaStore, OurKey, OutboundItem, PendingMedia,
    Profile, QuarantineChange, QueueStore, RemoteKey, Result, RetryState, RoomInfo, RoomStore,
    SnapshotId, SnapshotRef, StateEntry, StateStore, Storage, StorageError, StoredEvent,
    StreamItem, StreamPos, TokenOwner, User,
};

/// The schema this code writes and reads. 2 added the tables from [`DEVICE_KEYS`] on and the
/// [`STREAM_HEAD`] counter; 3 the layered snapshot records (the chained records of 1 and 2
/// are still read). An older store is marked 3 at open (its new tables start empty). The
/// tables from [`CROSS_SIGNING_KEY`] on came later without a new number: nothing stored
/// changes meaning, and a store written before them simply has none.
const SCHEMA: u64 = 3;

// Tables (the first byte of every key).
const META: u8 = b'M';
const EVENT: u8 = b'E';
const SNAPSHOT: u8 = b'S';
const KEY_ID: u8 = b'K';
const KEY_OF: u8 = b'k';
const EVENT_NID: u8 = b'N';
const EVENT_OF: u8 = b'n';
const ROOM: u8 = b'R';
const MEMBER: u8 = b'm';
const USER_ROOM: u8 = b'u';
const STREAM: u8 = b'T';
const TIMELINE: u8 = b't';
const USER: u8 = b'U';
const DEVICE: u8 = b'D';
const TOKEN: u8 = b'O';
const DEVICE_TOKEN: u8 = b'o';
const OUR_KEY: u8 = b'Y';
const REMOTE_KEY: u8 = b'y';
const TXN: u8 = b'X';
const QUEUE: u8 = b'Q';
const RETRY: u8 = b'Z';
const ACCOUNT_DATA: u8 = b'A';
const MEDIA: u8 = b'F';
// Schema 2 (read and written in `domains`).
const DEVICE_KEYS: u8 = b'V';
const ONE_TIME_KEY: u8 = b'W';
const FALLBACK_KEY: u8 = b'w';
const DEVICE_LIST: u8 = b'L';
const INBOX: u8 = b'I';
const RECEIPT: u8 = b'C';
const RECEIPT_LOG: u8 = b'c';
const CLIENT_TXN: u8 = b'x';
const ALIAS: u8 = b'H';
const ROOM_ALIAS: u8 = b'h';
const PUBLISHED: u8 = b'p';
const REDACTION: u8 = b'r';
const PROFILE: u8 = b'P';
const FORGOTTEN: u8 = b'f';
const MEDIA_USAGE: u8 = b'G';
const ACCOUNT_DATA_POS: u8 = b'a';
const ACCOUNT_DATA_LOG: u8 = b'b';
// Schema 3, later (read and written in `user_data`; a store written before has none).
const CROSS_SIGNING_KEY: u8 = b'J';
const KEY_SIGNATURE: u8 = b'j';
const BACKUP_VERSION: u8 = b'B';
const BACKUP_SESSION: u8 = b'e';
const PUSHER: u8 = b'g';
const PUSHER_KEY: u8 = b'd';
// Backfilled history (read and written in `backfill`; a store written before has none).
const BACKFILL: u8 = b'z';
const BACKFILL_OF: u8 = b'q';
// Rooms' auth-chain indexes (read and written in `auth_chain`; a store written before has
// none).
const AUTH_CHAIN: u8 = b'i';
// Presence (read and written in `presence`; a store written before has none).
const PRESENCE: u8 = b's';
// Media ids created and not uploaded yet, by id and by creator (read and written in
// `media`; a store written before has none).
const PENDING_MEDIA: u8 = b'l';
const PENDING_MEDIA_OF: u8 = b'v';
// Dehydrated devices (read and written in `domains`; a store written before has none;
// the letters are all taken).
const DEHYDRATED: u8 = b'0';
// OpenID tokens, and delayed events by owner and by send time (read and written in
// `scheduled`; a store written before has none).
const OPENID: u8 = b':';
const DELAYED: u8 = b';';
const DELAYED_DUE: u8 = b'<';
// The relations index (read and written in `relations`; a store written before has none: the
// homeserver indexes the events stored before at start).
const RELATION: u8 = b'3';
const THREAD_REPLY: u8 = b'4';
const RELATION_OF: u8 = b'#';
// The user directory: entries by user, rooms whose join rule is public (read and written in
// `user_directory`; a store written before has none).
const USER_DIRECTORY: u8 = b'5';
const PUBLIC_JOIN_ROOM: u8 = b'6';
/// Search postings `(token, room, position)` -> count, and the indexed events by position
/// (see `search`).
const SEARCH: u8 = b'8';
const SEARCH_DOC: u8 = b'9';
/// Content reports by id.
const REPORT: u8 = b'&';
// Notifications and pushers' delivery cursors (read and written in `push`; a store written
// before has none).
const NOTIFICATION: u8 = b'1';
const NOTIFICATION_ROOM: u8 = b'2';
const PUSH_STATE: u8 = b'!';
/// Application services' delivery cursors by service id (read and written in `push`; a
/// store written before has none).
const APPSERVICE_CURSOR: u8 = b'=';

/// Rooms in application services' room lists, `(service, network, room)` (read and written
/// in `domains`; a store written before has none).
const APPSERVICE_LIST: u8 = b'>';
/// The to-device messages by position -> `(user, device)` of their INBOX entry (read and
/// written in `domains`; filled from INBOX once when a store written before is opened, see
/// [`index_inbox`]).
const INBOX_LOG: u8 = b'?';
/// Registration tokens by token (read and written in `registration_tokens`; a store written
/// before has none).
const REGISTRATION_TOKEN: u8 = b'@';
/// Administrators' decisions about users (`u` user) and their tokens acting as users (`t`
/// token hash) (read and written in `moderation`; a store written before has none).
const MODERATION: u8 = b'~';
/// Media records by uploader and by content hash (read and written in `media`; built from
/// the records when a store written before is opened, see `media::index_media`).
const MEDIA_INDEX: u8 = b'^';

/// Every table, to check that no two share a byte.
#[cfg(test)]
#[rustfmt::skip]
const TABLES: [u8; 73] = [
    META, EVENT, SNAPSHOT, KEY_ID, KEY_OF, EVENT_NID, EVENT_OF, ROOM, MEMBER, USER_ROOM, STREAM,
    TIMELINE, USER, DEVICE, TOKEN, DEVICE_TOKEN, OUR_KEY, REMOTE_KEY, TXN, QUEUE, RETRY,
    ACCOUNT_DATA, MEDIA, DEVICE_KEYS, ONE_TIME_KEY, FALLBACK_KEY, DEVICE_LIST, INBOX, RECEIPT,
    RECEIPT_LOG, CLIENT_TXN, ALIAS, ROOM_ALIAS, PUBLISHED, REDACTION, PROFILE, FORGOTTEN,
    MEDIA_USAGE, ACCOUNT_DATA_POS, ACCOUNT_DATA_LOG, CROSS_SIGNING_KEY, KEY_SIGNATURE,
    BACKUP_VERSION, BACKUP_SESSION, PUSHER, PUSHER_KEY, BACKFILL, BACKFILL_OF, AUTH_CHAIN,
    PRESENCE, PENDING_MEDIA, PENDING_MEDIA_OF, DEHYDRATED, OPENID, DELAYED, DELAYED_DUE, RELATION,
    THREAD_REPLY, RELATION_OF, USER_DIRECTORY, PUBLIC_JOIN_ROOM, SEARCH, SEARCH_DOC, REPORT,
    NOTIFICATION, NOTIFICATION_ROOM, PUSH_STATE, APPSERVICE_CURSOR, INBOX_LOG,
    APPSERVICE_LIST, REGISTRATION_TOKEN, MODERATION, MEDIA_INDEX,
];

/// The fjall keyspace of a store in `path` and its one partition (block cache of
/// `cache_bytes`, else fjall's default); the journal is synced only when asked.
#[cfg(feature = "fjall")]
fn open_fjall(
    path: &Path,
    cache_bytes: Option<u64>,
) -> Result<(::fjall::Keyspace, ::fjall::PartitionHandle)> {
    let mut config = ::fjall::Config::new(path.join("fjall")).manual_journal_persist(true);
    if let Some(bytes) = cache_bytes {
        config = config.cache_size(bytes);
    }
    let keyspace = config.open().map_err(unavailable)?;
    let partition = keyspace
        .open_partition("matrix", ::fjall::PartitionCreateOptions::default())
        .map_err(unavailable)?;
    Ok((keyspace, partition))
}

/// The META entry holding the last stream position handed out to something other than a
/// timeline event (whose entries can be deleted, unlike the STREAM table's).
const STREAM_HEAD: &str = "stream_head";

/// Options of the sled backend.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SledOptions {
    /// sled's page cache, in bytes.
    pub cache_capacity: u64,
    /// How many decoded state entries the snapshot cache keeps (about 50 bytes each, plus the
    /// names they share), and how many key and event names.
    pub snapshot_cache_entries: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions { cache_capacity: 64 * 1024 * 1024, snapshot_cache_entries: 1 << 20 }
    }
}

/// The options of an engine the embedded store runs on: [`SledOptions`], or `FjallOptions`
/// (feature `fjall`). The options a store is opened with pick its engine.
pub trait EngineOptions: private::Sealed {
    #[doc(hidden)]
    fn engine(&self) -> EngineChoice<'_>;
}

mod private {
    pub trait Sealed {}
    impl Sealed for super::SledOptions {}
    #[cfg(feature = "fjall")]
    impl Sealed for super::FjallOptions {}
}

/// Which engine, with its options (for [`EngineOptions`]; not for use outside this crate).
#[doc(hidden)]
#[derive(Debug)]
pub enum EngineChoice<'a> {
    Sled(&'a SledOptions),
    #[cfg(feature = "fjall")]
    Fjall(&'a FjallOptions),
}

impl EngineOptions for SledOptions {
    fn engine(&self) -> EngineChoice<'_> {
        EngineChoice::Sled(self)
    }
}

/// Options of the fjall engine (an LSM tree; feature `fjall`): the embedded store's tables on
/// fjall instead of sled, for write-heavy servers (see the crate's README for the numbers).
#[cfg(feature = "fjall")]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FjallOptions {
    /// fjall's block cache, in bytes.
    pub cache_capacity: u64,
    /// How many decoded state entries the snapshot cache keeps, as [`SledOptions`]'s.
    pub snapshot_cache_entries: u64,
}

#[cfg(feature = "fjall")]
impl Default for FjallOptions {
    fn default() -> Self {
        FjallOptions { cache_capacity: 64 * 1024 * 1024, snapshot_cache_entries: 1 << 20 }
    }
}

#[cfg(feature = "fjall")]
impl EngineOptions for FjallOptions {
    fn engine(&self) -> EngineChoice<'_> {
        EngineChoice::Fjall(self)
    }
}

/// The embedded store, on sled (with [`SledOptions`]) or fjall (with `FjallOptions`).
#[derive(Debug, Clone)]
pub struct SledStore {
    tree: Tree,
    /// One change set at a time, which makes stream positions follow commit order; it holds
    /// the next stream position.
    writer: Arc<std::sync::Mutex<u64>>,
    /// Group commit: flushes for every writer committed before the flush began.
    flusher: Arc<Flusher>,
    snapshots: Arc<LayerCache>,
    /// The engine, for a flush outside the flusher's (a copy).
    engine: Engine,
    /// fjall's directory lock (sled locks its directory itself).
    _lock: Option<Arc<std::fs::File>>,
}

fn unavailable(error: impl Into<EngineError>) -> StorageError {
    match error.into() {
        EngineError::Sled(
            error @ (::sled::Error::Corruption { .. } | ::sled::Error::Unsupported(_)),
        ) => StorageError::with_source(ErrorKind::Corrupt, "the sled store is corrupt", error),
        EngineError::Sled(other) => {
            StorageError::with_source(ErrorKind::Unavailable, "sled failed", other)
        }
        #[cfg(feature = "fjall")]
        EngineError::Fjall(
            error @ (::fjall::Error::Decode(_)
            | ::fjall::Error::InvalidVersion(_)
            | ::fjall::Error::JournalRecovery(_)),
        ) => StorageError::with_source(ErrorKind::Corrupt, "the fjall store is corrupt", error),
        #[cfg(feature = "fjall")]
        EngineError::Fjall(other) => {
            StorageError::with_source(ErrorKind::Unavailable, "fjall failed", other)
        }
    }
}

/// An error opening the store: one naming the other process when the directory is locked.
fn opening(path: &Path, error: ::sled::Error) -> StorageError {
    match &error {
        ::sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StorageError::with_source(
                ErrorKind::Locked,
                format!(
                    "the sled store in {} is in use by another process (a homeserver already \
                     running on this data directory?); stop it first",
                    path.display()
                ),
                error,
            )
        }
        _ => unavailable(error),
    }
}

/// Opens the write-ahead log in `dir` and applies again, in order, the records the engine
/// does not hold on disk (a crash came between their sync and the next checkpoint); answers
/// the log and the last sequence applied.
fn recover(engine: &Engine, tree: &Tree, dir: &Path) -> Result<(wal::Wal, u64)> {
    let held = match tree.get(meta(wal::SEQ_KEY)).map_err(unavailable)? {
        Some(value) => u64_of(&value)?,
        None => 0,
    };
    let (mut log, records) = wal::Wal::open(dir, |last| last.unwrap_or(0).max(held) + 1)?;
    let mut seq = held;
    for (record_seq, ops) in records {
        if record_seq <= held {
            continue;
        }
        tree.apply(ops.into_iter().map(|(key, value)| (key, value.map(::sled::IVec::from))))
            .map_err(unavailable)?;
        seq = record_seq;
    }
    if seq > held {
        engine.flush()?;
        log.checkpoint(seq, seq + 1)?;
    }
    Ok((log, seq))
}

/// Marks a new store with [`SCHEMA`], and an older one too once it is read as this version
/// reads it; refuses a newer one. `flush` makes the mark durable.
fn check_schema(tree: &Tree, flush: impl FnOnce() -> Result<()>) -> Result<()> {
    let mark = || -> Result<()> {
        let value = ::sled::IVec::from(Enc::default().u64(SCHEMA).done());
        tree.apply([(meta("schema"), Some(value))]).map_err(unavailable)?;
        flush()
    };
    match tree.get(meta("schema")).map_err(unavailable)? {
        None => mark(),
        Some(version) => {
            let version = u64_of(&version)?;
            if version > SCHEMA {
                return Err(StorageError::new(
                    ErrorKind::Corrupt,
                    format!(
                        "the store was written by a newer version (schema {version}, this reads {SCHEMA})"
                    ),
                ));
            }
            // 1 to 2: nothing to convert, the new tables start empty; 2 to 3: chained
            // snapshot records are read as they are. Marked, so that an older version (which
            // would not know the new stream positions, nor read layered records) refuses the
            // store from now on.
            if version < SCHEMA { mark() } else { Ok(()) }
        }
    }
}

/// The META entry saying that [`INBOX_LOG`] indexes every INBOX entry.
const INBOX_LOG_BUILT: &str = "inbox_log";

/// Fills [`INBOX_LOG`] from the INBOX entries of a store written before it existed, once
/// (marked in META); `flush` makes it durable.
fn index_inbox(tree: &Tree, flush: impl FnOnce() -> Result<()>) -> Result<()> {
    if tree.get(meta(INBOX_LOG_BUILT)).map_err(unavailable)?.is_some() {
        return Ok(());
    }
    let mut ops: Vec<(Vec<u8>, Option<::sled::IVec>)> = Vec::new();
    for entry in tree.scan_prefix([INBOX]) {
        let (key, _) = entry.map_err(unavailable)?;
        let mut dec = Dec::new(&key).skip_table()?;
        let (user, device, pos) = (dec.str()?, dec.str()?, dec.u64()?);
        let value = Enc::default().str(&user).str(&device).done();
        ops.push((Enc::table(INBOX_LOG).u64(pos).done(), Some(::sled::IVec::from(value))));
    }
    ops.push((meta(INBOX_LOG_BUILT), Some(::sled::IVec::from(&b""[..]))));
    tree.apply(ops).map_err(unavailable)?;
    flush()
}

pub(super) fn meta(name: &str) -> Vec<u8> {
    Enc::table(META).str(name).done()
}

fn u64_of(bytes: &[u8]) -> Result<u64> {
    Dec::new(bytes).u64()
}

impl SledStore {
    /// Opens (or creates) the store in `path`, on the engine `options` are for. A store
    /// written by a newer schema, or files the engine cannot read, are an error of kind
    /// [`ErrorKind::Corrupt`]; a directory another process has open, one of kind
    /// [`ErrorKind::Locked`] that says so.
    pub fn open(path: impl AsRef<Path>, options: &impl EngineOptions) -> Result<Self> {
        let path = path.as_ref();
        let (tree, engine, cache_entries, lock) = match options.engine() {
            EngineChoice::Sled(options) => {
                let db = ::sled::Config::new()
                    .path(path)
                    .cache_capacity(options.cache_capacity)
                    // Durability comes from the write-ahead log; sled is flushed at checkpoints.
                    .flush_every_ms(None)
                    .open()
                    .map_err(|e| opening(path, e))?;
                let tree = Tree::Sled(db.open_tree("matrix").map_err(unavailable)?);
                (tree, Engine::Sled(db), options.snapshot_cache_entries, None)
            }
            #[cfg(feature = "fjall")]
            EngineChoice::Fjall(options) => {
                let lock = engine::lock_dir(path)?;
                // Durability comes from the write-ahead log; fjall's journal is synced at
                // checkpoints.
                let (keyspace, partition) = open_fjall(path, Some(options.cache_capacity))?;
                let tree = Tree::Fjall { keyspace: keyspace.clone(), partition };
                let engine = Engine::Fjall(keyspace);
                (tree, engine, options.snapshot_cache_entries, Some(Arc::new(lock)))
            }
        };
        check_schema(&tree, || engine.flush())?;
        let (wal, seq) = recover(&engine, &tree, &path.join("wal"))?;
        index_inbox(&tree, || engine.flush())?;
        media::index_media(&tree, || engine.flush())?;
        push::index_counts(&tree, || engine.flush())?;
        let journal = Journal { engine: engine.clone(), wal };
        // The head is the last position in the stream table, or the counter of the other
        // positions if that is higher (kept in memory from here on, so that an append writes
        // no counter).
        let stream_head = backup::stream_head(&tree)?;
        Ok(SledStore {
            tree,
            writer: Arc::new(std::sync::Mutex::new(stream_head + 1)),
            flusher: Arc::new(Flusher::start(journal, stream_head, seq)?),
            snapshots: Arc::new(LayerCache::new(cache_entries)),
            engine,
            _lock: lock,
        })
    }

    /// Copies everything this store holds into a new store in `path` on the engine `options`
    /// are for (sled to fjall, or back: the tables are the same on both), and makes it durable;
    /// answers how many entries it copied. The store in `path` must be empty. Writes to this
    /// store wait until the copy is done, so that it is one consistent state.
    pub fn copy_to(&self, path: impl AsRef<Path>, options: &impl EngineOptions) -> Result<u64> {
        let target = SledStore::open(path, options)?;
        let marks = [
            meta("schema"),
            meta(INBOX_LOG_BUILT),
            meta(media::MEDIA_INDEX_BUILT),
            meta(push::COUNTS_INDEXED),
        ];
        if target
            .tree
            .range(..)
            .any(|entry| entry.is_ok_and(|(key, _)| !marks.contains(&key.to_vec())))
        {
            return Err(StorageError::new(
                ErrorKind::Conflict,
                "the store to copy into is not empty; copy into a new directory",
            ));
        }
        let _writer = self
            .writer
            .lock()
            .map_err(|_| StorageError::new(ErrorKind::Unavailable, "a writer panicked"))?;
        self.flusher.check()?;
        let mut copied = 0u64;
        let mut batch = Vec::new();
        let own_log = meta(wal::SEQ_KEY);
        for entry in self.tree.range(..) {
            let (key, value) = entry.map_err(unavailable)?;
            // Where this store's log stands means nothing to the target's log.
            if key == own_log {
                continue;
            }
            batch.push((key.to_vec(), Some(value)));
            if batch.len() == 4096 {
                copied += batch.len() as u64;
                target.tree.apply(std::mem::take(&mut batch)).map_err(unavailable)?;
            }
        }
        copied += batch.len() as u64;
        target.tree.apply(batch).map_err(unavailable)?;
        // Written past the target's own log: made durable here, before the answer.
        target.engine.flush()?;
        Ok(copied)
    }

    fn get(&self, key: &[u8]) -> Result<Option<::sled::IVec>> {
        self.tree.get(key).map_err(unavailable)
    }

    fn scan(
        &self,
        prefix: Vec<u8>,
    ) -> impl DoubleEndedIterator<Item = Result<(::sled::IVec, ::sled::IVec)>> + use<> {
        self.tree.scan_prefix(prefix).map(|r| r.map_err(unavailable))
    }

    /// Under `prefix` (a table and one string), the second key string and the string value of
    /// each entry, sorted.
    fn pairs(&self, prefix: Vec<u8>) -> Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        for entry in self.scan(prefix) {
            let (key, value) = entry?;
            let mut dec = Dec::new(&key).skip_table()?;
            let (_, second) = (dec.str()?, dec.str()?);
            pairs.push((second, Dec::new(&value).str()?));
        }
        pairs.sort();
        Ok(pairs)
    }

    fn key_name(&self, key: u64) -> Result<(String, String)> {
        let value = self.get(&Enc::table(KEY_OF).u64(key).done())?.ok_or_else(dangling)?;
        let mut dec = Dec::new(&value);
        Ok((dec.str()?, dec.str()?))
    }

    fn event_name(&self, nid: u64) -> Result<String> {
        let value = self.get(&Enc::table(EVENT_OF).u64(nid).done())?.ok_or_else(dangling)?;
        Dec::new(&value).str()
    }
}

fn dangling() -> StorageError {
    StorageError::new(ErrorKind::Corrupt, "a stored reference points nowhere")
}

/// Reads and bumps a counter in the change set; returns the value before.
fn bump(tx: &Tx<'_>, name: &str, by: u64, start: u64) -> Result<u64> {
    let current = match tx.get(meta(name))? {
        Some(v) => u64_of(&v)?,
        None => start,
    };
    tx.insert(meta(name), Enc::default().u64(current + by).done())?;
    Ok(current)
}

/// The interned id of a `(type, state_key)`, made if new.
fn intern_key(tx: &Tx<'_>, kind: &str, state_key: &str) -> Result<u64> {
    let key = Enc::table(KEY_ID).str(kind).str(state_key).done();
    if let Some(v) = tx.get(&key)? {
        return u64_of(&v);
    }
    let id = bump(tx, "next_key", 1, 1)?;
    tx.insert(key, Enc::default().u64(id).done())?;
    tx.insert(Enc::table(KEY_OF).u64(id).done(), Enc::default().str(kind).str(state_key).done())?;
    Ok(id)
}

/// The interned id of an event id, made if new.
fn intern_event(tx: &Tx<'_>, event_id: &str) -> Result<u64> {
    let key = Enc::table(EVENT_NID).str(event_id).done();
    if let Some(v) = tx.get(&key)? {
        return u64_of(&v);
    }
    let id = bump(tx, "next_event", 1, 1)?;
    tx.insert(key, Enc::default().u64(id).done())?;
    tx.insert(Enc::table(EVENT_OF).u64(id).done(), Enc::default().str(event_id).done())?;
    Ok(id)
}

fn missing<T>(what: String) -> Result<T> {
    Err(StorageError::new(ErrorKind::MissingReference, what))
}

/// The whole change set, as buffered writes.
/// `next_stream` is the first free stream position.
fn apply_in(
    tx: &Tx<'_>,
    cache: &LayerCache,
    changes: &ChangeSet,
    next_stream: u64,
) -> Result<Applied> {
    let mut applied = Applied::default();

    if let Some(new) = &changes.snapshot {
        applied.snapshot = Some(snapshots::write(tx, new)?);
    }
    let resolve = |r: &SnapshotRef| -> Result<SnapshotId> {
        match r {
            SnapshotRef::New => match applied.snapshot {
                Some(id) => Ok(id),
                None => missing("the change set's new snapshot".to_owned()),
            },
            SnapshotRef::Existing(id) => match snapshots::exists(tx, cache, id.0)? {
                true => Ok(*id),
                false => missing(format!("snapshot {}", id.0)),
            },
        }
    };

    // Rooms.
    for room in &changes.rooms {
        let key = Enc::table(ROOM).str(&room.room_id).done();
        let existing = tx.get(&key)?;
        let mut info = match (existing, &room.create_with_version) {
            (Some(_), Some(_)) => {
                return Err(StorageError::new(
                    ErrorKind::Conflict,
                    format!("room {} exists", room.room_id),
                ));
            }
            (None, Some(version)) => RoomInfo {
                version: version.clone(),
                current_state: None,
                forward_extremities: Vec::new(),
            },
            (Some(bytes), None) => decode_room(&bytes)?,
            (None, None) => return missing(format!("room {}", room.room_id)),
        };
        if let Some(expected) = &room.expected
            && !expected.matches(info.current_state, &info.forward_extremities)
        {
            return Err(StorageError::new(
                ErrorKind::Conflict,
                format!("room {} changed since it was read", room.room_id),
            ));
        }
        if let Some(state) = &room.current_state {
            info.current_state = Some(resolve(state)?);
        }
        if let Some(extremities) = &room.forward_extremities {
            let sorted: BTreeSet<&String> = extremities.iter().collect();
            info.forward_extremities = sorted.into_iter().cloned().collect();
        }
        tx.insert(key, encode_room(&info))?;
        for (user, membership) in &room.memberships {
            let value = Enc::default().str(membership).done();
            tx.insert(Enc::table(MEMBER).str(&room.room_id).str(user).done(), value.clone())?;
            tx.insert(Enc::table(USER_ROOM).str(user).str(&room.room_id).done(), value)?;
        }
    }

    // Events, with stream positions in order.
    let mut next_pos = next_stream;
    for event in &changes.events {
        let stream = if event.in_timeline {
            let pos = next_pos;
            next_pos += 1;
            tx.insert(
                Enc::table(STREAM).u64(pos).done(),
                Enc::default().str(&event.room_id).str(&event.event_id).done(),
            )?;
            tx.insert(
                Enc::table(TIMELINE).str(&event.room_id).u64(pos).done(),
                Enc::default().str(&event.event_id).done(),
            )?;
            applied.stream.push(StreamPos(pos));
            Some(StreamPos(pos))
        } else {
            None
        };
        let state_after = match &event.state_after {
            Some(r) => Some(resolve(r)?),
            None => None,
        };
        let stored = event.clone().into_stored(stream, state_after);
        tx.insert(Enc::table(EVENT).str(&event.event_id).done(), encode_event(&stored))?;
    }
    backfill::write(tx, changes)?;

    // Accounts.
    for user in &changes.new_users {
        let key = Enc::table(USER).str(&user.user_id).done();
        if tx.get(&key)?.is_some() {
            return Err(StorageError::new(
                ErrorKind::Conflict,
                format!("user {} exists", user.user_id),
            ));
        }
        tx.insert(key, encode_user(user))?;
    }
    for user in &changes.updated_users {
        let key = Enc::table(USER).str(&user.user_id).done();
        if tx.get(&key)?.is_none() {
            return missing(format!("user {}", user.user_id));
        }
        tx.insert(key, encode_user(user))?;
    }
    for device in &changes.devices {
        tx.insert(
            Enc::table(DEVICE).str(&device.user_id).str(&device.device_id).done(),
            Enc::default().opt_str(device.display_name.as_deref()).done(),
        )?;
    }
    for (token, owner) in &changes.new_tokens {
        // A token given to another device leaves its old device's index.
        delete_token(tx, token)?;
        tx.insert(
            Enc::table(TOKEN).str(token).done(),
            Enc::default().str(&owner.user_id).str(&owner.device_id).done(),
        )?;
        // Indexed by device too, so deleting a device finds its tokens.
        tx.insert(
            Enc::table(DEVICE_TOKEN).str(&owner.user_id).str(&owner.device_id).str(token).done(),
            vec![],
        )?;
    }
    for token in &changes.deleted_tokens {
        delete_token(tx, token)?;
    }
    for (user, device) in &changes.deleted_devices {
        tx.remove(Enc::table(DEVICE).str(user).str(device).done())?;
        // Its tokens are found before applying and removed there.
    }

    // Keys.
    for key in &changes.our_keys {
        tx.insert(
            Enc::table(OUR_KEY).str(&key.key_id).done(),
            Enc::default()
                .str(&key.seed)
                .bool(key.expired_ts.is_some())
                .i64(key.expired_ts.unwrap_or(0))
                .done(),
        )?;
    }
    for key in &changes.remote_keys {
        tx.insert(
            Enc::table(REMOTE_KEY).str(&key.server).str(&key.key_id).done(),
            Enc::default().str(&key.public_key).i64(key.valid_until_ts).done(),
        )?;
    }

    // Federation queues.
    for (origin, txn) in &changes.seen_transactions {
        tx.insert(Enc::table(TXN).str(origin).str(txn).done(), vec![])?;
    }
    for (destination, payload) in &changes.enqueue {
        let id = bump(tx, &format!("queue/{destination}"), 1, 1)?;
        tx.insert(Enc::table(QUEUE).str(destination).u64(id).done(), payload.to_vec())?;
        applied.enqueued.push(id);
    }
    for (destination, retry) in &changes.retries {
        let key = Enc::table(RETRY).str(destination).done();
        match retry {
            Some(r) => {
                tx.insert(
                    key,
                    Enc::default().u64(u64::from(r.failures)).i64(r.retry_after_ts).done(),
                )?;
            }
            None => {
                tx.remove(key)?;
            }
        }
    }

    // Media (account data is written in `domains`, with its stream positions).
    media::apply_in(tx, changes)?;
    Ok(applied)
}

fn delete_token(tx: &Tx<'_>, token: &str) -> Result<()> {
    if let Some(owner) = tx.remove(Enc::table(TOKEN).str(token).done())? {
        let mut dec = Dec::new(&owner);
        let (user, device) = (dec.str()?, dec.str()?);
        tx.remove(Enc::table(DEVICE_TOKEN).str(&user).str(&device).str(token).done())?;
    }
    Ok(())
}

#[async_trait]
impl Storage for SledStore {
    fn backend(&self) -> &'static str {
        self.engine.name()
    }

    async fn apply(&self, changes: ChangeSet) -> Result<Applied> {
        self.flusher.check()?;
        let (applied, durable) = self.commit(&changes)?;
        on_disk(durable).await.map(|()| applied)
    }

    /// Answers once the batch is applied to the tree (the writer lock is free again), with
    /// the wait for the log's sync; a failed sync stops the store, so nothing built on the
    /// change set meanwhile is ever acknowledged either.
    async fn apply_ordered(&self, changes: ChangeSet) -> Result<(Applied, crate::Durable)> {
        self.flusher.check()?;
        let (applied, durable) = self.commit(&changes)?;
        Ok((applied, Box::pin(on_disk(durable))))
    }

    /// On a thread of its own (it reads the whole store): see `SledStore::backup_to`.
    async fn backup(&self, dir: &Path) -> Result<crate::StoreSummary> {
        let (send, receive) = tokio::sync::oneshot::channel();
        let (store, dir) = (self.clone(), dir.to_owned());
        std::thread::Builder::new()
            .name("sled-backup".into())
            .spawn(move || {
                let _ = send.send(store.backup_to(&dir));
            })
            .map_err(|e| {
                StorageError::with_source(ErrorKind::Unavailable, "cannot start the backup", e)
            })?;
        receive
            .await
            .map_err(|_| StorageError::new(ErrorKind::Unavailable, "the backup thread panicked"))?
    }

    async fn summary(&self) -> Result<crate::StoreSummary> {
        let (send, receive) = tokio::sync::oneshot::channel();
        let store = self.clone();
        std::thread::Builder::new()
            .name("sled-summary".into())
            .spawn(move || {
                let _ = send.send(store.summarize());
            })
            .map_err(|e| {
                StorageError::with_source(ErrorKind::Unavailable, "cannot start the summary", e)
            })?;
        receive
            .await
            .map_err(|_| StorageError::new(ErrorKind::Unavailable, "the summary thread panicked"))?
    }

    async fn purge_room(&self, room_id: &str) -> Result<Vec<String>> {
        self.flusher.check()?;
        let (purged, durable) = self.purge(room_id)?;
        on_disk(durable).await.map(|()| purged)
    }

    async fn purge_events(&self, room_id: &str, event_ids: &[String]) -> Result<usize> {
        self.flusher.check()?;
        let (purged, durable) = self.purge_some(room_id, event_ids)?;
        on_disk(durable).await.map(|()| purged)
    }

    async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<ClaimedKey>> {
        self.flusher.check()?;
        match self.claim(user_id, device_id, algorithm)? {
            Some((claimed, durable)) => on_disk(durable).await.map(|()| Some(claimed)),
            None => Ok(None),
        }
    }
}

/// Waits for the flusher to say a commit is on disk.
async fn on_disk(durable: tokio::sync::oneshot::Receiver<Result<()>>) -> Result<()> {
    match durable.await {
        Ok(result) => result,
        Err(_) => Err(StorageError::new(ErrorKind::Unavailable, "the flusher stopped")),
    }
}

impl SledStore {
    /// Commits a change set; the receiver says when it is on disk.
    fn commit(
        &self,
        changes: &ChangeSet,
    ) -> Result<(Applied, tokio::sync::oneshot::Receiver<Result<()>>)> {
        let mut next_stream = self
            .writer
            .lock()
            .map_err(|_| StorageError::new(ErrorKind::Unavailable, "a writer panicked"))?;
        // Scans, done first: the tokens of deleted devices and the
        // queue entries acknowledged. Both are only ever removed, so reading them early is safe.
        let mut tokens: Vec<(String, &str, &str)> = Vec::new();
        for (user, device) in &changes.deleted_devices {
            for entry in self.scan(Enc::table(DEVICE_TOKEN).str(user).str(device).done()) {
                let (key, _) = entry?;
                let mut dec = Dec::new(&key).skip_table()?;
                let (_, _, token) = (dec.str()?, dec.str()?, dec.str()?);
                tokens.push((token, user, device));
            }
        }
        let mut acknowledged: Vec<::sled::IVec> = Vec::new();
        for (destination, upto) in &changes.acknowledge {
            for entry in self.scan(Enc::table(QUEUE).str(destination).done()) {
                let (key, _) = entry?;
                let mut dec = Dec::new(&key).skip_table()?;
                let (_, id) = (dec.str()?, dec.u64()?);
                if id > *upto {
                    break;
                }
                acknowledged.push(key);
            }
        }
        let tx = Tx::new(&self.tree);
        domains::check_transaction_ids(&tx, changes)?;
        media::check(&tx, changes)?;
        auth_chain::check(&tx, changes)?;
        let mut applied = apply_in(&tx, &self.snapshots, changes, *next_stream)?;
        // The other positions follow the change set's events.
        let after_events = *next_stream + applied.stream.len() as u64;
        let next = domains::apply_in(&tx, changes, after_events)?;
        user_data::apply_in(&tx, changes, &mut applied)?;
        presence::apply_in(&tx, changes)?;
        scheduled::apply_in(&tx, changes)?;
        registration_tokens::apply_in(&tx, changes)?;
        moderation::apply_in(&tx, changes)?;
        user_directory::apply_in(&tx, changes)?;
        search::apply_in(&tx, changes, &applied)?;
        push::apply_in(&tx, changes)?;
        auth_chain::write(&tx, changes)?;
        relations::write(&tx, changes)?;
        if next > after_events {
            tx.insert(meta(STREAM_HEAD), Enc::default().u64(next - 1).done())?;
        }
        for (token, user, device) in &tokens {
            // Only if the token still belongs to the deleted device.
            let owner = tx.get(Enc::table(TOKEN).str(token).done())?;
            let current = Enc::default().str(user).str(device).done();
            if owner.is_some_and(|o| o[..] == current[..]) {
                delete_token(&tx, token)?;
            }
        }
        for key in &acknowledged {
            tx.remove(key)?;
        }
        let record = tx.commit(self.flusher.next_seq()?)?;
        // Numbered under the writer lock, so that numbers follow commit order.
        *next_stream = next;
        let durable = self.flusher.committed(*next_stream - 1, &record)?;
        Ok((applied, durable))
    }
}

#[async_trait]
impl EventStore for SledStore {
    async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        self.flusher.check()?;
        self.get(&Enc::table(EVENT).str(event_id).done())?
            .map(|v| decode_event(event_id, &v))
            .transpose()
    }

    async fn auth_chain(&self, event_ids: &[&str]) -> Result<Vec<String>> {
        self.flusher.check()?;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut stack: Vec<String> = Vec::new();
        for id in event_ids {
            if let Some(event) = self.event(id).await? {
                stack.extend(event.auth_events);
            }
        }
        while let Some(id) = stack.pop() {
            if seen.insert(id.clone())
                && let Some(event) = self.event(&id).await?
            {
                stack.extend(event.auth_events);
            }
        }
        Ok(seen.into_iter().collect())
    }

    async fn redaction_of(&self, event_id: &str) -> Result<Option<String>> {
        self.flusher.check()?;
        self.redaction(event_id)
    }

    async fn events(&self, event_ids: &[&str]) -> Result<Vec<StoredEvent>> {
        self.flusher.check()?;
        self.events_among(event_ids)
    }

    async fn auth_chain_index(
        &self,
        room_id: &str,
        from: u32,
        limit: usize,
    ) -> Result<Vec<AuthChainEntry>> {
        self.flusher.check()?;
        self.auth_chain_range(room_id, from, limit)
    }
}

#[async_trait]
impl StateStore for SledStore {
    async fn state_get(
        &self,
        snapshot: SnapshotId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<String>> {
        self.flusher.check()?;
        self.lookup(snapshot.0, kind, state_key)
    }

    async fn state_full(&self, snapshot: SnapshotId) -> Result<Vec<StateEntry>> {
        self.flusher.check()?;
        self.full_state(snapshot.0)
    }
}

#[async_trait]
impl RoomStore for SledStore {
    async fn room(&self, room_id: &str) -> Result<Option<RoomInfo>> {
        self.flusher.check()?;
        self.get(&Enc::table(ROOM).str(room_id).done())?.map(|v| decode_room(&v)).transpose()
    }

    async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>> {
        self.flusher.check()?;
        self.get(&Enc::table(MEMBER).str(room_id).str(user_id).done())?
            .map(|v| Dec::new(&v).str())
            .transpose()
    }

    async fn rooms_of_user(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        self.flusher.check()?;
        self.pairs(Enc::table(USER_ROOM).str(user_id).done())
    }

    async fn members(&self, room_id: &str) -> Result<Vec<(String, String)>> {
        self.flusher.check()?;
        self.pairs(Enc::table(MEMBER).str(room_id).done())
    }

    async fn stream_position(&self) -> Result<StreamPos> {
        self.flusher.check()?;
        Ok(StreamPos(self.flusher.durable_stream()))
    }

    async fn forgotten(&self, room_id: &str, user_id: &str) -> Result<bool> {
        self.flusher.check()?;
        self.is_forgotten(room_id, user_id)
    }

    async fn stream_range(
        &self,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<StreamItem>> {
        self.flusher.check()?;
        if upto <= after {
            return Ok(Vec::new());
        }
        let from = Enc::table(STREAM).u64(after.0 + 1).done();
        let to = Enc::table(STREAM).u64(upto.0).done();
        let mut items = Vec::new();
        for entry in self.tree.range(from..=to).take(limit) {
            let (key, value) = entry.map_err(unavailable)?;
            let pos = Dec::new(&key).skip_table()?.u64()?;
            let mut dec = Dec::new(&value);
            items.push(StreamItem {
                pos: StreamPos(pos),
                room_id: dec.str()?,
                event_id: dec.str()?,
            });
        }
        Ok(items)
    }

    async fn timeline(
        &self,
        room_id: &str,
        from: StreamPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<StreamItem>> {
        self.flusher.check()?;
        let start = Enc::table(TIMELINE).str(room_id).u64(0).done();
        let end = Enc::table(TIMELINE).str(room_id).u64(u64::MAX).done();
        let at = Enc::table(TIMELINE).str(room_id).u64(from.0).done();
        let item = |entry: engine::Entry| -> Result<StreamItem> {
            let (key, value) = entry.map_err(unavailable)?;
            let mut dec = Dec::new(&key).skip_table()?;
            let (_, pos) = (dec.str()?, dec.u64()?);
            Ok(StreamItem {
                pos: StreamPos(pos),
                room_id: room_id.to_owned(),
                event_id: Dec::new(&value).str()?,
            })
        };
        match direction {
            Direction::Backwards => {
                self.tree.range(start..at).rev().take(limit).map(item).collect()
            }
            Direction::Forwards => {
                let after = Enc::table(TIMELINE).str(room_id).u64(from.0.saturating_add(1)).done();
                self.tree.range(after..=end).take(limit).map(item).collect()
            }
        }
    }

    async fn backfilled(
        &self,
        room_id: &str,
        from: BackfillPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<BackfillItem>> {
        self.flusher.check()?;
        self.backfill_range(room_id, from, direction, limit)
    }

    async fn backfill_position(&self, event_id: &str) -> Result<Option<BackfillPos>> {
        self.flusher.check()?;
        self.backfill_pos(event_id)
    }

    async fn room_ids(&self, after: &str, limit: usize) -> Result<Vec<String>> {
        self.flusher.check()?;
        listing::room_ids(self, after, limit)
    }
}

#[async_trait]
impl AccountStore for SledStore {
    async fn users(&self, after: &str, limit: usize) -> Result<Vec<User>> {
        self.flusher.check()?;
        listing::users(self, after, limit)
    }
    async fn user(&self, user_id: &str) -> Result<Option<User>> {
        self.flusher.check()?;
        self.get(&Enc::table(USER).str(user_id).done())?
            .map(|v| decode_user(user_id, &v))
            .transpose()
    }
    async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>> {
        self.flusher.check()?;
        self.get(&Enc::table(DEVICE).str(user_id).str(device_id).done())?
            .map(|v| {
                Ok(Device {
                    user_id: user_id.to_owned(),
                    device_id: device_id.to_owned(),
                    display_name: Dec::new(&v).opt_str()?,
                })
            })
            .transpose()
    }
    async fn devices(&self, user_id: &str) -> Result<Vec<Device>> {
        self.flusher.check()?;
        let mut devices = Vec::new();
        for entry in self.scan(Enc::table(DEVICE).str(user_id).done()) {
            let (key, value) = entry?;
            let mut dec = Dec::new(&key).skip_table()?;
            let (_, device_id) = (dec.str()?, dec.str()?);
            devices.push(Device {
                user_id: user_id.to_owned(),
                device_id,
                display_name: Dec::new(&value).opt_str()?,
            });
        }
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(devices)
    }
    async fn token(&self, token: &str) -> Result<Option<TokenOwner>> {
        self.flusher.check()?;
        self.get(&Enc::table(TOKEN).str(token).done())?
            .map(|v| {
                let mut dec = Dec::new(&v);
                Ok(TokenOwner { user_id: dec.str()?, device_id: dec.str()? })
            })
            .transpose()
    }
    async fn profile(&self, user_id: &str) -> Result<Option<Profile>> {
        self.flusher.check()?;
        self.profile_of(user_id)
    }
    async fn dehydrated_device(&self, user_id: &str) -> Result<Option<DehydratedDevice>> {
        self.flusher.check()?;
        self.get(&Enc::table(DEHYDRATED).str(user_id).done())?
            .map(|v| domains::decode_dehydrated(user_id, &v))
            .transpose()
    }
    async fn transaction_id(
        &self,
        user_id: &str,
        device_id: &str,
        scope: &str,
        txn_id: &str,
    ) -> Result<Option<String>> {
        self.flusher.check()?;
        self.transaction_result(user_id, device_id, scope, txn_id)
    }
}

#[async_trait]
impl KeyStore for SledStore {
    async fn our_keys(&self) -> Result<Vec<OurKey>> {
        self.flusher.check()?;
        let mut keys = Vec::new();
        for entry in self.scan(Enc::table(OUR_KEY).done()) {
            let (key, value) = entry?;
            let key_id = Dec::new(&key).skip_table()?.str()?;
            let mut dec = Dec::new(&value);
            let seed = dec.str()?;
            let expired = dec.bool()?;
            let ts = dec.i64()?;
            keys.push(OurKey { key_id, seed, expired_ts: expired.then_some(ts) });
        }
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        Ok(keys)
    }
    async fn remote_key(&self, server: &str, key_id: &str) -> Result<Option<RemoteKey>> {
        self.flusher.check()?;
        self.get(&Enc::table(REMOTE_KEY).str(server).str(key_id).done())?
            .map(|v| {
                let mut dec = Dec::new(&v);
                Ok(RemoteKey {
                    server: server.to_owned(),
                    key_id: key_id.to_owned(),
                    public_key: dec.str()?,
                    valid_until_ts: dec.i64()?,
                })
            })
            .transpose()
    }
}

#[async_trait]
impl QueueStore for SledStore {
    async fn transaction_seen(&self, origin: &str, txn_id: &str) -> Result<bool> {
        self.flusher.check()?;
        Ok(self.get(&Enc::table(TXN).str(origin).str(txn_id).done())?.is_some())
    }
    async fn outbound(&self, destination: &str, limit: usize) -> Result<Vec<OutboundItem>> {
        self.flusher.check()?;
        let mut items = Vec::new();
        for entry in self.scan(Enc::table(QUEUE).str(destination).done()).take(limit) {
            let (key, value) = entry?;
            let mut dec = Dec::new(&key).skip_table()?;
            let (_, id) = (dec.str()?, dec.u64()?);
            items.push(OutboundItem { id, payload: Arc::from(&value[..]) });
        }
        Ok(items)
    }
    async fn outbound_destinations(&self) -> Result<Vec<String>> {
        self.flusher.check()?;
        // Keys are the table, the destination (length-prefixed) and the item id: after the
        // first key of a destination, skip past all of its keys (the largest id is all ones).
        let mut destinations = Vec::new();
        let mut from = Enc::table(QUEUE).done();
        let end = Enc::table(QUEUE + 1).done();
        loop {
            let Some(entry) = self.tree.range(from..end.clone()).next() else { break };
            let (key, _) = entry.map_err(unavailable)?;
            let destination = Dec::new(&key).skip_table()?.str()?;
            from = Enc::table(QUEUE).str(&destination).u64(u64::MAX).raw(&[0]).done();
            destinations.push(destination);
        }
        // Keys sort by the destination's length first.
        destinations.sort_unstable();
        Ok(destinations)
    }
    async fn retry(&self, destination: &str) -> Result<Option<RetryState>> {
        self.flusher.check()?;
        self.get(&Enc::table(RETRY).str(destination).done())?
            .map(|v| {
                let mut dec = Dec::new(&v);
                let failures = u32::try_from(dec.u64()?).map_err(|_| dangling())?;
                Ok(RetryState { failures, retry_after_ts: dec.i64()? })
            })
            .transpose()
    }
}

#[async_trait]
impl AccountDataStore for SledStore {
    async fn account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.flusher.check()?;
        Ok(self
            .get(&Enc::table(ACCOUNT_DATA).str(user_id).opt_str(room_id).str(kind).done())?
            .map(|v| v.to_vec()))
    }
    async fn all_account_data(&self, user_id: &str) -> Result<Vec<AccountDataItem>> {
        self.flusher.check()?;
        let mut items = Vec::new();
        for entry in self.scan(Enc::table(ACCOUNT_DATA).str(user_id).done()) {
            let (key, value) = entry?;
            let mut dec = Dec::new(&key).skip_table()?;
            let _user = dec.str()?;
            let room_id = dec.opt_str()?;
            let kind = dec.str()?;
            items.push(AccountDataItem { room_id, kind, content: value.to_vec() });
        }
        items.sort_by(|a, b| (&a.room_id, &a.kind).cmp(&(&b.room_id, &b.kind)));
        Ok(items)
    }
    async fn account_data_changes(
        &self,
        user_id: &str,
        after: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<AccountDataChange>> {
        self.flusher.check()?;
        self.account_data_log(user_id, after, upto)
    }
}

#[async_trait]
impl crate::RelationStore for SledStore {
    async fn relations(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: Option<&str>,
        from: StreamPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<crate::Relation>> {
        self.flusher.check()?;
        self.relations_of(room_id, parent, rel_type, from, direction, limit)
    }

    async fn relation_summary(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: &str,
        upto: StreamPos,
        sender: &str,
    ) -> Result<crate::RelationSummary> {
        self.flusher.check()?;
        self.summary_of(room_id, parent, rel_type, upto, sender)
    }

    async fn thread_replies(
        &self,
        room_id: &str,
        from: StreamPos,
        limit: usize,
    ) -> Result<Vec<crate::Relation>> {
        self.flusher.check()?;
        self.thread_replies_of(room_id, from, limit)
    }

    async fn relation_of(&self, event_id: &str) -> Result<Option<crate::Relation>> {
        self.flusher.check()?;
        self.relation_record(event_id)
    }
}

#[async_trait]
impl MediaStore for SledStore {
    async fn media(&self, media_id: &str) -> Result<Option<Media>> {
        self.flusher.check()?;
        self.media_record(media_id)
    }
    async fn media_usage(&self, user_id: &str) -> Result<u64> {
        self.flusher.check()?;
        self.media_usage_of(user_id)
    }
    async fn pending_media(&self, media_id: &str) -> Result<Option<PendingMedia>> {
        self.flusher.check()?;
        self.pending_media_record(media_id)
    }
    async fn pending_media_of(&self, user_id: &str) -> Result<Vec<PendingMedia>> {
        self.flusher.check()?;
        self.pending_media_records_of(user_id)
    }
    async fn media_rows(&self, after: &str, limit: usize) -> Result<Vec<Media>> {
        self.flusher.check()?;
        self.media_records(after, limit)
    }
    async fn media_of(&self, uploader: &str, after: &str, limit: usize) -> Result<Vec<Media>> {
        self.flusher.check()?;
        self.media_records_of(uploader, after, limit)
    }
    async fn media_with_content(
        &self,
        sha256: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Media>> {
        self.flusher.check()?;
        self.media_records_with(sha256, after, limit)
    }
    async fn quarantine_changes(&self, after: u64, limit: usize) -> Result<Vec<QuarantineChange>> {
        self.flusher.check()?;
        self.quarantine_change_records(after, limit)
    }
    async fn last_quarantine_change(&self) -> Result<u64> {
        self.flusher.check()?;
        self.last_quarantine_change_id()
    }
}

#[cfg(test)]
mod tests;
