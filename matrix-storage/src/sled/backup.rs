//! Online backup of the embedded store: a consistent copy while writes go on.
//!
//! Neither sled nor our use of fjall offers a snapshot to copy from, and holding the writer
//! lock for the whole copy would stall every write for its length. So: **tap, copy, replay.**
//! (1) The flusher starts keeping a copy of the write-ahead log record of every change set
//! committed from then on (each record is that change set's writes to the tree, in full).
//! (2) The tree is copied, in key order, into a new store, without any lock; writes go on,
//! so the copy may see a key before or after a change, or not see a key made meanwhile.
//! Every such key is written by a recorded change set. The recorded records are moved to a
//! file now and then, so memory stays bounded. (3) Under the writer lock (a few microseconds:
//! no commit runs), the tap ends and the stream head is read. (4) The recorded change sets
//! are applied again to the copy, in commit order. Writes are puts and removals of whole
//! values, so each key ends as its last recorded write left it, or, if no recorded change
//! set wrote it, as it was all along, which is what the copy read: the copy is the store as
//! it stood at (3), between two change sets.
//!
//! **The copy is a fjall store**, whatever this store's engine (when the `fjall` feature is
//! on, as in the reference binary): fjall's bulk load writes sorted entries straight into its
//! table files, several times faster than inserting them, and the copy's time is the
//! backup's. A restore onto sled moves it there ([`SledStore::copy_to`]). Without the
//! feature, the copy is a sled store, filled by batches of inserts.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::engine::Tree;
use super::{EVENT, ROOM, STREAM, STREAM_HEAD, SledStore, meta, unavailable, wal};
use crate::codec::Dec;
use crate::{ErrorKind, Result, StorageError, StoreSummary, state_hash};

/// The file the recorded change sets wait in, inside the copy's directory, until the copy
/// is done.
const TAIL: &str = "backup-tail.log";

/// Entries per batch written to the copy.
const BATCH: usize = 4096;

fn io(what: &str, error: std::io::Error) -> StorageError {
    StorageError::with_source(ErrorKind::Unavailable, format!("backup: {what}"), error)
}

