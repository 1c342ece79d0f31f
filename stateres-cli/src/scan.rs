//! A JSON scanner that finds values without building them: the input file is read one PDU at a
//! time, so no tree of the whole file is ever held.

use matrix_core::json::{self, Value};

/// A position in a JSON document.
pub(crate) struct Scanner<'b> {
    bytes: &'b [u8],
    pos: usize,
}

/// Nesting deeper than this is refused (the strict parser's own limit is lower).
const MAX_DEPTH: usize = 1_000;

fn invalid(what: &str, pos: usize) -> String {
    format!("invalid JSON: {what} at byte {pos}")
}

impl<'b> Scanner<'b> {
    pub(crate) fn new(bytes: &'b [u8]) -> Self {
        Scanner { bytes, pos: 0 }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
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
            match rest.iter().position(|&b| b == b'"' || b == b'\\') {
                None => return Err(invalid("unterminated string", start)),
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

    /// Whether the next value is a string.
    pub(crate) fn at_string(&mut self) -> bool {
        self.peek() == Some(b'"')
    }

    /// The bytes of the next value, skipped (brackets balanced, strings skipped whole); the
    /// value itself is only checked when parsed.
    pub(crate) fn value_span(&mut self) -> Result<&'b [u8], String> {
        self.skip_ws();
        let start = self.pos;
        let mut depth = 0usize;
        loop {
            match self.bytes.get(self.pos) {
                None => return Err(invalid("unexpected end", self.pos)),
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
                    while let Some(b) = self.bytes.get(self.pos) {
                        if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                return Ok(&self.bytes[start..self.pos]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scanner;

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
}
