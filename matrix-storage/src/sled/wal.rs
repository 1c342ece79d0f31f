//! The write-ahead log in front of sled: what makes a change set durable is one append and
//! one `fdatasync` of this log (shared by every change set committed meanwhile), not a sled
//! flush, which writes sled's pages and costs several milliseconds. sled is flushed now and
//! then (a checkpoint), after which the log's older segments are deleted.
//!
//! **Records:** `[length u32][crc32 u32][sequence u64][ops]`, little-endian, the CRC over the
//! sequence and the ops; the ops are the change set's writes to the tree, in key order, each
//! `[1][key][value]` (an insert) or `[0][key]` (a removal), with `u32` lengths. Every change
//! set writes its sequence number into the tree too ([`SEQ_KEY`]), so at open the tree says
//! which prefix of the log sled already holds, and the records after it are applied again.
//! A record cut short or failing its CRC ends the log: it was never acknowledged (its
//! `fdatasync` did not return), so nothing after it was either.
//!
//! **Segments:** files `{first sequence:020}.wal` in the log's directory; a checkpoint starts
//! a new segment and deletes those whose records sled holds on disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{ErrorKind, Result, StorageError};

/// Where a change set's sequence number is kept in the tree (under the META table).
pub(super) const SEQ_KEY: &str = "wal_seq";

/// One write of a change set: a key and its new value, or `None` for a removal.
pub(super) type Op = (Vec<u8>, Option<Vec<u8>>);

/// The records a log holds: (sequence, ops), oldest first.
pub(super) type Records = Vec<(u64, Vec<Op>)>;

fn io(what: &str, error: std::io::Error) -> StorageError {
    StorageError::with_source(ErrorKind::Unavailable, format!("the write-ahead log: {what}"), error)
}

fn corrupt(what: &str) -> StorageError {
    StorageError::new(ErrorKind::Corrupt, format!("the write-ahead log: {what}"))
}

/// Appends the encoded ops of one change set to `out`.
pub(super) fn encode_ops<'a>(
    ops: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    out: &mut Vec<u8>,
) {
    for (key, value) in ops {
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        out.push(u8::from(value.is_some()));
        out.extend_from_slice(&len(key.len()));
        out.extend_from_slice(key);
        if let Some(value) = value {
            out.extend_from_slice(&len(value.len()));
            out.extend_from_slice(value);
        }
    }
}

/// The ops of one record.
pub(super) fn decode_ops(mut bytes: &[u8]) -> Result<Vec<Op>> {
    let mut ops = Vec::new();
    let take = |n: usize, bytes: &mut &[u8]| -> Result<Vec<u8>> {
        if bytes.len() < n {
            return Err(corrupt("a record's ops are cut short"));
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head.to_vec())
    };
    let len = |bytes: &mut &[u8]| -> Result<usize> {
        let raw = take(4, bytes)?;
        let array: [u8; 4] = raw.try_into().map_err(|_| corrupt("a length"))?;
        usize::try_from(u32::from_le_bytes(array)).map_err(|_| corrupt("a length"))
    };
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        let key_len = len(&mut bytes)?;
        let key = take(key_len, &mut bytes)?;
        let value = match tag {
            1 => {
                let value_len = len(&mut bytes)?;
                Some(take(value_len, &mut bytes)?)
            }
            0 => None,
            _ => return Err(corrupt("an op of unknown kind")),
        };
        ops.push((key, value));
    }
    Ok(ops)
}

/// Appends a whole record (sequence and encoded ops) to `out`.
pub(super) fn encode_record(seq: u64, ops: &[u8], out: &mut Vec<u8>) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(ops);
    let length = u32::try_from(8 + ops.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(ops);
}

/// The valid records of one segment's bytes, in order, up to the first one cut short or
/// failing its CRC.
pub(super) fn records(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 16 {
        let word =
            |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let (length, crc) = (word(0) as usize, word(4));
        if length < 8 || rest.len() < 8 + length {
            break;
        }
        let body = &rest[8..8 + length];
        if crc32fast::hash(body) != crc {
            break;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&body[..8]);
        out.push((u64::from_le_bytes(seq), &body[8..]));
        rest = &rest[8 + length..];
    }
    out
}

/// The log: its directory, the segment being written, and the older segments.
#[derive(Debug)]
pub(super) struct Wal {
    dir: PathBuf,
    /// The segment being appended to.
    file: File,
    /// Bytes in it.
    written: u64,
    /// First sequence of each segment, oldest first (the last one is `file`'s).
    segments: Vec<u64>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.wal"))
}