impl SledStore {
    /// The engine's name: `sled` or `fjall`.
    pub fn engine_name(&self) -> &'static str {
        match self.tree {
            Tree::Sled(_) => "sled",
            #[cfg(feature = "fjall")]
            Tree::Fjall { .. } => "fjall",
        }
    }

    /// Makes a consistent copy of this store in `dir` (new, or an empty directory) while it
    /// serves reads and writes (see the module's docs), blocking; answers the summary of the
    /// copy. Writes are stalled only for the moment the tap ends.
    pub fn backup_to(&self, dir: impl AsRef<Path>) -> Result<StoreSummary> {
        let dir = dir.as_ref();
        crate::backup::check_empty(dir)?;
        self.flusher.check()?;
        // One backup at a time (a second one is refused here, and leaves the first's tap
        // alone); from here on the tap is this backup's, ended whatever happens.
        self.flusher.start_tap()?;
        let copied = self.copy_with_tail(dir);
        let ended = self.flusher.drain_tap(true);
        let (target, last) = copied?;
        ended?;
        let tail_path = dir.join(TAIL);
        let file = std::fs::File::open(&tail_path)
            .map_err(|e| io("cannot read back the recorded writes", e))?;
        replay_file(&target, std::io::BufReader::new(file))?;
        replay(&target, &last)?;
        std::fs::remove_file(&tail_path).map_err(|e| io("cannot remove the recorded writes", e))?;
        target.engine.flush()?;
        target.summarize()
    }

    /// Steps (2) and (3), the tap running: copies the tree into a new store in `dir`,
    /// spilling the recorded change sets to a file there, and ends the tap under the writer
    /// lock; answers the copy and the records taken at the end (not in the file).
    fn copy_with_tail(&self, dir: &Path) -> Result<(SledStore, Vec<u8>)> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot make the copy's directory", e))?;
        let mut tail = std::fs::File::create(dir.join(TAIL))
            .map_err(|e| io("cannot make the file of recorded writes", e))?;
        // The copy reads the tree in key order, one page at a time: on a store whose pages
        // are not in memory, it waits on the disk for each. Readers going through the same
        // ranges alongside bring the pages in several at once; they read, the copy keeps.
        let ranges = read_ahead_ranges(&self.tree)?;
        let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
        let target = std::thread::scope(|scope| {
            for _ in 0..READERS {
                scope.spawn(|| read_ahead(&self.tree, &ranges, &next, &stop));
            }
            let copied = self.copy_tree(dir, &mut tail);
            stop.store(true, Ordering::Relaxed);
            copied
        })?;
        tail.flush().map_err(|e| io("cannot record writes", e))?;
        let _writer = self
            .writer
            .lock()
            .map_err(|_| StorageError::new(ErrorKind::Unavailable, "a writer panicked"))?;
        let last = self.flusher.drain_tap(true)?;
        Ok((target, last))
    }

    /// Step (2): every entry of the tree but the store's own log sequence, in key order, into
    /// a new fjall store in `dir` (whatever this store's engine) by fjall's bulk load, which
    /// writes sorted entries straight into its table files: several times faster than
    /// inserting them one by one, into sled or fjall. Every [`BATCH`] entries, the change sets
    /// recorded meanwhile are moved to `tail`. Answers the copy, opened.
    #[cfg(feature = "fjall")]
    fn copy_tree(&self, dir: &Path, tail: &mut std::fs::File) -> Result<SledStore> {
        {
            let (keyspace, partition) = super::open_fjall(dir, None)?;
            let own_log = meta(wal::SEQ_KEY);
            let mut source = self.tree.range(..);
            let mut failed = None;
            let mut copied = 0usize;
            // Ends early, keeping the error, if a read or a spill fails.
            let entries = std::iter::from_fn(|| {
                loop {
                    let (key, value) = match source.next()? {
                        Ok(entry) => entry,
                        Err(error) => {
                            failed = Some(unavailable(error));
                            return None;
                        }
                    };
                    if key == own_log {
                        continue;
                    }
                    copied += 1;
                    if copied.is_multiple_of(BATCH) {
                        let spilled = self.flusher.drain_tap(false).and_then(|records| {
                            tail.write_all(&records).map_err(|e| io("cannot record writes", e))
                        });
                        if let Err(error) = spilled {
                            failed = Some(error);
                            return None;
                        }
                    }
                    return Some((key.to_vec(), value.to_vec()));
                }
            });
            // The source is a sorted map (strictly increasing keys) and the partition is new,
            // as the bulk load requires.
            partition.ingest(entries).map_err(unavailable)?;
            if let Some(error) = failed {
                return Err(error);
            }
            keyspace.persist(::fjall::PersistMode::SyncAll).map_err(unavailable)?;
        }
        SledStore::open(dir, &super::FjallOptions::default())
    }

    /// Step (2) without fjall: every entry of the tree but the store's own log sequence into
    /// a new sled store in `dir`, [`BATCH`] at a time, moving the change sets recorded
    /// meanwhile to `tail` after each batch. Answers the copy.
    #[cfg(not(feature = "fjall"))]
    fn copy_tree(&self, dir: &Path, tail: &mut std::fs::File) -> Result<SledStore> {
        let target = SledStore::open(dir, &super::SledOptions::default())?;
        let own_log = meta(wal::SEQ_KEY);
        let mut batch = Vec::with_capacity(BATCH);
        for entry in self.tree.range(..) {
            let (key, value) = entry.map_err(unavailable)?;
            if key == own_log {
                continue;
            }
            batch.push((key.to_vec(), Some(value)));
            if batch.len() == BATCH {
                target.tree.apply(std::mem::take(&mut batch)).map_err(unavailable)?;
                let records = self.flusher.drain_tap(false)?;
                tail.write_all(&records).map_err(|e| io("cannot record writes", e))?;
            }
        }
        target.tree.apply(batch).map_err(unavailable)?;
        Ok(target)
    }

    /// What a backup records of this store: its stream head, its events, and each room's
    /// current state hashed (blocking; reads every room's state).
    pub fn summarize(&self) -> Result<StoreSummary> {
        self.flusher.check()?;
        let mut summary = StoreSummary::new(self.engine_name());
        summary.stream_position = stream_head(&self.tree)?;
        for entry in self.tree.scan_prefix([EVENT]) {
            entry.map_err(unavailable)?;
            summary.events += 1;
        }
        for entry in self.tree.scan_prefix([ROOM]) {
            let (key, value) = entry.map_err(unavailable)?;
            let room_id = Dec::new(&key).skip_table()?.str()?;
            let info = super::decode_room(&value)?;
            let state = match info.current_state {
                Some(snapshot) => self.full_state(snapshot.0)?,
                None => Vec::new(),
            };
            summary.rooms.insert(room_id, state_hash(&state));
        }
        Ok(summary)
    }
}

