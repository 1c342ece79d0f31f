//! Accounts: users, passwords (argon2id), devices and access tokens, and dehydrated devices
//! ([`dehydrated`]: devices without tokens, MSC3814).
//!
//! Access tokens are stored by their SHA-256, never as given: a stolen database holds no
//! usable token, and looking one up leaks nothing about a token's bytes through timing.

use std::collections::BTreeMap;
use std::sync::Arc;

use matrix_storage::{ChangeSet, Device, Storage, TokenOwner, User};
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use super::ephemeral::Ephemeral;
use crate::error::ApiError;

mod dehydrated;
mod moderation;
mod passwords;

pub(crate) use dehydrated::NewDehydratedDevice;
pub(crate) use moderation::{Restrictions, made_up_id};

/// A logged-in device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user.
    pub user_id: OwnedUserId,
    /// The device.
    pub device_id: OwnedDeviceId,
    /// The access token (only ever handed out here; stored hashed).
    pub access_token: String,
}

/// The device a login or registration asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceRequest {
    pub(crate) device_id: Option<OwnedDeviceId>,
    pub(crate) display_name: Option<String>,
}

pub(crate) struct Accounts {
    storage: Arc<dyn Storage>,
    server_name: OwnedServerName,
    /// Told of every deleted device, so that its keys and queued messages go with it.
    ephemeral: Arc<Ephemeral>,
    /// This server's hashes waiting for the hashing thread (a full queue: 429).
    hash_queue: passwords::Queue,
    /// Users known not to be deactivated (a cache of storage, so that checking each request's
    /// account costs no read).
    active: quick_cache::sync::Cache<String, ()>,
    /// Bumped by each deactivation: an authentication that read the user before a
    /// deactivation finished does not put it in `active`.
    deactivations: std::sync::atomic::AtomicU64,
    /// What the administrators decided about users (a cache of storage, so that checking
    /// each request's user costs no read; see [`moderation`]).
    restrictions: quick_cache::sync::Cache<String, Restrictions>,
    /// Serialises the administrators' changes to those decisions (read, change, write).
    moderation_writes: tokio::sync::Mutex<()>,
    /// Serialises the replacement of dehydrated devices (read the user's, delete it, write
    /// the new one), so that two at once leave one.
    dehydration: tokio::sync::Mutex<()>,
    /// The largest `device_data` of a dehydrated device, as JSON bytes.
    max_dehydrated_device_bytes: usize,
    /// The longest device display name, in characters.
    max_display_name_chars: usize,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::unknown("no randomness available"))?;
    Ok(bytes)
}

/// A random string of `len` characters from `alphabet`.
pub(crate) fn random_string(alphabet: &[u8], len: usize) -> Result<String, ApiError> {
    let bytes = random_bytes::<32>()?;
    Ok(bytes[..len]
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect())
}

