//! The `X-Matrix` `Authorization` header of server-server requests: build, parse, verify.
//!
//! ```
//! use matrix_core::signing::SigningKey;
//! use matrix_core::xmatrix::{XMatrix, sign_request, verify_request};
//!
//! let key = SigningKey::from_seed("1", &[1; 32]);
//! let header = sign_request(&key, "a.example", "b.example", "GET", "/_matrix/federation/v1/version", None);
//! let parsed = XMatrix::parse(&header.to_header_value())?;
//! assert_eq!(parsed, header);
//! verify_request(&parsed, "b.example", "GET", "/_matrix/federation/v1/version", None, &key.public_key())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::b64;
use crate::json::{Object, Value};
use crate::signing::{PublicKey, SigningKey, signing_input};

/// Why a header could not be parsed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XMatrixError {
    /// The scheme is not `X-Matrix`.
    #[error("authorization scheme is not X-Matrix")]
    Scheme,
    /// The parameter list is malformed.
    #[error("malformed X-Matrix parameters at byte {offset}")]
    Syntax {
        /// Byte offset in the header value.
        offset: usize,
    },
    /// A parameter appears twice.
    #[error("duplicate X-Matrix parameter {0}")]
    Duplicate(&'static str),
    /// A required parameter is missing.
    #[error("missing X-Matrix parameter {0}")]
    Missing(&'static str),
    /// The signature is not base64 of 64 bytes.
    #[error("X-Matrix signature is not base64 of 64 bytes")]
    SignatureEncoding,
    /// The key id is not `ed25519:...`.
    #[error("X-Matrix key {0:?} is not an ed25519 key id")]
    KeyId(String),
    /// `destination` names another server.
    #[error("request is for {found}, not for {expected}")]
    WrongDestination {
        /// This server's name.
        expected: String,
        /// The destination in the header.
        found: String,
    },
    /// The signature does not verify.
    #[error("X-Matrix signature does not verify")]
    BadSignature,
}

/// A parsed `X-Matrix` authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    /// The requesting server.
    pub origin: String,
    /// The server the request is for (optional on receipt for old senders; always sent).
    pub destination: Option<String>,
    /// The key id, `ed25519:...`.
    pub key: String,
    /// The signature.
    pub signature: [u8; 64],
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl XMatrix {
    /// Parses an `Authorization` header value (`X-Matrix origin=...,key=...,sig=...`).
    /// Names are case-insensitive, values may be quoted with backslash escapes, unknown
    /// parameters are ignored, and unquoted values may contain `:`.
    pub fn parse(header: &str) -> Result<Self, XMatrixError> {
        let bytes = header.as_bytes();
        let scheme_end = bytes.iter().position(|&b| b == b' ').ok_or(XMatrixError::Scheme)?;
        if !header[..scheme_end].eq_ignore_ascii_case("X-Matrix") {
            return Err(XMatrixError::Scheme);
        }
        let (mut origin, mut destination, mut key, mut sig) = (None, None, None, None);
        let mut pos = scheme_end;
        let skip_ws = |pos: &mut usize| {
            while let Some(b' ' | b'\t') = bytes.get(*pos) {
                *pos += 1;
            }
        };
        loop {
            skip_ws(&mut pos);
            let name_start = pos;
            while bytes.get(pos).is_some_and(|&b| is_tchar(b)) {
                pos += 1;
            }
            if pos == name_start || bytes.get(pos) != Some(&b'=') {
                return Err(XMatrixError::Syntax { offset: pos });
            }
            let name = &header[name_start..pos];
            pos += 1;
            let value = if bytes.get(pos) == Some(&b'"') {
                pos += 1;
                let mut value = String::new();
                loop {
                    let start = pos;
                    while bytes.get(pos).is_some_and(|&b| b != b'"' && b != b'\\') {
                        pos += 1;
                    }
                    value.push_str(&header[start..pos]);
                    match bytes.get(pos) {
                        Some(b'"') => {
                            pos += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let c = header[pos + 1..]
                                .chars()
                                .next()
                                .ok_or(XMatrixError::Syntax { offset: pos })?;
                            value.push(c);
                            pos += 1 + c.len_utf8();
                        }
                        _ => return Err(XMatrixError::Syntax { offset: pos }),
                    }
                }
                value
            } else {
                let start = pos;
                while bytes.get(pos).is_some_and(|&b| is_tchar(b) || b == b':') {
                    pos += 1;
                }
                if pos == start {
                    return Err(XMatrixError::Syntax { offset: pos });
                }
                header[start..pos].to_owned()
            };
            let slot = match name.to_ascii_lowercase().as_str() {
                "origin" => Some((&mut origin, "origin")),
                "destination" => Some((&mut destination, "destination")),
                "key" => Some((&mut key, "key")),
                "sig" | "signature" => Some((&mut sig, "sig")),
                _ => None,
            };
            if let Some((slot, name)) = slot {
                if slot.is_some() {
                    return Err(XMatrixError::Duplicate(name));
                }
                *slot = Some(value);
            }
            skip_ws(&mut pos);
            match bytes.get(pos) {
                None => break,
                Some(b',') => pos += 1,
                Some(_) => return Err(XMatrixError::Syntax { offset: pos }),
            }
        }
        let key = key.ok_or(XMatrixError::Missing("key"))?;
        if !key.starts_with("ed25519:") {
            return Err(XMatrixError::KeyId(key));
        }
        let sig = sig.ok_or(XMatrixError::Missing("sig"))?;
        Ok(XMatrix {
            origin: origin.ok_or(XMatrixError::Missing("origin"))?,
            destination,
            key,
            signature: b64::decode_array::<64>(&sig).ok_or(XMatrixError::SignatureEncoding)?,
        })
    }

    /// The header value, as real servers send it.
    pub fn to_header_value(&self) -> String {
        fn quote(out: &mut String, value: &str) {
            out.push('"');
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        let mut out = String::from("X-Matrix origin=");
        quote(&mut out, &self.origin);
        if let Some(destination) = &self.destination {
            out.push_str(",destination=");
            quote(&mut out, destination);
        }
        out.push_str(",key=");
        quote(&mut out, &self.key);
        out.push_str(",sig=");
        quote(&mut out, &b64::encode(self.signature));
        out
    }
}

fn request_json(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Object {
    let mut object = Object::new();
    object.insert("method", method);
    object.insert("uri", uri);
    object.insert("origin", origin);
    object.insert("destination", destination);
    if let Some(content) = content {
        object.insert("content", content.clone());
    }
    object
}

/// Signs a request: `uri` is the path with its query string (`/_matrix/...?...`), `content`
/// the parsed JSON body if there is one.
pub fn sign_request(
    key: &SigningKey,
    origin: &str,
    destination: &str,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> XMatrix {
    let object = request_json(method, uri, origin, destination, content);
    XMatrix {
        origin: origin.to_owned(),
        destination: Some(destination.to_owned()),
        key: key.key_id().to_owned(),
        signature: key.sign(&signing_input(&object)),
    }
}

/// Verifies a received request for `this_server` against `origin_key`, the origin's key with
/// id `header.key` (looked up by the caller).
pub fn verify_request(
    header: &XMatrix,
    this_server: &str,
    method: &str,
    uri: &str,
    content: Option<&Value>,
    origin_key: &PublicKey,
) -> Result<(), XMatrixError> {
    if let Some(destination) = &header.destination
        && destination != this_server
    {
        return Err(XMatrixError::WrongDestination {
            expected: this_server.to_owned(),
            found: destination.clone(),
        });
    }
    let object = request_json(method, uri, &header.origin, this_server, content);
    if origin_key.verify(&signing_input(&object), &header.signature) {
        Ok(())
    } else {
        Err(XMatrixError::BadSignature)
    }
}