/// The stream head a store's tree holds: the last timeline position, or the counter of the
/// other positions if that is higher.
pub(super) fn stream_head(tree: &Tree) -> Result<u64> {
    let timeline_head = match tree.scan_prefix([STREAM]).next_back() {
        Some(entry) => Dec::new(&entry.map_err(unavailable)?.0).skip_table()?.u64()?,
        None => 0,
    };
    let other_head = match tree.get(meta(STREAM_HEAD)).map_err(unavailable)? {
        Some(value) => Dec::new(&value).u64()?,
        None => 0,
    };
    Ok(timeline_head.max(other_head))
}

/// Threads reading ahead of a backup's copy.
const READERS: usize = 4;

/// A key range: from a key (included) to another (excluded), or to the end.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The tree cut into ranges in key order, for [`read_ahead`]: each table (a key's first
/// byte) cut again at the first byte where its first and last keys differ (in a table keyed
/// by event or room ids, the ids' first characters), so that the big tables are read by
/// several readers at once. A few seeks per table.
fn read_ahead_ranges(tree: &Tree) -> Result<Vec<KeyRange>> {
    let mut ranges = Vec::new();
    let mut from = Vec::new();
    loop {
        let Some(first) = tree.range(from.clone()..).next() else { break };
        let first = first.map_err(unavailable)?.0.to_vec();
        let table = first[0];
        let end = (table < u8::MAX).then(|| vec![table + 1]);
        let upper = end.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let last = tree.range((Bound::Included(first.clone()), upper.clone())).next_back();
        let last =
            last.map_or(Ok(first.clone()), |e| e.map(|(k, _)| k.to_vec())).map_err(unavailable)?;
        let common = first.iter().zip(&last).take_while(|(a, b)| a == b).count();
        let mut lower = Bound::Included(vec![table]);
        if common < first.len() && common < last.len() {
            for byte in first[common] + 1..=last[common] {
                let mut cut = first[..common].to_vec();
                cut.push(byte);
                ranges.push((lower, Bound::Excluded(cut.clone())));
                lower = Bound::Included(cut);
            }
        }
        ranges.push((lower, upper));
        match end {
            Some(end) => from = end,
            None => break,
        }
    }
    Ok(ranges)
}

/// One reader ahead of the copy: takes the next range not taken and reads it through, until
/// none is left or the copy is done. What it reads is dropped (a failed read too: the copy
/// reads every entry itself).
fn read_ahead(tree: &Tree, ranges: &[KeyRange], next: &AtomicUsize, stop: &AtomicBool) {
    while let Some(range) = ranges.get(next.fetch_add(1, Ordering::Relaxed)) {
        for entry in tree.range(range.clone()) {
            if stop.load(Ordering::Relaxed) || entry.is_err() {
                return;
            }
        }
    }
}

