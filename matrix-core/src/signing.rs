//! ed25519 signing and verification of JSON objects and events.
//!
//! ```
//! use matrix_core::{json, signing::{KeyRing, SigningKey, sign_json, verify_json}};
//!
//! let key = SigningKey::from_seed("1", &[7; 32]);
//! let mut object = json::parse_strict(br#"{"one":1,"two":"Two"}"#)?.as_object().unwrap().clone();
//! sign_json(&mut object, "example.org", &key);
//!
//! let mut keys = KeyRing::new();
//! keys.insert("example.org", key.key_id(), key.public_key());
//! verify_json(&object, "example.org", &keys).expect("valid signature");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;

use ed25519_dalek::{Signer as _, VerifyingKey};

use crate::b64;
use crate::hash::content_hash;
use crate::json::Object;
use crate::redaction::{EventJson, write_redacted};
use crate::room_version::{EventIdFormat, RoomVersionRules};

/// Keys left out of what a signature covers.
const SIGNING_DROP: &[&str] = &["signatures", "unsigned"];

/// The only signing algorithm Matrix defines.
pub const ED25519: &str = "ed25519";

/// Why a key could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not unpadded base64 of the right length.
    #[error("key is not base64 of {expected} bytes")]
    Encoding {
        /// Expected decoded length.
        expected: usize,
    },
    /// Not a point on the curve, or a point of small order.
    #[error("not a valid ed25519 public key")]
    InvalidPoint,
    /// The operating system's random number generator failed.
    #[error("no randomness available for key generation")]
    Randomness,
}

/// Why a signature check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The object has no `signatures` object.
    #[error("no signatures")]
    NoSignatures,
    /// A field needed to decide which servers must sign is missing or malformed.
    #[error("cannot tell who must sign: {0}")]
    MalformedEvent(&'static str),
    /// No ed25519 signature from this server, or none by a key we know.
    #[error("no signature from {server} by a known ed25519 key")]
    NoSignatureFrom {
        /// The server whose signature is missing.
        server: String,
    },
    /// A signature is not valid base64 of 64 bytes.
    #[error("signature by {server} {key_id} is not base64 of 64 bytes")]
    SignatureEncoding {
        /// The signing server.
        server: String,
        /// The key id.
        key_id: String,
    },
    /// A signature does not verify.
    #[error("signature by {server} {key_id} does not verify")]
    BadSignature {
        /// The signing server.
        server: String,
        /// The key id.
        key_id: String,
    },
}

/// An ed25519 signing key with its key id (`ed25519:<version>`).
pub struct SigningKey {
    key_id: String,
    inner: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key with this 32-byte seed; `version` is the part after `ed25519:`.
    pub fn from_seed(version: &str, seed: &[u8; 32]) -> Self {
        SigningKey {
            key_id: format!("{ED25519}:{version}"),
            inner: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    /// The key with this base64 seed (the format Synapse keeps in its signing key file).
    pub fn from_base64_seed(version: &str, seed: &str) -> Result<Self, KeyError> {
        let seed = b64::decode_array::<32>(seed).ok_or(KeyError::Encoding { expected: 32 })?;
        Ok(Self::from_seed(version, &seed))
    }

    /// A new random key from the operating system's generator.
    pub fn generate(version: &str) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| KeyError::Randomness)?;
        Ok(Self::from_seed(version, &seed))
    }

    /// The seed, base64 encoded, for storage.
    pub fn seed_base64(&self) -> String {
        b64::encode(self.inner.to_bytes())
    }

    /// The key id, `ed25519:<version>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.inner.verifying_key())
    }

    /// Signs raw bytes.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.inner.sign(message).to_bytes()
    }
}

/// An ed25519 public key, decompressed once so that each verification skips that step.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl PublicKey {
    /// From the 32 raw bytes. Points of small order are refused: no real key is one.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPoint)?;
        if key.is_weak() {
            return Err(KeyError::InvalidPoint);
        }
        Ok(PublicKey(key))
    }

    /// From unpadded base64, as in `/_matrix/key/v2/server`.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = b64::decode_array::<32>(text).ok_or(KeyError::Encoding { expected: 32 })?;
        Self::from_bytes(&bytes)
    }

    /// The raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Unpadded base64.
    pub fn to_base64(&self) -> String {
        b64::encode(self.0.as_bytes())
    }

    /// Checks `signature` over `message` with the checks libsodium (and so Synapse) makes: the
    /// key is not of small order (refused when the key is made), `R` is canonical and not of
    /// small order, `S` is canonical.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        if r_has_small_order(signature) {
            return false;
        }
        // dalek's cofactorless check compares the recomputed `R` in canonical encoding with the
        // signature's bytes, so a non-canonical `R` never matches, and refuses a non-canonical
        // `S`.
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        ed25519_dalek::Verifier::verify(&self.0, message, &signature).is_ok()
    }
}

