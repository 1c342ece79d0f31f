//! Cross-signing: a user's master, self-signing and user-signing keys
//! (`/keys/device_signing/upload`) and the signatures uploaded on keys
//! (`/keys/signatures/upload`), each checked with matrix-core's ed25519 before it is stored,
//! and merged into the keys that key queries answer.
//!
//! What is checked: a key is its owner's, of the usage it is uploaded as, with exactly one
//! valid ed25519 public key that is not one of the owner's device ids; the self-signing and
//! user-signing keys are signed by the master key. A signature is stored only when it
//! verifies, over an object equal (but for `signatures` and `unsigned`) to the key it signs:
//! a device of the user by their self-signing key, their master key by one of their devices,
//! another user's master key by their user-signing key.

use std::collections::BTreeMap;

use matrix_core::PublicKey;
use matrix_storage::{ChangeSet, CrossSigningKeyKind, CrossSigningKeys, KeySignature};
use serde_json::{Map, Value, json};

use super::Ephemeral;
use super::keys::{json_bytes, json_value};
use crate::error::ApiError;
use crate::services::federation::fan_out::{
    DeviceChange, device_list_updates, signing_key_updates,
};

/// The largest cross-signing key accepted, as JSON bytes (a key and a few signatures).
pub(crate) const MAX_KEY_BYTES: usize = 16 * 1024;

/// The most signed keys one `/keys/signatures/upload` may carry, over all its users (a
/// client signs its own device and master key, or one other user's master key, at a time).
pub(crate) const MAX_SIGNED_KEYS: usize = 100;

/// Keys uploaded through `/keys/device_signing/upload`, as the client sent them.
#[derive(Debug, Default, Clone)]
pub(crate) struct SigningKeysUpload {
    /// The master key.
    pub(crate) master: Option<Value>,
    /// The self-signing key.
    pub(crate) self_signing: Option<Value>,
    /// The user-signing key.
    pub(crate) user_signing: Option<Value>,
}

impl SigningKeysUpload {
    /// The keys given, with their kinds, master first.
    fn given(&self) -> impl Iterator<Item = (CrossSigningKeyKind, &Value)> {
        [
            (CrossSigningKeyKind::Master, &self.master),
            (CrossSigningKeyKind::SelfSigning, &self.self_signing),
            (CrossSigningKeyKind::UserSigning, &self.user_signing),
        ]
        .into_iter()
        .filter_map(|(kind, key)| key.as_ref().map(|key| (kind, key)))
    }
}

/// A user's cross-signing keys as a key query answers them, signatures merged.
#[derive(Debug, Default, Clone)]
pub(crate) struct CrossSigningView {
    /// The master key.
    pub(crate) master: Option<Value>,
    /// The self-signing key.
    pub(crate) self_signing: Option<Value>,
    /// The user-signing key (only for the user themselves).
    pub(crate) user_signing: Option<Value>,
}

/// Why one signed key of a `/keys/signatures/upload` was not stored: its entry in the
/// answer's `failures`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignatureFailure {
    errcode: &'static str,
    error: String,
}

impl SignatureFailure {
    fn new(errcode: &'static str, error: impl Into<String>) -> Self {
        SignatureFailure { errcode, error: error.into() }
    }
    fn invalid_signature() -> Self {
        Self::new("M_INVALID_SIGNATURE", "the signature does not verify")
    }
    fn to_json(&self) -> Value {
        json!({"errcode": self.errcode, "error": self.error})
    }
}

