//! A small recursive-descent JSON parser with a strict (canonical) and a lenient mode.

use super::{JsonError, MAX_DEPTH, MAX_SAFE_INT, MIN_SAFE_INT, Number, Object, Value};

/// Parses JSON as room versions 6 and later require: integers only, within
/// `[-(2^53)+1, 2^53-1]`, no duplicate keys.
pub fn parse_strict(input: &[u8]) -> Result<Value, JsonError> {
    Parser::run(input, true)
}

/// Parses any JSON, keeping non-integer numbers (and integers beyond `i64`) as written.
/// Of duplicate keys the last wins, as in the JSON parsers of the servers that produced such
/// events. For room versions 1-5.
pub fn parse_lenient(input: &[u8]) -> Result<Value, JsonError> {
    Parser::run(input, false)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    strict: bool,
}

impl<'a> Parser<'a> {
    fn run(input: &'a [u8], strict: bool) -> Result<Value, JsonError> {
        let text = std::str::from_utf8(input)
            .map_err(|e| JsonError::InvalidUtf8 { offset: e.valid_up_to() })?;
        let mut parser = Parser { text, bytes: input, pos: 0, strict };
        parser.skip_ws();
        let value = parser.value(0)?;
        parser.skip_ws();
        if parser.pos != parser.bytes.len() {
            return Err(parser.syntax("end of input"));
        }
        Ok(value)
    }

    fn syntax(&self, expected: &'static str) -> JsonError {
        JsonError::Syntax { offset: self.pos, expected }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn literal(&mut self, word: &'static str, value: Value) -> Result<Value, JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.syntax(word))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            _ => Err(self.syntax("a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        let start = self.pos;
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep { offset: start });
        }
        self.pos += 1;
        self.skip_ws();
        let mut entries: Vec<(String, Value)> = Vec::new();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(Object::new()));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.syntax("a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.syntax("':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.syntax("',' or '}'")),
            }
        }
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: of equal keys, the one written last stays last.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut deduped: Vec<(String, Value)> = Vec::with_capacity(entries.len());
            for entry in entries {
                match deduped.last_mut() {
                    Some(last) if last.0 == entry.0 => {
                        if self.strict {
                            return Err(JsonError::DuplicateKey { key: entry.0, offset: start });
                        }
                        *last = entry;
                    }
                    _ => deduped.push(entry),
                }
            }
            entries = deduped;
        }
        Ok(Value::Object(Object::from_sorted_unchecked(entries)))
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep { offset: self.pos });
        }
        self.pos += 1;
        self.skip_ws();
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.syntax("',' or ']'")),
            }
        }
    }

    /// Parses a string starting at the opening quote.
    fn string(&mut self) -> Result<String, JsonError> {
        self.pos += 1;
        let start = self.pos;
        // Fast path: no escapes.
        let rest = &self.bytes[start..];
        let stop = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        match stop {
            Some(n) if rest[n] == b'"' => {
                self.pos = start + n + 1;
                return Ok(self.text[start..start + n].to_owned());
            }
            Some(n) => self.pos = start + n,
            None => {
                self.pos = self.bytes.len();
                return Err(self.syntax("'\"'"));
            }
        }
        let mut out = String::with_capacity(self.pos - start + 16);
        out.push_str(&self.text[start..self.pos]);
        loop {
            let chunk_start = self.pos;
            while let Some(&b) = self.bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[chunk_start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(_) => return Err(self.syntax("an escaped control character")),
                None => return Err(self.syntax("'\"'")),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), JsonError> {
        let at = self.pos;
        self.pos += 1;
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let unit = self.hex4()?;
                let code = match unit {
                    0xD800..=0xDBFF => {
                        if self.bytes[self.pos..].starts_with(b"\\u") {
                            self.pos += 2;
                            let low = self.hex4()?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return Err(JsonError::LoneSurrogate { offset: at });
                            }
                            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            return Err(JsonError::LoneSurrogate { offset: at });
                        }
                    }
                    0xDC00..=0xDFFF => return Err(JsonError::LoneSurrogate { offset: at }),
                    other => other,
                };
                out.push(char::from_u32(code).ok_or(JsonError::LoneSurrogate { offset: at })?);
                return Ok(());
            }
            _ => return Err(self.syntax("an escape character")),
        };
        self.pos += 1;
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(self.syntax("4 hex digits"))?;
        let mut code = 0u32;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or(self.syntax("4 hex digits"))?;
            code = code * 16 + v;
        }
        self.pos += 4;
        Ok(code)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Number, JsonError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.syntax("a digit")),
        }
        let int_end = self.pos;
        let mut integral = true;
        if self.peek() == Some(b'.') {
            integral = false;
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.syntax("a digit after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integral = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.syntax("a digit in the exponent"));
            }
        }
        let text = &self.text[start..self.pos];
        if !integral {
            if self.strict {
                return Err(JsonError::Float { offset: start });
            }
            return Ok(Number::Raw(text.into()));
        }
        let parsed = text[..int_end - start].parse::<i64>().ok();
        if self.strict {
            return match parsed {
                Some(i) if (MIN_SAFE_INT..=MAX_SAFE_INT).contains(&i) => Ok(Number::Int(i)),
                _ => Err(JsonError::IntegerOutOfRange { offset: start }),
            };
        }
        match parsed {
            // `-0` would re-serialise as `0`: keep it as written.
            Some(0) if negative => Ok(Number::Raw(text.into())),
            Some(i) => Ok(Number::Int(i)),
            None => Ok(Number::Raw(text.into())),
        }
    }
}