/// Whether the `R` half of a signature encodes a point of small order (one of the eight
/// torsion points, either sign). Checked on the bytes, as libsodium does, without decompressing.
fn r_has_small_order(signature: &[u8; 64]) -> bool {
    static SMALL_ORDER: std::sync::LazyLock<[[u8; 32]; 8]> = std::sync::LazyLock::new(|| {
        curve25519_dalek::constants::EIGHT_TORSION.map(|point| {
            let mut bytes = point.compress().to_bytes();
            bytes[31] &= 0x7f;
            bytes
        })
    });
    let mut r = [0u8; 32];
    r.copy_from_slice(&signature[..32]);
    r[31] &= 0x7f;
    SMALL_ORDER.contains(&r)
}

/// Where verification finds public keys: by server name and key id.
pub trait VerifyKeys {
    /// The key `key_id` (e.g. `ed25519:abc`) of `server`, if known.
    fn key(&self, server: &str, key_id: &str) -> Option<&PublicKey>;
}

/// A simple in-memory [`VerifyKeys`].
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, HashMap<String, PublicKey>>,
}

impl KeyRing {
    /// An empty key ring.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds (or replaces) a server's key.
    pub fn insert(&mut self, server: &str, key_id: &str, key: PublicKey) {
        self.keys.entry(server.to_owned()).or_default().insert(key_id.to_owned(), key);
    }
}

impl VerifyKeys for KeyRing {
    fn key(&self, server: &str, key_id: &str) -> Option<&PublicKey> {
        self.keys.get(server)?.get(key_id)
    }
}

/// The canonical bytes a signature on `object` covers: without `signatures` and `unsigned`.
pub fn signing_input(object: &Object) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_redacted(object, None, SIGNING_DROP, &mut out);
    out
}

/// The canonical bytes a signature on an event covers: its redacted form without `signatures`
/// and `unsigned`.
pub fn event_signing_input(event: &(impl EventJson + ?Sized), rules: &RoomVersionRules) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_redacted(event, Some(&rules.redaction), SIGNING_DROP, &mut out);
    out
}

fn add_signature(object: &mut Object, server: &str, key_id: &str, signature: &[u8; 64]) {
    object.object_entry("signatures").object_entry(server).insert(key_id, b64::encode(signature));
}

/// Signs `object` in place as `server`, keeping any other signatures.
pub fn sign_json(object: &mut Object, server: &str, key: &SigningKey) {
    let signature = key.sign(&signing_input(object));
    add_signature(object, server, key.key_id(), &signature);
}

/// Adds `server`'s signature to an event signed by others already (a countersignature): over
/// its redacted form, as every signature of an event is; its hashes are left as they are.
pub fn sign_event(event: &mut Object, server: &str, key: &SigningKey, rules: &RoomVersionRules) {
    let signature = key.sign(&event_signing_input(event, rules));
    add_signature(event, server, key.key_id(), &signature);
}

/// Sets `hashes.sha256` to the content hash, then signs the redacted event as `server`.
pub fn hash_and_sign_event(
    event: &mut Object,
    server: &str,
    key: &SigningKey,
    rules: &RoomVersionRules,
) {
    let hash = b64::encode(content_hash(event));
    event.object_entry("hashes").insert("sha256", hash);
    let signature = key.sign(&event_signing_input(event, rules));
    add_signature(event, server, key.key_id(), &signature);
}

/// One signature to check: who, by which key, the decoded signature.
struct Check<'a> {
    server: &'a str,
    key_id: &'a str,
    key: &'a PublicKey,
    signature: [u8; 64],
}

/// The signatures of `server` on `object` that can be checked with known keys.
fn checks_for<'a>(
    object: &'a Object,
    server: &'a str,
    keys: &'a impl VerifyKeys,
    out: &mut Vec<Check<'a>>,
) -> Result<(), VerifyError> {
    let signatures = object.get_object("signatures").ok_or(VerifyError::NoSignatures)?;
    let before = out.len();
    if let Some(by_server) = signatures.get_object(server) {
        for (key_id, signature) in by_server {
            let Some((ED25519, _)) = key_id.split_once(':') else { continue };
            let Some(key) = keys.key(server, key_id) else { continue };
            let bad_encoding = || VerifyError::SignatureEncoding {
                server: server.to_owned(),
                key_id: key_id.to_owned(),
            };
            let signature =
                signature.as_str().and_then(b64::decode_array::<64>).ok_or_else(bad_encoding)?;
            out.push(Check { server, key_id, key, signature });
        }
    }
    if out.len() == before {
        return Err(VerifyError::NoSignatureFrom { server: server.to_owned() });
    }
    Ok(())
}

fn run_checks(checks: &[Check<'_>], message: &[u8]) -> Result<(), VerifyError> {
    for check in checks {
        if !check.key.verify(message, &check.signature) {
            return Err(VerifyError::BadSignature {
                server: check.server.to_owned(),
                key_id: check.key_id.to_owned(),
            });
        }
    }
    Ok(())
}

/// Checks that `server` signed `object` (the spec's "Checking for a signature"): every ed25519
/// signature of `server` by a key in `keys` must verify, and there must be at least one.
pub fn verify_json(
    object: &Object,
    server: &str,
    keys: &impl VerifyKeys,
) -> Result<(), VerifyError> {
    let mut checks = Vec::new();
    checks_for(object, server, keys, &mut checks)?;
    run_checks(&checks, &signing_input(object))
}

/// The outcome of [`verify_event`] when every required signature is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verified {
    /// Signatures and content hash are valid.
    All,
    /// Signatures are valid but the content hash is not: the event must be redacted.
    Signatures,
}

