//! The ordered key-value engine under the embedded store: sled (the default), or fjall (an
//! LSM tree, behind the `fjall` feature). The store's tables, records, stream and snapshot
//! code is the same on both; only these few operations, and how a commit becomes durable,
//! differ.
//!
//! **Durability** is the same on both: our write-ahead log (`wal.rs`) makes a commit durable,
//! and the engine is flushed to disk at checkpoints only, after which the log drops what the
//! engine holds. (fjall's own journal could serve as the log, but fjall holds the journal's
//! lock while it syncs it, so no commit could be made during a sync and group commit would
//! not group; our log is synced without stopping commits.)

use std::ops::RangeBounds;
#[cfg(feature = "fjall")]
use std::path::Path;

use ::sled::IVec;

use super::wal::Wal;
use crate::Result;
#[cfg(feature = "fjall")]
use crate::{ErrorKind, StorageError};

/// An engine's error, for [`super::unavailable`].
#[derive(Debug)]
pub(super) enum EngineError {
    Sled(::sled::Error),
    #[cfg(feature = "fjall")]
    Fjall(::fjall::Error),
}

impl From<::sled::Error> for EngineError {
    fn from(error: ::sled::Error) -> Self {
        EngineError::Sled(error)
    }
}

#[cfg(feature = "fjall")]
impl From<::fjall::Error> for EngineError {
    fn from(error: ::fjall::Error) -> Self {
        EngineError::Fjall(error)
    }
}

/// An entry read from the tree.
pub(super) type Entry = std::result::Result<(IVec, IVec), EngineError>;

/// Entries in key order, from either end.
pub(super) type Entries = Box<dyn DoubleEndedIterator<Item = Entry>>;

/// The one ordered tree the store keeps its tables in.
#[derive(Clone)]
pub(super) enum Tree {
    Sled(::sled::Tree),
    #[cfg(feature = "fjall")]
    Fjall {
        keyspace: ::fjall::Keyspace,
        partition: ::fjall::PartitionHandle,
    },
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tree::Sled(_) => "Tree::Sled",
            #[cfg(feature = "fjall")]
            Tree::Fjall { .. } => "Tree::Fjall",
        })
    }
}

#[cfg(feature = "fjall")]
fn entries_of_fjall(
    iter: impl DoubleEndedIterator<Item = ::fjall::Result<::fjall::KvPair>> + 'static,
) -> Entries {
    Box::new(iter.map(|entry| {
        entry.map(|(k, v)| (IVec::from(&k[..]), IVec::from(&v[..]))).map_err(EngineError::from)
    }))
}

impl Tree {
    /// The value at `key`.
    pub(super) fn get(
        &self,
        key: impl AsRef<[u8]>,
    ) -> std::result::Result<Option<IVec>, EngineError> {
        match self {
            Tree::Sled(tree) => Ok(tree.get(key)?),
            #[cfg(feature = "fjall")]
            Tree::Fjall { partition, .. } => {
                Ok(partition.get(key)?.map(|value| IVec::from(&value[..])))
            }
        }
    }

    /// The entries with keys in `range`, in key order.
    pub(super) fn range<R: RangeBounds<Vec<u8>> + 'static>(&self, range: R) -> Entries {
        match self {
            Tree::Sled(tree) => Box::new(tree.range(range).map(|e| e.map_err(EngineError::from))),
            #[cfg(feature = "fjall")]
            Tree::Fjall { partition, .. } => entries_of_fjall(partition.range(range)),
        }
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub(super) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Entries {
        match self {
            Tree::Sled(tree) => {
                Box::new(tree.scan_prefix(prefix).map(|e| e.map_err(EngineError::from)))
            }
            #[cfg(feature = "fjall")]
            Tree::Fjall { partition, .. } => entries_of_fjall(partition.prefix(prefix.as_ref())),
        }
    }

    /// Applies writes (a value, or `None` to remove the key) atomically: all are visible to
    /// readers at once, and a crash keeps all or none of them (on sled, once a checkpoint or
    /// the log replay has them).
    pub(super) fn apply(
        &self,
        writes: impl IntoIterator<Item = (Vec<u8>, Option<IVec>)>,
    ) -> std::result::Result<(), EngineError> {
        match self {
            Tree::Sled(tree) => {
                let mut batch = ::sled::Batch::default();
                for (key, value) in writes {
                    match value {
                        Some(value) => batch.insert(key, value),
                        None => batch.remove(key),
                    }
                }
                Ok(tree.apply_batch(batch)?)
            }
            #[cfg(feature = "fjall")]
            Tree::Fjall { keyspace, partition } => {
                let mut batch = keyspace.batch();
                for (key, value) in writes {
                    match value {
                        Some(value) => batch.insert(partition, key, &value[..]),
                        None => batch.remove(partition, key),
                    }
                }
                Ok(batch.commit()?)
            }
        }
    }
}

/// The engine, for writing out to disk what it holds in memory.
#[derive(Clone)]
pub(super) enum Engine {
    Sled(::sled::Db),
    #[cfg(feature = "fjall")]
    Fjall(::fjall::Keyspace),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Sled(_) => "Engine::Sled",
            #[cfg(feature = "fjall")]
            Engine::Fjall(_) => "Engine::Fjall",
        })
    }
}

impl Engine {
    /// The engine's name, which is the backend's.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Engine::Sled(_) => "sled",
            #[cfg(feature = "fjall")]
            Engine::Fjall(_) => "fjall",
        }
    }

    /// Writes everything applied so far to disk.
    pub(super) fn flush(&self) -> Result<()> {
        match self {
            Engine::Sled(db) => db.flush().map(drop).map_err(super::unavailable),
            #[cfg(feature = "fjall")]
            Engine::Fjall(keyspace) => {
                keyspace.persist(::fjall::PersistMode::SyncAll).map_err(super::unavailable)
            }
        }
    }
}

/// How the flusher makes commits durable: our log, over the engine it checkpoints.
pub(super) struct Journal {
    pub(super) engine: Engine,
    pub(super) wal: Wal,
}

impl Journal {
    /// Appends the log records of the commits since the last sync, and syncs the log.
    pub(super) fn sync(&mut self, records: &[u8]) -> Result<()> {
        self.wal.append(records)
    }

    /// Log written since the last checkpoint, in bytes.
    pub(super) fn pending(&self) -> u64 {
        self.wal.written()
    }

    /// Flushes the engine, which then holds every commit up to log sequence `durable` on disk,
    /// and lets the log drop what it holds.
    pub(super) fn checkpoint(&mut self, durable: u64) -> Result<()> {
        self.engine.flush()?;
        self.wal.checkpoint(durable, durable + 1)
    }
}

/// Takes an exclusive lock on `dir/LOCK` for as long as the returned file is open, so that a
/// second process cannot open the same store (fjall does not lock its directory itself).
#[cfg(feature = "fjall")]
pub(super) fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StorageError::with_source(ErrorKind::Unavailable, "cannot make the store's directory", e)
    })?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(|e| {
            StorageError::with_source(ErrorKind::Unavailable, "cannot open the store's lock", e)
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::new(
            ErrorKind::Locked,
            format!(
                "the store in {} is in use by another process (a homeserver already running on \
                 this data directory?); stop it first",
                dir.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError::with_source(
            ErrorKind::Unavailable,
            "cannot lock the store's directory",
            e,
        )),
    }
}
