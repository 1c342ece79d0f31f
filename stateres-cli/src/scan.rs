//! A JSON scanner that finds values without building them, over a file read a block at a time:
//! the input is read one PDU at a time, so neither the file nor a tree of it is ever held whole.

use std::borrow::Cow;
use std::io::Read;
use std::ops::Range;

use matrix_core::json::{self, Value};

/// A position in a JSON document (or in the part of it read so far).
pub(crate) struct Scanner<'b> {
    bytes: &'b [u8],
    pos: usize,
    /// Whether the scanner looked at the end of `bytes` (so more bytes could change its answer).
    hit_end: bool,
}

/// Nesting deeper than this is refused (the strict parser's own limit is lower).
const MAX_DEPTH: usize = 1_000;

fn invalid(what: &str, pos: usize) -> String {
    format!("invalid JSON: {what} at byte {pos}")
}

impl<'b> Scanner<'b> {
    pub(crate) fn new(bytes: &'b [u8]) -> Self {
        Scanner { bytes, pos: 0, hit_end: false }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        if self.pos >= self.bytes.len() {
            self.hit_end = true;
        }
    }

    /// The next non-space byte, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes.get(self.pos).copied()
    }

    /// Consumes `byte` (after spaces) or fails.
    pub(crate) fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else if self.pos >= self.bytes.len() {
            Err(invalid("unexpected end", self.pos))
        } else {
            Err(invalid(&format!("expected {:?}", byte as char), self.pos))
        }
    }

    /// Whether only spaces are left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// After an element of an array or object: true if another follows (a comma was read),
    /// false if `close` ended it.
    pub(crate) fn next_element(&mut self, close: u8) -> Result<bool, String> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            None => Err(invalid("unexpected end", self.pos)),
            Some(_) => Err(invalid("expected ',' or a closing bracket", self.pos)),
        }
    }

    /// Consumes `open` and tells whether the container is empty (then consumes `close` too).
    pub(crate) fn open(&mut self, open: u8, close: u8) -> Result<bool, String> {
        self.expect(open)?;
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// The bytes of a string, quotes included.
    fn string_span(&mut self) -> Result<&'b [u8], String> {
        self.skip_ws();
        let start = self.pos;
        if self.bytes.get(start) != Some(&b'"') {
            return Err(invalid("expected a string", start));
        }
        let mut i = start + 1;
        loop {
            let rest = self.bytes.get(i..).unwrap_or_default();
            match quote_or_backslash(rest) {
                None => {
                    self.hit_end = true;
                    return Err(invalid("unterminated string", start));
                }
                Some(k) if rest[k] == b'\\' => i += k + 2,
                Some(k) => {
                    self.pos = i + k + 1;
                    return Ok(&self.bytes[start..self.pos]);
                }
            }
        }
    }

    /// A string's text (escapes decoded).
    pub(crate) fn string(&mut self) -> Result<String, String> {
        let span = self.string_span()?;
        let inner = &span[1..span.len() - 1];
        if !inner.contains(&b'\\')
            && let Ok(text) = std::str::from_utf8(inner)
        {
            return Ok(text.to_owned());
        }
        match json::parse_lenient(span) {
            Ok(Value::String(text)) => Ok(text),
            _ => Err(invalid("bad string", self.pos)),
        }
    }

    /// A string's text, borrowed when it has no escapes.
    pub(crate) fn str_cow(&mut self) -> Result<Cow<'b, str>, String> {
        let span = self.string_span()?;
        let inner = &span[1..span.len() - 1];
        if !inner.contains(&b'\\')
            && let Ok(text) = std::str::from_utf8(inner)
        {
            return Ok(Cow::Borrowed(text));
        }
        match json::parse_lenient(span) {
            Ok(Value::String(text)) => Ok(Cow::Owned(text)),
            _ => Err(invalid("bad string", self.pos)),
        }
    }

    /// The next value if it is a string; any other value is skipped (`None`).
    pub(crate) fn opt_str(&mut self) -> Result<Option<Cow<'b, str>>, String> {
        if self.at_string() {
            return self.str_cow().map(Some);
        }
        self.value_range()?;
        Ok(None)
    }

    /// The next value if it is an integer written without fraction or exponent that fits an
    /// `i64` (what a strict parser takes as a number here); anything else is 0.
    pub(crate) fn int(&mut self) -> Result<i64, String> {
        let span = self.value_span()?;
        let digits = span.strip_prefix(b"-").unwrap_or(span);
        let canonical = match digits {
            [b'0'] => span.len() == 1,
            [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
            _ => false,
        };
        Ok(std::str::from_utf8(span)
            .ok()
            .filter(|_| canonical)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0))
    }

    /// The event ids of `auth_events` or `prev_events`: strings, or `[id, hashes]` pairs
    /// (room versions 1 and 2); other elements, or a value that is no array, give nothing.
    pub(crate) fn edge_ids(&mut self) -> Result<Vec<Cow<'b, str>>, String> {
        let mut ids = Vec::new();
        if self.peek() != Some(b'[') {
            self.value_range()?;
            return Ok(ids);
        }
        if self.open(b'[', b']')? {
            return Ok(ids);
        }
        loop {
            match self.peek() {
                Some(b'"') => ids.push(self.str_cow()?),
                Some(b'[') => {
                    let start = self.pos;
                    self.value_range()?;
                    let mut pair = Scanner::new(&self.bytes[start..self.pos]);
                    if !pair.open(b'[', b']')?
                        && let Some(id) = pair.opt_str()?
                    {
                        ids.push(id);
                    }
                }
                _ => {
                    self.value_range()?;
                }
            }
            if !self.next_element(b']')? {
                return Ok(ids);
            }
        }
    }

    /// The keys of the next value if it is an object (values skipped); nothing otherwise.
    pub(crate) fn object_keys(&mut self) -> Result<Vec<Cow<'b, str>>, String> {
        let mut keys = Vec::new();
        if self.peek() != Some(b'{') {
            self.value_range()?;
            return Ok(keys);
        }
        if self.open(b'{', b'}')? {
            return Ok(keys);
        }
        loop {
            keys.push(self.str_cow()?);
            self.expect(b':')?;
            self.value_range()?;
            if !self.next_element(b'}')? {
                return Ok(keys);
            }
        }
    }

    /// Whether the next value is a string.
    pub(crate) fn at_string(&mut self) -> bool {
        self.peek() == Some(b'"')
    }

    /// The bytes of the next value, skipped (brackets balanced, strings skipped whole); the
    /// value itself is only checked when parsed.
    pub(crate) fn value_span(&mut self) -> Result<&'b [u8], String> {
        let range = self.value_range()?;
        Ok(&self.bytes[range])
    }

    /// Where the next value is, skipped (see [`Scanner::value_span`]).
    pub(crate) fn value_range(&mut self) -> Result<Range<usize>, String> {
        self.skip_ws();
        let start = self.pos;
        let mut depth = 0usize;
        loop {
            match self.bytes.get(self.pos) {
                None => {
                    self.hit_end = true;
                    return Err(invalid("unexpected end", self.pos));
                }
                Some(b'"') => {
                    self.string_span()?;
                }
                Some(b'{' | b'[') => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(invalid("nesting too deep", self.pos));
                    }
                    self.pos += 1;
                }
                Some(b'}' | b']') => {
                    if depth == 0 {
                        return Err(invalid("unexpected closing bracket", self.pos));
                    }
                    depth -= 1;
                    self.pos += 1;
                }
                Some(b',' | b':' | b' ' | b'\t' | b'\n' | b'\r') if depth == 0 => {
                    return Err(invalid("expected a value", self.pos));
                }
                Some(_) => self.pos += 1,
            }
            if depth == 0 {
                // A scalar runs to the next delimiter.
                if !matches!(self.bytes.get(start), Some(b'"' | b'{' | b'[')) {
                    loop {
                        match self.bytes.get(self.pos) {
                            None => {
                                self.hit_end = true;
                                break;
                            }
                            Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') => break,
                            Some(_) => self.pos += 1,
                        }
                    }
                }
                return Ok(start..self.pos);
            }
        }
    }
}