fn server_of(user_id: &str) -> Option<&str> {
    user_id.split_once(':').map(|(_, server)| server).filter(|s| !s.is_empty())
}

/// The servers whose signatures an event needs (the sender's; for rooms 1-2 also the event
/// id's; for restricted joins the authorising user's).
pub fn required_signers<'a>(
    event: &'a Object,
    rules: &RoomVersionRules,
) -> Result<Vec<&'a str>, VerifyError> {
    let mut servers = Vec::with_capacity(2);
    let content = event.get_object("content");
    let third_party_invite = event.get_str("type") == Some("m.room.member")
        && content.and_then(|c| c.get_str("membership")) == Some("invite")
        && content.is_some_and(|c| c.contains_key("third_party_invite"));
    if !third_party_invite {
        let sender = event.get_str("sender").ok_or(VerifyError::MalformedEvent("sender"))?;
        servers.push(server_of(sender).ok_or(VerifyError::MalformedEvent("sender"))?);
    }
    if rules.event_id_format == EventIdFormat::Opaque {
        let event_id = event.get_str("event_id").ok_or(VerifyError::MalformedEvent("event_id"))?;
        servers.push(server_of(event_id).ok_or(VerifyError::MalformedEvent("event_id"))?);
    }
    // A non-string value is ignored here (the authorization rules reject it).
    if rules.auth.restricted_join
        && let Some(user) = content.and_then(|c| c.get_str("join_authorised_via_users_server"))
    {
        servers.push(server_of(user).ok_or(VerifyError::MalformedEvent("join_authorised_via"))?);
    }
    servers.sort_unstable();
    servers.dedup();
    Ok(servers)
}

fn hash_matches(event: &(impl EventJson + ?Sized)) -> bool {
    let claimed = event.json().get_object("hashes").and_then(|h| h.get_str("sha256"));
    claimed.and_then(b64::decode_array::<32>).is_some_and(|claimed| claimed == content_hash(event))
}

/// Checks an event's signatures (of every server that must sign it) and its content hash.
///
/// `Ok(Verified::Signatures)` means the content hash is wrong and the event must be redacted
/// before use, as the spec requires.
pub fn verify_event(
    event: &(impl EventJson + ?Sized),
    keys: &impl VerifyKeys,
    rules: &RoomVersionRules,
) -> Result<Verified, VerifyError> {
    let mut checks = Vec::new();
    for server in required_signers(event.json(), rules)? {
        checks_for(event.json(), server, keys, &mut checks)?;
    }
    run_checks(&checks, &event_signing_input(event, rules))?;
    Ok(if hash_matches(event) { Verified::All } else { Verified::Signatures })
}

/// [`verify_event`] over many events with one ed25519 batch verification; where the batch
/// fails, each event is checked on its own to find the bad ones. The result for each event is
/// [`verify_event`]'s, except for one kind of signature no honest signer makes: batch
/// verification is cofactored, so an `R` with a torsion component (but not of small order,
/// which is refused in both paths) can pass the batch while the one-by-one check refuses it.
pub fn verify_events_batch<E: EventJson + ?Sized>(
    events: &[&E],
    keys: &impl VerifyKeys,
    rules: &RoomVersionRules,
) -> Vec<Result<Verified, VerifyError>> {
    struct Prepared<'a> {
        checks: Vec<Check<'a>>,
        message: Vec<u8>,
    }
    let prepared: Vec<Result<Prepared<'_>, VerifyError>> = events
        .iter()
        .map(|event| {
            let mut checks = Vec::new();
            for server in required_signers(event.json(), rules)? {
                checks_for(event.json(), server, keys, &mut checks)?;
            }
            Ok(Prepared { checks, message: event_signing_input(*event, rules) })
        })
        .collect();

    let mut batch_ok = true;
    let mut messages: Vec<&[u8]> = Vec::new();
    let mut signatures = Vec::new();
    let mut verifying_keys = Vec::new();
    for p in prepared.iter().flatten() {
        for check in &p.checks {
            if r_has_small_order(&check.signature) {
                // Not for the batch: the one-by-one fallback refuses it.
                batch_ok = false;
                continue;
            }
            messages.push(&p.message);
            signatures.push(ed25519_dalek::Signature::from_bytes(&check.signature));
            verifying_keys.push(check.key.0);
        }
    }
    batch_ok = batch_ok
        && (messages.is_empty()
            || ed25519_dalek::verify_batch(&messages, &signatures, &verifying_keys).is_ok());

    prepared
        .into_iter()
        .zip(events)
        .map(|(p, event)| {
            let p = p?;
            if !batch_ok {
                run_checks(&p.checks, &p.message)?;
            }
            Ok(if hash_matches(*event) { Verified::All } else { Verified::Signatures })
        })
        .collect()
}