/// The public key (unpadded base64) of a cross-signing key, checked: `user_id` is `user`,
/// `usage` names `kind`, and `keys` holds exactly one `ed25519:<key>` entry whose value is
/// `<key>`, a valid ed25519 public key.
pub(crate) fn cross_signing_public(
    user: &str,
    kind: CrossSigningKeyKind,
    key: &Value,
) -> Result<String, ApiError> {
    let usage = kind.as_str();
    if key["user_id"] != user {
        return Err(ApiError::invalid_param(format!("the {usage} key is not of {user}")));
    }
    let usages = key["usage"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !usages.iter().any(|u| u == usage) {
        return Err(ApiError::invalid_param(format!("the {usage} key's usage is not {usage}")));
    }
    let keys = key["keys"].as_object().filter(|keys| keys.len() == 1);
    let Some((id, value)) = keys.and_then(|keys| keys.iter().next()) else {
        return Err(ApiError::invalid_param(format!("the {usage} key must hold one key")));
    };
    let public = id.strip_prefix("ed25519:").filter(|public| value == public);
    match public {
        Some(public) if PublicKey::from_base64(public).is_ok() => Ok(public.to_owned()),
        _ => Err(ApiError::invalid_param(format!("the {usage} key is not an ed25519 key"))),
    }
}

/// Whether `object` carries a signature of `signer`'s key `ed25519:<public>` that verifies
/// over its canonical form (without `signatures` and `unsigned`).
fn signed_by(object: &Value, signer: &str, public: &str) -> bool {
    let key_id = format!("ed25519:{public}");
    let Some(signature) = object["signatures"][signer][&key_id].as_str() else { return false };
    signature_verifies(object, signature, public)
}

/// Whether `signature` (unpadded base64) by the ed25519 key `public` verifies over
/// `object`'s canonical form.
fn signature_verifies(object: &Value, signature: &str, public: &str) -> bool {
    let Ok(key) = PublicKey::from_base64(public) else { return false };
    let Some(signature) = matrix_core::b64::decode_array::<64>(signature) else { return false };
    let Ok(parsed) = matrix_core::json::parse_lenient(&json_bytes(object)) else { return false };
    let Some(parsed) = parsed.as_object() else { return false };
    key.verify(&matrix_core::signing::signing_input(parsed), &signature)
}

/// `object` without `signatures` and `unsigned`: what a signature covers, and what must
/// equal the stored key a signature is uploaded for.
fn unsigned_form(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    object
}

/// Adds `signature` by `signer`'s `key_id` into `object`'s `signatures`.
fn merge_signature(object: &mut Value, signer: &str, key_id: &str, signature: &str) {
    let Some(map) = object.as_object_mut() else { return };
    let signatures = map.entry("signatures").or_insert_with(|| json!({}));
    if !signatures.is_object() {
        *signatures = json!({});
    }
    let by_signer =
        signatures.as_object_mut().map(|s| s.entry(signer.to_owned()).or_insert_with(|| json!({})));
    if let Some(Value::Object(by_signer)) = by_signer {
        by_signer.insert(key_id.to_owned(), json!(signature));
    }
}

/// The public key of a stored cross-signing key, if it has one (what was stored was checked).
fn stored_public(user: &str, kind: CrossSigningKeyKind, key: Option<&[u8]>) -> Option<String> {
    let value: Value = serde_json::from_slice(key?).ok()?;
    cross_signing_public(user, kind, &value).ok()
}

/// Whether an upload needs the user-interactive auth (the spec's rule): it does when a
/// master key is stored and the upload holds a key that differs from the stored one of
/// its kind.
fn upload_needs_auth(stored: &CrossSigningKeys, upload: &SigningKeysUpload) -> bool {
    if stored.master.is_none() {
        return false;
    }
    upload.given().any(|(kind, key)| {
        let held = stored.get(kind).and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok());
        held.as_ref() != Some(key)
    })
}

impl Ephemeral {
    /// Whether uploading `upload` for `user` needs the user-interactive auth now.
    pub(crate) async fn signing_keys_need_auth(
        &self,
        user: &str,
        upload: &SigningKeysUpload,
    ) -> Result<bool, ApiError> {
        Ok(upload_needs_auth(&self.storage.cross_signing_keys(user).await?, upload))
    }