/// The first `"` or `\\` in `bytes`, looked for 8 bytes at a time.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `word ^ pattern` is zero where `word` has the byte; the lowest flagged byte is
    // exact (a borrow can only flag bytes above a real zero).
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let found = zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks.remainder().iter().position(|&b| b == b'"' || b == b'\\').map(|k| at + k)
}

/// Bytes read per block.
const BLOCK: usize = 1 << 20;

/// A JSON document read from `reader` a block at a time; only the unread part of the current
/// value is kept.
pub(crate) struct Stream<R> {
    reader: R,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl<R: Read> Stream<R> {
    pub(crate) fn new(reader: R) -> Self {
        Stream { reader, buf: Vec::new(), pos: 0, eof: false }
    }

    /// Reads another block, first dropping what was consumed.
    fn fill(&mut self) -> Result<(), String> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let len = self.buf.len();
        self.buf.resize(len + BLOCK, 0);
        let read = loop {
            match self.reader.read(&mut self.buf[len..]) {
                Ok(read) => break read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("cannot read the input: {e}")),
            }
        };
        self.buf.truncate(len + read);
        if read == 0 {
            self.eof = true;
        }
        Ok(())
    }

    /// Runs `op` on the unread bytes; if its answer depended on bytes not read yet, reads more
    /// and runs it again. Returns its answer with the range of the bytes it consumed.
    fn run<T>(
        &mut self,
        op: impl Fn(&mut Scanner<'_>) -> Result<T, String>,
    ) -> Result<(T, Range<usize>), String> {
        loop {
            let mut scanner = Scanner::new(&self.buf[self.pos..]);
            let answer = op(&mut scanner);
            if scanner.hit_end && !self.eof {
                self.fill()?;
                continue;
            }
            let start = self.pos;
            self.pos += scanner.pos;
            return answer.map(|a| (a, start..self.pos));
        }
    }

    /// `op` on the unread bytes (see [`Stream::run`]).
    pub(crate) fn with<T>(
        &mut self,
        op: impl Fn(&mut Scanner<'_>) -> Result<T, String>,
    ) -> Result<T, String> {
        self.run(op).map(|(answer, _)| answer)
    }

    /// The bytes of the next value, read whole (see [`Scanner::value_span`]).
    pub(crate) fn value(&mut self) -> Result<&[u8], String> {
        let (range, consumed) = self.run(|s| s.value_range())?;
        Ok(&self.buf[consumed.start + range.start..consumed.start + range.end])
    }

    /// Skips the next value; an array is skipped element by element (so a big array is never
    /// held whole).
    pub(crate) fn skip(&mut self) -> Result<(), String> {
        if self.with(|s| Ok(s.peek()))? != Some(b'[') {
            return self.value().map(drop);
        }
        if self.with(|s| s.open(b'[', b']'))? {
            return Ok(());
        }
        loop {
            self.value()?;
            if !self.with(|s| s.next_element(b']'))? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Scanner, Stream};

    #[test]
    fn spans_skip_nested_values_and_escaped_quotes() {
        let text = br#" {"a": [1, {"b": "x\"]}"}], "c": true, "d": -1.5e3 } "#;
        let mut s = Scanner::new(text);
        assert!(!s.open(b'{', b'}').expect("object"));
        assert_eq!(s.string().expect("key"), "a");
        s.expect(b':').expect("colon");
        assert_eq!(s.value_span().expect("value"), br#"[1, {"b": "x\"]}"}]"#);
        assert!(s.next_element(b'}').expect("more"));
        assert_eq!(s.string().expect("key"), "c");
        s.expect(b':').expect("colon");
        assert_eq!(s.value_span().expect("value"), b"true");
        assert!(s.next_element(b'}').expect("more"));
        assert_eq!(s.string().expect("key"), "d");
        s.expect(b':').expect("colon");
        assert_eq!(s.value_span().expect("value"), b"-1.5e3");
        assert!(!s.next_element(b'}').expect("end"));
        assert!(s.at_end());
    }

    #[test]
    fn broken_json_is_an_error() {
        for text in [&b"{"[..], b"[1, 2", b"\"abc", b"]", b"[[[[[", b""] {
            assert!(Scanner::new(text).value_span().is_err(), "{}", String::from_utf8_lossy(text));
        }
        let mut s = Scanner::new(br#"{"a" 1}"#);
        assert!(s.open(b'{', b'}').is_ok() && s.string().is_ok());
        assert!(s.expect(b':').is_err());
        let deep = vec![b'['; 5_000];
        assert!(Scanner::new(&deep).value_span().is_err());
    }

    #[test]
    fn quotes_and_backslashes_are_found_at_any_offset() {
        for len in 0..40 {
            for at in 0..=len {
                for mark in [b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    // Bytes that differ from the marks by one bit, and non-ASCII.
                    for (i, b) in bytes.iter_mut().enumerate() {
                        *b = [b'a', b'#', b'!', 0xe2, b']', 0x22 ^ 0x80][i % 6];
                    }
                    let expected = (at < len).then(|| {
                        bytes[at] = mark;
                        at
                    });
                    let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\');
                    assert_eq!(naive, expected);
                    assert_eq!(super::quote_or_backslash(&bytes), expected, "{len} {at}");
                }
            }
        }
    }

    /// Values cut by block boundaries are read whole, whatever the boundaries.
    #[test]
    fn streams_across_reads() {
        /// A reader returning at most 3 bytes per read.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(3).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let text = br#"{"pdus": [{"a": "x\"y"}, 12345, [1, [2]]], "n": -1.25e10}"#;
        let mut s = Stream::new(Trickle(text));
        assert!(!s.with(|s| s.open(b'{', b'}')).expect("object"));
        assert_eq!(s.with(|s| s.string()).expect("key"), "pdus");
        s.with(|s| s.expect(b':')).expect("colon");
        assert!(!s.with(|s| s.open(b'[', b']')).expect("array"));
        assert_eq!(s.value().expect("value"), br#"{"a": "x\"y"}"#);
        assert!(s.with(|s| s.next_element(b']')).expect("more"));
        assert_eq!(s.value().expect("value"), b"12345");
        assert!(s.with(|s| s.next_element(b']')).expect("more"));
        assert_eq!(s.value().expect("value"), b"[1, [2]]");
        assert!(!s.with(|s| s.next_element(b']')).expect("end"));
        assert!(s.with(|s| s.next_element(b'}')).expect("more"));
        assert_eq!(s.with(|s| s.string()).expect("key"), "n");
        s.with(|s| s.expect(b':')).expect("colon");
        s.skip().expect("number");
        assert!(!s.with(|s| s.next_element(b'}')).expect("end"));
        assert!(s.with(|s| Ok(s.at_end())).expect("end"));
    }
}
