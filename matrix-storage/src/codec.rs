//! A small binary encoding for keys and records: length-prefixed strings and bytes, big-endian
//! integers (so that integer keys sort numerically).

use crate::{ErrorKind, Result, StorageError};

/// Builds a key or a record.
#[derive(Debug, Default)]
pub(crate) struct Enc(pub(crate) Vec<u8>);

impl Enc {
    pub(crate) fn table(table: u8) -> Self {
        Enc(vec![table])
    }
    pub(crate) fn str(mut self, s: &str) -> Self {
        self.put_bytes(s.as_bytes());
        self
    }
    pub(crate) fn bytes(mut self, b: &[u8]) -> Self {
        self.put_bytes(b);
        self
    }
    pub(crate) fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    pub(crate) fn u32(mut self, n: u32) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    pub(crate) fn i64(self, n: i64) -> Self {
        self.u64(n as u64)
    }
    /// An integer in as few bytes as it needs (LEB128): for records, never for keys.
    pub(crate) fn var(mut self, mut n: u64) -> Self {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
        self
    }
    pub(crate) fn bool(mut self, b: bool) -> Self {
        self.0.push(u8::from(b));
        self
    }
    pub(crate) fn opt_str(self, s: Option<&str>) -> Self {
        match s {
            Some(s) => self.bool(true).str(s),
            None => self.bool(false),
        }
    }
    /// A string without a length, so that keys sort by it byte-wise and a prefix of it is a
    /// prefix of the key: only as the last part of a key.
    pub(crate) fn tail(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn put_bytes(&mut self, b: &[u8]) {
        // Lengths beyond u32 cannot come from Matrix data (events are 64 KiB at most).
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
    }
    /// Bytes as they are, without a length.
    pub(crate) fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn done(self) -> Vec<u8> {
        self.0
    }
}

/// Reads a record written by [`Enc`].
#[derive(Debug)]
pub(crate) struct Dec<'a> {
    rest: &'a [u8],
}

fn corrupt() -> StorageError {
    StorageError::new(ErrorKind::Corrupt, "a stored record does not decode")
}

impl<'a> Dec<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Dec { rest: bytes }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(corrupt());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub(crate) fn skip_table(mut self) -> Result<Self> {
        self.take(1)?;
        Ok(self)
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| corrupt())?);
        self.take(len as usize)
    }
    pub(crate) fn str(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt())
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| corrupt())?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| corrupt())?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }
    /// An integer written by [`Enc::var`].
    pub(crate) fn var(&mut self) -> Result<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            // The tenth byte may only hold the top bit.
            if shift == 63 && byte > 1 {
                return Err(corrupt());
            }
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(corrupt())
    }
    /// The next `n` bytes.
    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take(n)
    }
    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }
    pub(crate) fn bool(&mut self) -> Result<bool> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(corrupt()),
        }
    }
    /// The rest, as a string written by [`Enc::tail`].
    pub(crate) fn tail(&mut self) -> Result<String> {
        let rest = std::mem::take(&mut self.rest);
        String::from_utf8(rest.to_vec()).map_err(|_| corrupt())
    }
    pub(crate) fn opt_str(&mut self) -> Result<Option<String>> {
        if self.bool()? { self.str().map(Some) } else { Ok(None) }
    }
}