    /// Stores `user`'s cross-signing keys after checking them (see the module doc); keys
    /// equal to the stored ones are left alone. A change goes into the device-list stream
    /// (the users sharing a room with `user` refetch their keys) and wakes them.
    /// `authenticated` says whether the request passed the user-interactive auth; without it,
    /// an upload that needs it (checked again here, under the upload lock) is refused.
    pub(crate) async fn upload_signing_keys(
        &self,
        user: &str,
        upload: &SigningKeysUpload,
        authenticated: bool,
    ) -> Result<(), ApiError> {
        let uploads = self.uploads.lock().await;
        let stored = self.storage.cross_signing_keys(user).await?;
        if !authenticated && upload_needs_auth(&stored, upload) {
            return Err(ApiError::forbidden("the keys changed meanwhile: authenticate"));
        }
        let master = match &upload.master {
            Some(master) => Some(cross_signing_public(user, CrossSigningKeyKind::Master, master)?),
            None => stored_public(user, CrossSigningKeyKind::Master, stored.master.as_deref()),
        };
        let Some(master) = master else {
            return Err(ApiError::missing_param("no master key is uploaded or stored"));
        };
        let devices: Vec<String> =
            self.storage.devices(user).await?.into_iter().map(|d| d.device_id).collect();
        let mut changes = ChangeSet::new();
        for (kind, key) in upload.given() {
            let bytes = json_bytes(key);
            if bytes.len() > MAX_KEY_BYTES {
                return Err(ApiError::list_too_long(kind.as_str(), MAX_KEY_BYTES));
            }
            let public = cross_signing_public(user, kind, key)?;
            if devices.contains(&public) {
                return Err(ApiError::forbidden("the key's id is one of the user's device ids"));
            }
            if kind != CrossSigningKeyKind::Master && !signed_by(key, user, &master) {
                return Err(ApiError::invalid_signature(format!(
                    "the {} key is not signed by the master key",
                    kind.as_str()
                )));
            }
            let held = stored.get(kind).and_then(|b| serde_json::from_slice::<Value>(b).ok());
            if held.as_ref() != Some(key) {
                changes.cross_signing_keys.push((user.to_owned(), kind, bytes));
            }
        }
        if changes.cross_signing_keys.is_empty() {
            return Ok(());
        }
        changes.device_list_changes.push(user.to_owned());
        // Other servers sharing a room hear of a new master or self-signing key.
        if let Some((_, ours)) = self.outbound.get() {
            let changed = |kind| changes.cross_signing_keys.iter().any(|(_, k, _)| *k == kind);
            let master = upload.master.as_ref().filter(|_| changed(CrossSigningKeyKind::Master));
            let self_signing =
                upload.self_signing.as_ref().filter(|_| changed(CrossSigningKeyKind::SelfSigning));
            let storage = self.storage.as_ref();
            let updates = signing_key_updates(storage, ours, user, master, self_signing).await?;
            changes.enqueue.extend(updates);
        }
        let destinations: Vec<String> = changes.enqueue.iter().map(|(d, _)| d.clone()).collect();
        self.storage.apply(changes).await?;
        drop(uploads);
        self.outbound_stored(destinations.iter().map(String::as_str));
        self.wake_sharing(user).await;
        Ok(())
    }