impl Wal {
    /// Opens the log in `dir` (made if missing); answers it and the records (sequence, ops)
    /// it holds, oldest first. New records go to a new segment starting at `next_seq`.
    pub(super) fn open(
        dir: &Path,
        next_seq: impl FnOnce(Option<u64>) -> u64,
    ) -> Result<(Wal, Records)> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot make its directory", e))?;
        let mut segments: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io("cannot list its directory", e))? {
            let name = entry.map_err(|e| io("cannot list its directory", e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name.strip_suffix(".wal").and_then(|n| n.parse::<u64>().ok()) {
                segments.push(first);
            }
        }
        segments.sort_unstable();
        let mut found = Vec::new();
        for &first in &segments {
            let mut bytes = Vec::new();
            File::open(segment_path(dir, first))
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io("cannot read a segment", e))?;
            for (seq, ops) in records(&bytes) {
                found.push((seq, decode_ops(ops)?));
            }
        }
        let last = found.last().map(|(seq, _)| *seq);
        let first = next_seq(last);
        // A fresh segment: whatever a crash left at the end of the last one (a record cut
        // short) is never appended to.
        let path = segment_path(dir, first);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("cannot open a segment", e))?;
        if !segments.contains(&first) {
            segments.push(first);
        }
        sync_dir(dir)?;
        Ok((Wal { dir: dir.to_owned(), file, written: 0, segments }, found))
    }

    /// Appends encoded records and waits until they are on disk.
    pub(super) fn append(&mut self, records: &[u8]) -> Result<()> {
        self.file.write_all(records).map_err(|e| io("cannot write", e))?;
        self.file.sync_data().map_err(|e| io("cannot sync", e))?;
        self.written += records.len() as u64;
        Ok(())
    }

    /// Bytes in the segment being written.
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    /// After sled holds every record up to `durable_seq` on disk: starts a new segment at
    /// `next_seq` and deletes the segments all of whose records sled holds.
    pub(super) fn checkpoint(&mut self, durable_seq: u64, next_seq: u64) -> Result<()> {
        if self.written > 0 && self.segments.last().is_some_and(|&last| last < next_seq) {
            let path = segment_path(&self.dir, next_seq);
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io("cannot open a segment", e))?;
            self.written = 0;
            self.segments.push(next_seq);
        }
        // A segment's records end where the next segment begins.
        while self.segments.len() > 1 && self.segments[1] <= durable_seq.saturating_add(1) {
            let old = self.segments.remove(0);
            std::fs::remove_file(segment_path(&self.dir, old))
                .map_err(|e| io("cannot delete an old segment", e))?;
        }
        sync_dir(&self.dir)
    }
}

/// Makes a directory's entries (new or deleted files) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("cannot sync its directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
        let mut ops = Vec::new();
        encode_ops([(key, value)], &mut ops);
        let mut out = Vec::new();
        encode_record(seq, &ops, &mut out);
        out
    }

    #[test]
    fn records_come_back_in_order_and_a_torn_tail_ends_the_log() {
        let dir = tempfile::tempdir().expect("a directory");
        let (mut wal, found) = Wal::open(dir.path(), |last| last.unwrap_or(0) + 1).expect("opens");
        assert!(found.is_empty());
        let mut batch = record(1, b"a", Some(b"1"));
        batch.extend(record(2, b"b", None));
        wal.append(&batch).expect("appends");
        // A record cut short, as a crash during its write leaves it.
        let torn = record(3, b"c", Some(b"3"));
        wal.append(&torn[..torn.len() - 2]).expect("appends");
        drop(wal);
        let (mut wal, found) =
            Wal::open(dir.path(), |last| last.unwrap_or(0) + 1).expect("reopens");
        let seqs: Vec<u64> = found.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(found[0].1, vec![(b"a".to_vec(), Some(b"1".to_vec()))]);
        assert_eq!(found[1].1, vec![(b"b".to_vec(), None)]);
        // The next record goes to a new segment, after the torn one.
        wal.append(&record(3, b"c", Some(b"again"))).expect("appends");
        drop(wal);
        let (_, found) = Wal::open(dir.path(), |last| last.unwrap_or(0) + 1).expect("reopens");
        let seqs: Vec<u64> = found.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(found[2].1[0].1.as_deref(), Some(&b"again"[..]));
    }

    #[test]
    fn a_checkpoint_deletes_what_sled_holds() {
        let dir = tempfile::tempdir().expect("a directory");
        let (mut wal, _) = Wal::open(dir.path(), |_| 1).expect("opens");
        wal.append(&record(1, b"a", Some(b"1"))).expect("appends");
        wal.append(&record(2, b"b", Some(b"2"))).expect("appends");
        wal.checkpoint(2, 3).expect("checkpoints");
        wal.append(&record(3, b"c", Some(b"3"))).expect("appends");
        drop(wal);
        let (_, found) = Wal::open(dir.path(), |last| last.unwrap_or(0) + 1).expect("reopens");
        let seqs: Vec<u64> = found.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![3], "segments sled holds are gone");
    }

    #[test]
    fn a_corrupt_record_ends_the_log() {
        let mut bytes = record(1, b"a", Some(b"1"));
        let second = record(2, b"b", Some(b"2"));
        bytes.extend(&second);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert_eq!(records(&bytes).len(), 1);
        assert!(decode_ops(&[7, 0, 0, 0, 0]).is_err(), "an unknown op is an error, not a panic");
        assert!(decode_ops(&[1, 9, 0, 0, 0, b'x']).is_err(), "a short key is an error");
    }
}
