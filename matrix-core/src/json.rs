//! Canonical JSON: a JSON value type whose serialisation is the spec's canonical form.
//!
//! * [`parse_strict`] accepts exactly what room versions 6 and later allow: integers in
//!   `[-(2^53)+1, 2^53-1]`, no floats, no duplicate keys, valid UTF-8 without lone surrogates.
//! * [`parse_lenient`] accepts any JSON (room versions 1-5) and keeps every number exactly as it
//!   was written, so re-serialising an event never changes its hashes.
//! * [`Value::write_canonical`] / [`to_canonical_string`] produce the canonical bytes: keys
//!   sorted by code point, no insignificant whitespace, the shortest escapes.
//!
//! Nesting is bounded by [`MAX_DEPTH`] so no input can exhaust the stack.
//!
//! ```
//! use matrix_core::json;
//!
//! let value = json::parse_strict(br#"{ "b": [1, "\u00e9"], "a": null }"#)?;
//! assert_eq!(json::to_canonical_string(&value), r#"{"a":null,"b":[1,"é"]}"#);
//! assert!(json::parse_strict(br#"{"a": 1.5}"#).is_err());
//! assert!(json::parse_lenient(br#"{"a": 1.5}"#).is_ok());
//! # Ok::<(), matrix_core::json::JsonError>(())
//! ```

mod parse;
pub(crate) mod write;

pub use parse::{parse_lenient, parse_strict};
pub use write::{to_canonical_string, to_canonical_vec};

use std::fmt;

/// The deepest nesting of arrays and objects accepted by the parsers.
pub const MAX_DEPTH: usize = 128;

/// The largest integer canonical JSON allows (`2^53 - 1`).
pub const MAX_SAFE_INT: i64 = (1 << 53) - 1;
/// The smallest integer canonical JSON allows (`-(2^53) + 1`).
pub const MIN_SAFE_INT: i64 = -MAX_SAFE_INT;

/// Why JSON could not be parsed. `offset` is the byte offset in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The input is not valid UTF-8.
    #[error("invalid UTF-8 at byte {offset}")]
    InvalidUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// The input is not JSON.
    #[error("syntax error at byte {offset}: {expected}")]
    Syntax {
        /// Byte offset of the error.
        offset: usize,
        /// What the parser expected there.
        expected: &'static str,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} at byte {offset}")]
    TooDeep {
        /// Byte offset of the array or object that was too deep.
        offset: usize,
    },
    /// A `\u` escape that encodes a lone UTF-16 surrogate.
    #[error("lone surrogate in string escape at byte {offset}")]
    LoneSurrogate {
        /// Byte offset of the escape.
        offset: usize,
    },
    /// An object has the same key twice (strict mode).
    #[error("duplicate key {key:?} at byte {offset}")]
    DuplicateKey {
        /// The repeated key.
        key: String,
        /// Byte offset of the object.
        offset: usize,
    },
    /// A number with a fraction or an exponent (strict mode).
    #[error("non-integer number at byte {offset}")]
    Float {
        /// Byte offset of the number.
        offset: usize,
    },
    /// An integer outside `[-(2^53)+1, 2^53-1]` (strict mode).
    #[error("integer out of the canonical JSON range at byte {offset}")]
    IntegerOutOfRange {
        /// Byte offset of the number.
        offset: usize,
    },
}

/// A JSON number.
///
/// Strictly parsed JSON only ever holds [`Number::Int`] within the canonical range.
/// Leniently parsed JSON keeps any other number as its original text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Number {
    /// An integer written without fraction or exponent.
    Int(i64),
    /// Any other number (float, exponent, `-0`, or beyond `i64`), byte for byte as received.
    Raw(Box<str>),
}

impl Number {
    /// The value as an integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(*i),
            Number::Raw(_) => None,
        }
    }
}

/// A JSON value.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Value {
    /// `null`
    #[default]
    Null,
    /// `true` or `false`
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object.
    Object(Object),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_canonical_string(self))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_canonical_string(self))
    }
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }
    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }
    /// The object, mutably, if this is one.
    pub fn as_object_mut(&mut self) -> Option<&mut Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }
    /// The array, if this is one.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// Writes the canonical form of this value into `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        write::value(self, out);
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Number(Number::Int(i))
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Object> for Value {
    fn from(o: Object) -> Self {
        Value::Object(o)
    }
}
impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(a)
    }
}

/// A JSON object whose entries are kept sorted by key (code point order, which is UTF-8 byte
/// order), so it serialises canonically without a sort and looks keys up by binary search.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Object {
    entries: Vec<(String, Value)>,
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        write::object(self, &mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

impl Object {
    /// An empty object.
    pub const fn new() -> Self {
        Object { entries: Vec::new() }
    }

    /// Builds an object from entries already sorted by key without duplicates.
    pub(crate) fn from_sorted_unchecked(entries: Vec<(String, Value)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        Object { entries }
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The index of `key` among the entries (in key order).
    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.position(key).ok()
    }
    /// The value of the entry at `index` (in key order).
    pub fn value_at(&self, index: usize) -> Option<&Value> {
        self.entries.get(index).map(|(_, v)| v)
    }
    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).ok().map(|i| &self.entries[i].1)
    }
    /// The value at `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.position(key).ok().map(move |i| &mut self.entries[i].1)
    }
    /// The string at `key`, if there is one.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    /// The object at `key`, if there is one.
    pub fn get_object(&self, key: &str) -> Option<&Object> {
        self.get(key).and_then(Value::as_object)
    }
    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }
    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        match self.position(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }
    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.position(key).ok().map(|i| self.entries.remove(i).1)
    }
    /// The object at `key`, inserted empty first if absent or not an object.
    pub fn object_entry(&mut self, key: &str) -> &mut Object {
        let i = match self.position(key) {
            Ok(i) => {
                if !matches!(self.entries[i].1, Value::Object(_)) {
                    self.entries[i].1 = Value::Object(Object::new());
                }
                i
            }
            Err(i) => {
                self.entries.insert(i, (key.to_owned(), Value::Object(Object::new())));
                i
            }
        };
        match &mut self.entries[i].1 {
            Value::Object(o) => o,
            _ => unreachable!("the entry was just made an object"),
        }
    }
    /// The entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// The keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.entries.iter().map(|(k, _)| k.as_str())
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Writes the canonical form of this object into `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        write::object(self, out);
    }
    /// The length in bytes of the canonical form.
    pub fn canonical_len(&self) -> usize {
        let mut out = Vec::with_capacity(4096);
        write::object(self, &mut out);
        out.len()
    }
    /// Keeps only the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut Value) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Object {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(String, Value)> =
            iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        // Keep the last of equal keys, like an insert would.
        let mut deduped: Vec<(String, Value)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match deduped.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => deduped.push(entry),
            }
        }
        Object { entries: deduped }
    }
}

impl<'a> IntoIterator for &'a Object {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Value)>,
        fn(&'a (String, Value)) -> (&'a str, &'a Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
}