    /// Stores the signatures `user` uploads (`target user -> key id -> signed key`) that
    /// verify; answers the `failures` of the others. Stored signatures on the user's own
    /// keys go into the device-list stream (whoever tracks the user refetches). `ours` is
    /// this server's name (a signature on another server's user's key is checked for its
    /// form only).
    pub(crate) async fn upload_signatures(
        &self,
        user: &str,
        ours: &str,
        signed: BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<Map<String, Value>, ApiError> {
        let count: usize = signed.values().map(BTreeMap::len).sum();
        if count > MAX_SIGNED_KEYS {
            return Err(ApiError::list_too_long("the signed keys", MAX_SIGNED_KEYS));
        }
        let own = self.storage.cross_signing_keys(user).await?;
        let mut failures = Map::new();
        let mut changes = ChangeSet::new();
        let mut own_changed = false;
        for (target, keys) in signed {
            for (key_id, object) in keys {
                let outcome = if target == user {
                    self.own_signatures(user, &own, &key_id, &object).await
                } else {
                    self.other_signature(user, &own, (&target, ours), &key_id, &object).await
                };
                match outcome? {
                    Ok(signatures) => {
                        own_changed |= target == user;
                        changes.key_signatures.extend(signatures);
                    }
                    Err(failure) => {
                        let by_key = failures.entry(target.clone()).or_insert_with(|| json!({}));
                        if let Some(by_key) = by_key.as_object_mut() {
                            by_key.insert(key_id, failure.to_json());
                        }
                    }
                }
            }
        }
        if changes.key_signatures.is_empty() {
            return Ok(failures);
        }
        // The signer's own devices refetch too (a signature on another user's master key
        // is shown to its signer only).
        changes.device_list_changes.push(user.to_owned());
        if own_changed && let Some((_, ours)) = self.outbound.get() {
            let updates = self.own_signature_updates(user, ours, &changes.key_signatures).await?;
            changes.enqueue.extend(updates);
        }
        let destinations: Vec<String> = changes.enqueue.iter().map(|(d, _)| d.clone()).collect();
        self.storage.apply(changes).await?;
        self.outbound_stored(destinations.iter().map(String::as_str));
        if own_changed {
            self.wake_sharing(user).await;
        } else {
            self.wakeups.wake_all_of([user]);
        }
        Ok(failures)
    }

    /// What other servers sharing a room with `user` are told of new signatures on
    /// `user`'s own keys (`signatures`, about to be stored): an `m.device_list_update` per
    /// signed device and an `m.signing_key_update` for a signed master key, each with the
    /// key as it will be (those servers then fetch the keys again).
    async fn own_signature_updates(
        &self,
        user: &str,
        ours: &str,
        signatures: &[KeySignature],
    ) -> Result<crate::services::federation::fan_out::Queued, ApiError> {
        let own: Vec<&KeySignature> =
            signatures.iter().filter(|s| s.target_user == user && s.signer_user == user).collect();
        let mut master = self.cross_signing_view(None, user).await?.master;
        let master_id = master
            .as_ref()
            .and_then(|m| cross_signing_public(user, CrossSigningKeyKind::Master, m).ok());
        let mut master_signed = false;
        let mut devices = BTreeMap::new();
        for signature in own {
            let key_id = signature.signer_key_id.as_str();
            if Some(&signature.target_key) == master_id.as_ref() {
                if let Some(master) = master.as_mut() {
                    merge_signature(master, user, key_id, &signature.signature);
                    master_signed = true;
                }
                continue;
            }
            if !devices.contains_key(&signature.target_key) {
                let target = std::slice::from_ref(&signature.target_key);
                devices.extend(self.device_keys(user, target).await?);
            }
            if let Some(keys) = devices.get_mut(&signature.target_key) {
                merge_signature(keys, user, key_id, &signature.signature);
            }
        }
        let storage = self.storage.as_ref();
        let changed: Vec<DeviceChange> = devices
            .into_iter()
            .map(|(device_id, keys)| DeviceChange::Keys { device_id, display_name: None, keys })
            .collect();
        let mut queued = device_list_updates(storage, ours, user, &changed).await?;
        let master = master.as_ref().filter(|_| master_signed);
        queued.extend(signing_key_updates(storage, ours, user, master, None).await?);
        Ok(queued)
    }

    /// The signatures of `user` on their own key `key_id`: their master key signed by their
    /// devices, or one of their devices signed by their self-signing key.
    async fn own_signatures(
        &self,
        user: &str,
        own: &CrossSigningKeys,
        key_id: &str,
        object: &Value,
    ) -> Result<Result<Vec<KeySignature>, SignatureFailure>, ApiError> {
        let device_keys = self.storage.device_keys(user).await?;
        let master = stored_public(user, CrossSigningKeyKind::Master, own.master.as_deref());
        if master.as_deref() == Some(key_id) {
            let stored = own.master.as_deref().map(json_value).transpose()?;
            if stored.map(|s| unsigned_form(&s)) != Some(unsigned_form(object)) {
                return Ok(Err(SignatureFailure::new("M_INVALID_PARAM", "not the stored key")));
            }
            return Ok(master_signed_by_devices(user, key_id, object, &device_keys));
        }
        let Some((_, stored)) = device_keys.iter().find(|(device, _)| device == key_id) else {
            return Ok(Err(SignatureFailure::new("M_NOT_FOUND", "no such device or key")));
        };
        if unsigned_form(&json_value(stored)?) != unsigned_form(object) {
            return Ok(Err(SignatureFailure::new("M_INVALID_PARAM", "not the stored key")));
        }
        let kind = CrossSigningKeyKind::SelfSigning;
        let Some(signing) = stored_public(user, kind, own.self_signing.as_deref()) else {
            return Ok(Err(SignatureFailure::new("M_MISSING_PARAM", "no self-signing key")));
        };
        Ok(signature_by(user, &signing, object).map(|signature| {
            vec![KeySignature {
                target_user: user.to_owned(),
                target_key: key_id.to_owned(),
                signer_user: user.to_owned(),
                signer_key_id: format!("ed25519:{signing}"),
                signature,
            }]
        }))
    }

    /// The signature of `user` by their user-signing key on `target`'s master key `key_id`.
    /// For a local target the key must be the stored one; another server's user's key is
    /// checked for its form only (the signature is over the object the client saw).
    async fn other_signature(
        &self,
        user: &str,
        own: &CrossSigningKeys,
        (target, ours): (&str, &str),
        key_id: &str,
        object: &Value,
    ) -> Result<Result<Vec<KeySignature>, SignatureFailure>, ApiError> {
        let kind = CrossSigningKeyKind::UserSigning;
        let Some(signing) = stored_public(user, kind, own.user_signing.as_deref()) else {
            return Ok(Err(SignatureFailure::new("M_MISSING_PARAM", "no user-signing key")));
        };
        let form = cross_signing_public(target, CrossSigningKeyKind::Master, object);
        if form.ok().as_deref() != Some(key_id) {
            return Ok(Err(SignatureFailure::new("M_INVALID_PARAM", "not a master key")));
        }
        if target.split_once(':').is_none_or(|(_, server)| server == ours) {
            let stored = self.storage.cross_signing_keys(target).await?.master;
            let stored = stored.as_deref().map(json_value).transpose()?;
            if stored.map(|s| unsigned_form(&s)) != Some(unsigned_form(object)) {
                return Ok(Err(SignatureFailure::new("M_NOT_FOUND", "not the user's master key")));
            }
        }
        Ok(signature_by(user, &signing, object).map(|signature| {
            vec![KeySignature {
                target_user: target.to_owned(),
                target_key: key_id.to_owned(),
                signer_user: user.to_owned(),
                signer_key_id: format!("ed25519:{signing}"),
                signature,
            }]
        }))
    }

    /// A user's cross-signing keys as `requester` sees them: the user-signing key only for
    /// the user themselves; signatures merged from storage, the user's own and (on the
    /// master key) the requester's. `requester` `None` is another server asking.
    pub(crate) async fn cross_signing_view(
        &self,
        requester: Option<&str>,
        user: &str,
    ) -> Result<CrossSigningView, ApiError> {
        let stored = self.storage.cross_signing_keys(user).await?;
        let mut view = CrossSigningView::default();
        if stored.master.is_none() {
            return Ok(view);
        }
        let signatures = self.storage.key_signatures(user).await?;
        for kind in CrossSigningKeyKind::ALL {
            if kind == CrossSigningKeyKind::UserSigning && requester != Some(user) {
                continue;
            }
            let Some(bytes) = stored.get(kind) else { continue };
            let mut key = json_value(bytes)?;
            if let Some(public) = stored_public(user, kind, Some(bytes)) {
                for signature in signatures.iter().filter(|s| s.target_key == public) {
                    let signer = signature.signer_user.as_str();
                    if signer == user || Some(signer) == requester {
                        merge_signature(
                            &mut key,
                            signer,
                            &signature.signer_key_id,
                            &signature.signature,
                        );
                    }
                }
            }
            match kind {
                CrossSigningKeyKind::Master => view.master = Some(key),
                CrossSigningKeyKind::SelfSigning => view.self_signing = Some(key),
                CrossSigningKeyKind::UserSigning => view.user_signing = Some(key),
            }
        }
        Ok(view)
    }

    /// Merges into another server's user's master key the signatures `requester` made on
    /// it (shown to the signer only).
    pub(crate) async fn merge_own_signatures(
        &self,
        requester: &str,
        user: &str,
        master: &mut Value,
    ) -> Result<(), ApiError> {
        let Ok(public) = cross_signing_public(user, CrossSigningKeyKind::Master, master) else {
            return Ok(());
        };
        for signature in self.storage.key_signatures(user).await? {
            if signature.target_key == public && signature.signer_user == requester {
                merge_signature(master, requester, &signature.signer_key_id, &signature.signature);
            }
        }
        Ok(())
    }

    /// Merges into device keys the signatures their owner's current self-signing key made
    /// on them (those of a replaced one are left out).
    pub(super) async fn merge_device_signatures(
        &self,
        user: &str,
        devices: &mut BTreeMap<String, Value>,
    ) -> Result<(), ApiError> {
        if devices.is_empty() {
            return Ok(());
        }
        let keys = self.storage.cross_signing_keys(user).await?;
        let kind = CrossSigningKeyKind::SelfSigning;
        let Some(signing) = stored_public(user, kind, keys.self_signing.as_deref()) else {
            return Ok(());
        };
        let signing = format!("ed25519:{signing}");
        for signature in self.storage.key_signatures(user).await? {
            if signature.signer_user != user || signature.signer_key_id != signing {
                continue;
            }
            if let Some(keys) = devices.get_mut(&signature.target_key) {
                merge_signature(keys, user, &signature.signer_key_id, &signature.signature);
            }
        }
        Ok(())
    }
}

/// The signatures on `user`'s master key `master` by their devices that verify; a failure
/// when none does.
fn master_signed_by_devices(
    user: &str,
    master: &str,
    object: &Value,
    device_keys: &[(String, Vec<u8>)],
) -> Result<Vec<KeySignature>, SignatureFailure> {
    let mut found = Vec::new();
    let Some(by_user) = object["signatures"][user].as_object() else {
        return Err(SignatureFailure::invalid_signature());
    };
    for (key_id, signature) in by_user {
        let Some(device) = key_id.strip_prefix("ed25519:") else { continue };
        let Some(signature) = signature.as_str() else { continue };
        let Some((_, keys)) = device_keys.iter().find(|(d, _)| d == device) else { continue };
        let keys: Value = serde_json::from_slice(keys).unwrap_or_default();
        let Some(public) = keys["keys"][key_id].as_str() else { continue };
        if !signature_verifies(object, signature, public) {
            return Err(SignatureFailure::invalid_signature());
        }
        found.push(KeySignature {
            target_user: user.to_owned(),
            target_key: master.to_owned(),
            signer_user: user.to_owned(),
            signer_key_id: key_id.clone(),
            signature: signature.to_owned(),
        });
    }
    if found.is_empty() {
        return Err(SignatureFailure::invalid_signature());
    }
    Ok(found)
}

/// `user`'s signature by the key `ed25519:<public>` on `object`, if it verifies.
fn signature_by(user: &str, public: &str, object: &Value) -> Result<String, SignatureFailure> {
    let key_id = format!("ed25519:{public}");
    let signature = object["signatures"][user][&key_id].as_str();
    match signature {
        Some(signature) if signature_verifies(object, signature, public) => {
            Ok(signature.to_owned())
        }
        _ => Err(SignatureFailure::invalid_signature()),
    }
}