/// The storage key of an access token.
pub(crate) fn token_key(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a localpart against the user id grammar (lower case ASCII letters, digits and
/// `._=-/+`), with the whole id at most 255 bytes.
fn check_localpart(localpart: &str, server_name: &str) -> Result<(), ApiError> {
    if localpart.is_empty() {
        return Err(ApiError::invalid_username("the user name is empty"));
    }
    if !localpart
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'))
    {
        return Err(ApiError::invalid_username("a user name may only contain a-z, 0-9 and ._=-/+"));
    }
    if localpart.len() + server_name.len() + 2 > 255 {
        return Err(ApiError::invalid_username("the user id would be over 255 bytes"));
    }
    Ok(())
}

impl Accounts {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        server_name: OwnedServerName,
        ephemeral: Arc<Ephemeral>,
        limits: &crate::config::LimitsConfig,
    ) -> Self {
        Accounts {
            storage,
            server_name,
            ephemeral,
            hash_queue: passwords::Queue::new(limits.password_hash_queue),
            active: quick_cache::sync::Cache::new(16_384),
            deactivations: std::sync::atomic::AtomicU64::new(0),
            restrictions: quick_cache::sync::Cache::new(16_384),
            moderation_writes: tokio::sync::Mutex::new(()),
            dehydration: tokio::sync::Mutex::new(()),
            max_dehydrated_device_bytes: limits.max_dehydrated_device_bytes,
            max_display_name_chars: limits.max_displayname_chars,
        }
    }

    /// Applies a change set that deletes devices (storage deletes their keys, one-time keys,
    /// fallback keys, to-device queues and transaction ids with them), with a device-list
    /// change when one had keys, in the same change set: every way a device goes (logout,
    /// deletion, password change, deactivation) comes through here.
    async fn apply_deleting(&self, mut changes: ChangeSet) -> Result<(), ApiError> {
        let mut by_user: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (user, device) in &changes.deleted_devices {
            by_user.entry(user.clone()).or_default().push(device.clone());
        }
        let mut with_keys = Vec::new();
        for (user, devices) in by_user {
            if self.ephemeral.note_devices_deleted(&mut changes, &user, &devices).await? {
                with_keys.push(user);
            }
        }
        let destinations: Vec<String> = changes.enqueue.iter().map(|(d, _)| d.clone()).collect();
        self.storage.apply(changes).await?;
        self.ephemeral.outbound_stored(destinations.iter().map(String::as_str));
        for user in with_keys {
            self.ephemeral.devices_deleted(&user).await;
        }
        Ok(())
    }

    async fn hash_password(&self, password: String) -> Result<String, ApiError> {
        passwords::hash_password(password, random_bytes::<16>()?, &self.hash_queue).await
    }

    async fn verify_password(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, ApiError> {
        passwords::verify_password(password, hash, &self.hash_queue).await
    }

    fn user_id(&self, localpart: &str) -> Result<OwnedUserId, ApiError> {
        check_localpart(localpart, self.server_name.as_str())?;
        UserId::parse(format!("@{localpart}:{}", self.server_name))
            .map_err(|e| ApiError::invalid_username(e.to_string()))
    }

    /// The user a login names: a full id on this server, or a localpart.
    pub(crate) fn named_user(&self, name: &str) -> Option<OwnedUserId> {
        let id = if name.starts_with('@') {
            UserId::parse(name).ok()?
        } else {
            UserId::parse(format!("@{}:{}", name.to_lowercase(), self.server_name)).ok()?
        };
        (id.server_name() == self.server_name).then_some(id)
    }

    /// Whether a localpart is free (an invalid one is an error).
    pub(crate) async fn available(&self, localpart: &str) -> Result<bool, ApiError> {
        let user_id = self.user_id(localpart)?;
        Ok(self.storage.user(user_id.as_str()).await?.is_none())
    }

    /// Creates a user (no device); `localpart` `None` picks a free random one.
    pub(crate) async fn create_user(
        &self,
        localpart: Option<&str>,
        password: Option<String>,
        admin: bool,
        device: Option<DeviceRequest>,
    ) -> Result<(OwnedUserId, Option<Session>), ApiError> {
        let user_id = match localpart {
            Some(localpart) => self.user_id(localpart)?,
            None => self.user_id(&random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 12)?)?,
        };
        let password_hash = match password {
            Some(password) => Some(self.hash_password(password).await?),
            None => None,
        };
        let mut changes = ChangeSet::new();
        changes.new_users.push(User {
            user_id: user_id.to_string(),
            password_hash,
            admin,
            deactivated: false,
        });
        // The display name starts as the localpart, as Synapse sets it: clients name direct
        // chats after their members' display names.
        let displayname = Some(user_id.localpart().to_owned());
        changes.profiles.push((
            user_id.to_string(),
            matrix_storage::Profile { displayname: displayname.clone(), avatar_url: None },
        ));
        changes.directory_users.push(matrix_storage::DirectoryUser {
            user_id: user_id.to_string(),
            displayname,
            ..matrix_storage::DirectoryUser::default()
        });
        let session = match device {
            Some(device) => Some(self.new_session(&mut changes, &user_id, device)?),
            None => None,
        };
        match self.storage.apply(changes).await {
            Ok(_) => Ok((user_id, session)),
            Err(e) if e.kind() == matrix_storage::ErrorKind::Conflict => {
                Err(ApiError::user_in_use())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds a device and its access token to `changes`.
    fn new_session(
        &self,
        changes: &mut ChangeSet,
        user_id: &UserId,
        device: DeviceRequest,
    ) -> Result<Session, ApiError> {
        let device_id = match device.device_id {
            Some(id) => id,
            None => OwnedDeviceId::from(random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10)?),
        };
        let token_bytes = random_bytes::<32>()?;
        let access_token = format!("mht_{}", matrix_core::b64::encode_url_safe(token_bytes));
        changes.devices.push(Device {
            user_id: user_id.to_string(),
            device_id: device_id.to_string(),
            display_name: device.display_name,
        });
        changes.new_tokens.push((
            token_key(&access_token),
            TokenOwner { user_id: user_id.to_string(), device_id: device_id.to_string() },
        ));
        Ok(Session { user_id: user_id.to_owned(), device_id, access_token })
    }

    /// Logs in with a password: a new device (or the one named) with a new token.
    pub(crate) async fn login_password(
        &self,
        user: &str,
        password: String,
        device: DeviceRequest,
    ) -> Result<Session, ApiError> {
        let wrong = || ApiError::forbidden("wrong user name or password");
        let stored = match self.named_user(user) {
            Some(user_id) => self.storage.user(user_id.as_str()).await?,
            None => None,
        };
        let hash = stored.as_ref().and_then(|u| u.password_hash.clone());
        // Checked even for unknown users (against a decoy), so timing tells nothing.
        if !self.verify_password(password, hash).await? {
            return Err(wrong());
        }
        let stored = stored.ok_or_else(wrong)?;
        if stored.deactivated {
            return Err(ApiError::user_deactivated());
        }
        let user_id = UserId::parse(&stored.user_id).map_err(|_| wrong())?;
        let mut changes = ChangeSet::new();
        if let Some(existing) = &device.device_id {
            // Logging in again on a device replaces its tokens: the old device goes first.
            // Its keys stay (a client logs in again on its device id to keep its identity).
            changes.deleted_devices.push((user_id.to_string(), existing.to_string()));
            self.storage.apply(std::mem::take(&mut changes)).await?;
        }
        let session = self.new_session(&mut changes, &user_id, device)?;
        self.storage.apply(changes).await?;
        Ok(session)
    }

    /// Logs in an existing account without a password (an application service's
    /// `m.login.application_service`, already checked to own the user): a new device (or the
    /// one named) with a new token.
    pub(crate) async fn login_trusted(
        &self,
        user_id: &UserId,
        device: DeviceRequest,
    ) -> Result<Session, ApiError> {
        match self.storage.user(user_id.as_str()).await? {
            Some(user) if user.deactivated => return Err(ApiError::user_deactivated()),
            Some(_) => {}
            None => return Err(ApiError::forbidden("the user does not exist")),
        }
        let mut changes = ChangeSet::new();
        if let Some(existing) = &device.device_id {
            changes.deleted_devices.push((user_id.to_string(), existing.to_string()));
            self.storage.apply(std::mem::take(&mut changes)).await?;
        }
        let session = self.new_session(&mut changes, user_id, device)?;
        self.storage.apply(changes).await?;
        Ok(session)
    }

    /// Whether `user_id` is an account of this server that is not deactivated.
    pub(crate) async fn is_active(&self, user_id: &UserId) -> Result<bool, ApiError> {
        if self.active.get(user_id.as_str()).is_some() {
            return Ok(true);
        }
        Ok(matches!(self.storage.user(user_id.as_str()).await?, Some(user) if !user.deactivated))
    }

    /// The user id of `localpart` on this server (checked against the grammar).
    pub(crate) fn local_user_id(&self, localpart: &str) -> Result<OwnedUserId, ApiError> {
        self.user_id(localpart)
    }

    /// Who an access token belongs to, and their device: none for a token an administrator
    /// had made to act as the user ([`Accounts::puppet_token`]).
    pub(crate) async fn authenticate(
        &self,
        token: &str,
    ) -> Result<(OwnedUserId, Option<OwnedDeviceId>), ApiError> {
        let hash = token_key(token);
        let (owner, device) = match self.storage.token(&hash).await? {
            Some(owner) => (owner.user_id, Some(OwnedDeviceId::from(owner.device_id))),
            None => (self.puppet_owner(&hash).await?.ok_or_else(ApiError::unknown_token)?, None),
        };
        let user_id = UserId::parse(&owner).map_err(|_| ApiError::unknown_token())?;
        // A token that outlived its account (a login that raced a deactivation, whose device
        // list was read before the login's session was written) opens nothing.
        if self.active.get(user_id.as_str()).is_none() {
            use std::sync::atomic::Ordering;
            let generation = self.deactivations.load(Ordering::Acquire);
            match self.storage.user(user_id.as_str()).await? {
                Some(user) if !user.deactivated => {}
                _ => return Err(ApiError::unknown_token()),
            }
            // Inserted, then withdrawn if a deactivation finished meanwhile (whose removal
            // may have come before this insert).
            self.active.insert(user_id.to_string(), ());
            if self.deactivations.load(Ordering::Acquire) != generation {
                self.active.remove(user_id.as_str());
            }
        }
        Ok((user_id, device))
    }

    /// Deletes a device and its tokens.
    pub(crate) async fn logout(&self, user_id: &UserId, device_id: &str) -> Result<(), ApiError> {
        let mut changes = ChangeSet::new();
        changes.deleted_devices.push((user_id.to_string(), device_id.to_owned()));
        self.apply_deleting(changes).await?;
        Ok(())
    }

    /// Deletes every device of a user, with their tokens.
    pub(crate) async fn logout_all(&self, user_id: &UserId) -> Result<(), ApiError> {
        let mut changes = ChangeSet::new();
        for device in self.storage.devices(user_id.as_str()).await? {
            changes.deleted_devices.push((user_id.to_string(), device.device_id));
        }
        self.apply_deleting(changes).await?;
        Ok(())
    }

    /// Whether `password` is the user's (for the user-interactive auth's password stage).
    pub(crate) async fn check_password(
        &self,
        user_id: &UserId,
        password: String,
    ) -> Result<bool, ApiError> {
        let hash = self.storage.user(user_id.as_str()).await?.and_then(|u| u.password_hash);
        self.verify_password(password, hash).await
    }

    /// Sets a new password; with `logout_others`, deletes every other device.
    pub(crate) async fn set_password(
        &self,
        user_id: &UserId,
        password: String,
        keep_device: Option<&str>,
        logout_others: bool,
    ) -> Result<(), ApiError> {
        let mut user =
            self.storage.user(user_id.as_str()).await?.ok_or_else(ApiError::unknown_token)?;
        user.password_hash = Some(self.hash_password(password).await?);
        let mut changes = ChangeSet::new();
        changes.updated_users.push(user);
        if logout_others {
            for device in self.storage.devices(user_id.as_str()).await? {
                if Some(device.device_id.as_str()) != keep_device {
                    changes.deleted_devices.push((user_id.to_string(), device.device_id));
                }
            }
        }
        self.apply_deleting(changes).await?;
        Ok(())
    }

    /// Marks an account deactivated and deletes its devices.
    pub(crate) async fn deactivate(&self, user_id: &UserId) -> Result<(), ApiError> {
        let mut user =
            self.storage.user(user_id.as_str()).await?.ok_or_else(ApiError::unknown_token)?;
        user.deactivated = true;
        user.password_hash = None;
        let mut changes = ChangeSet::new();
        changes.updated_users.push(user);
        changes.deleted_directory_users.push(user_id.to_string());
        for device in self.storage.devices(user_id.as_str()).await? {
            changes.deleted_devices.push((user_id.to_string(), device.device_id));
        }
        self.apply_deleting(changes).await?;
        self.deactivations.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.active.remove(user_id.as_str());
        Ok(())
    }

    /// A user's devices.
    pub(crate) async fn devices(&self, user_id: &UserId) -> Result<Vec<Device>, ApiError> {
        Ok(self.storage.devices(user_id.as_str()).await?)
    }

    /// One device of a user.
    pub(crate) async fn device(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> Result<Device, ApiError> {
        self.storage
            .device(user_id.as_str(), device_id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such device"))
    }

    /// Renames a device.
    pub(crate) async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<String>,
    ) -> Result<(), ApiError> {
        let mut device = self.device(user_id, device_id).await?;
        device.display_name = name.clone();
        let mut changes = ChangeSet::new();
        changes.devices.push(device);
        // Those who track the user's devices hear of the new name (with the keys).
        let user = user_id.as_str();
        let announced = self.ephemeral.note_device_renamed(&mut changes, user, device_id, name);
        let announced = announced.await?;
        let destinations: Vec<String> = changes.enqueue.iter().map(|(d, _)| d.clone()).collect();
        self.storage.apply(changes).await?;
        self.ephemeral.outbound_stored(destinations.iter().map(String::as_str));
        if announced {
            self.ephemeral.device_renamed(user).await;
        }
        Ok(())
    }

    /// Creates a device with no access token (an application service managing its users'
    /// devices, MSC4190): whether it was new (an existing one is renamed instead).
    pub(crate) async fn add_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<String>,
    ) -> Result<bool, ApiError> {
        if device_id.is_empty() || device_id.len() > 255 {
            return Err(ApiError::invalid_param("a device id is 1 to 255 bytes"));
        }
        if let Some(name) = &name
            && name.chars().count() > self.max_display_name_chars
        {
            return Err(ApiError::list_too_long("display_name", self.max_display_name_chars));
        }
        if self.storage.device(user_id.as_str(), device_id).await?.is_some() {
            self.rename_device(user_id, device_id, name).await?;
            return Ok(false);
        }
        let mut changes = ChangeSet::new();
        changes.devices.push(Device {
            user_id: user_id.to_string(),
            device_id: device_id.to_owned(),
            display_name: name,
        });
        self.storage.apply(changes).await?;
        Ok(true)
    }

    /// Deletes devices (with their tokens); unknown ones are skipped.
    pub(crate) async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[String],
    ) -> Result<(), ApiError> {
        let mut changes = ChangeSet::new();
        for device_id in device_ids {
            changes.deleted_devices.push((user_id.to_string(), device_id.clone()));
        }
        self.apply_deleting(changes).await?;
        Ok(())
    }
}