/// [`replay`] of the records in a file, one record in memory at a time.
fn replay_file(target: &SledStore, mut file: impl Read) -> Result<()> {
    let cut =
        || StorageError::new(ErrorKind::Corrupt, "backup: the recorded writes read back cut short");
    let mut header = [0u8; 8];
    loop {
        match file.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io("cannot read back the recorded writes", e)),
        }
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut record = header.to_vec();
        let body = usize::try_from(length).map_err(|_| cut())?;
        record.resize(8 + body, 0);
        file.read_exact(&mut record[8..]).map_err(|_| cut())?;
        replay(target, &record)?;
    }
}

/// Step (4): the recorded change sets applied to the copy in commit order (each one batch,
/// as it was applied to the store), without the store's own log sequence.
fn replay(target: &SledStore, recorded: &[u8]) -> Result<()> {
    let records = wal::records(recorded);
    let whole: usize = records.iter().map(|(_, ops)| ops.len() + 16).sum();
    if whole != recorded.len() {
        return Err(StorageError::new(
            ErrorKind::Corrupt,
            "backup: the recorded writes read back cut short",
        ));
    }
    let own_log = meta(wal::SEQ_KEY);
    for (_, ops) in records {
        let ops: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            wal::decode_ops(ops)?.into_iter().filter(|(key, _)| *key != own_log).collect();
        target
            .tree
            .apply(ops.into_iter().map(|(key, value)| (key, value.map(::sled::IVec::from))))
            .map_err(unavailable)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sled::SledOptions;
    use std::ops::RangeBounds;

    /// The read-ahead ranges follow one another in key order, with no gap or overlap, and cut
    /// a table keyed by ids at their first differing character.
    #[test]
    fn the_read_ahead_ranges_cover_the_tree_in_order() {
        let dir = tempfile::tempdir().expect("a directory");
        let store = SledStore::open(dir.path(), &SledOptions::default()).expect("opens");
        let keys: Vec<Vec<u8>> = ["$a1", "$b2", "$c3", "$c4", "$z9"]
            .iter()
            .map(|id| crate::codec::Enc::table(EVENT).str(id).done())
            .chain([vec![b'~'], vec![b'~', 1], vec![u8::MAX, 7]])
            .collect();
        store.tree.apply(keys.iter().map(|k| (k.clone(), Some(b"v"[..].into())))).expect("writes");
        let ranges = read_ahead_ranges(&store.tree).expect("ranges");
        assert!(ranges.len() > 5, "the event table is cut: {ranges:?}");
        for pair in ranges.windows(2) {
            let (Bound::Excluded(end), Bound::Included(start)) = (&pair[0].1, &pair[1].0) else {
                continue;
            };
            assert!(end <= start, "in order, no overlap");
        }
        for entry in store.tree.range(..) {
            let key = entry.expect("reads").0.to_vec();
            let holding = ranges.iter().filter(|r| RangeBounds::contains(*r, &key)).count();
            assert_eq!(holding, 1, "{key:?} is in one range");
        }
        assert_eq!(ranges.last().map(|r| r.1.clone()), Some(Bound::Unbounded));
    }

    /// A backup asked for while another runs is refused, writes nothing, and leaves the
    /// running one's tap alone; once that one ends, a backup is made.
    #[test]
    fn a_second_backup_at_once_is_refused_and_leaves_the_first_alone() {
        let dir = tempfile::tempdir().expect("a directory");
        let store =
            SledStore::open(dir.path().join("live"), &SledOptions::default()).expect("opens");
        store.flusher.start_tap().expect("the first backup's tap");
        let second = dir.path().join("second");
        let error = store.backup_to(&second).expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::Conflict, "{error}");
        assert!(!second.exists(), "nothing written");
        let again = store.flusher.start_tap().expect_err("the first tap still runs");
        assert_eq!(again.kind(), ErrorKind::Conflict);
        store.flusher.drain_tap(true).expect("the first backup ends");
        let summary = store.backup_to(&second).expect("backs up");
        let copied_into = if cfg!(feature = "fjall") { "fjall" } else { "sled" };
        assert_eq!(summary.backend, copied_into, "a sled store is copied into fjall");
        assert!(!second.join(TAIL).exists(), "the recorded writes are gone once replayed");
    }
}
