//! Dehydrated devices (MSC3814): a device of the user without access tokens, whose private
//! keys a client keeps here encrypted (`device_data`), so that it receives to-device messages
//! (room keys) while none of the user's clients runs; a client that later decrypts it reads
//! those messages ([`Accounts::dehydrated_events`]) and then replaces it.
//!
//! The device is an ordinary device in storage (it is listed in `/devices` and in key
//! queries, one-time keys are claimed from it, messages queue for it), plus a record naming
//! it with its data; a user has at most one. Replacing it deletes the old device with its keys
//! and queue first; deleting the device any way (`DELETE /devices/{id}` too) deletes the
//! record with it.

use matrix_storage::{ChangeSet, DehydratedDevice, Device, StreamPos, ToDeviceMessage};
use ruma::UserId;
use serde_json::Value;

use super::Accounts;
use crate::error::ApiError;
use crate::services::ephemeral::NewDeviceKeys;

/// The longest device id accepted, in bytes (clients use an unpadded base64 Curve25519
/// key: 43).
const MAX_DEVICE_ID_BYTES: usize = 255;

/// The most messages one batch of [`Accounts::dehydrated_events`] holds.
pub(crate) const MAX_EVENTS_PER_BATCH: usize = 1000;

/// A dehydrated device a client uploads (`PUT /dehydrated_device`).
#[derive(Debug)]
pub(crate) struct NewDehydratedDevice {
    pub(crate) device_id: String,
    /// An object with an `algorithm` (and whatever else the client keeps).
    pub(crate) device_data: Value,
    pub(crate) display_name: Option<String>,
    /// The device's keys, as in `/keys/upload` (the device keys of this user and this
    /// device).
    pub(crate) keys: NewDeviceKeys,
}

impl Accounts {
    /// Checks what a client uploads, before anything is read or written.
    fn check_dehydrated(&self, user: &UserId, new: &NewDehydratedDevice) -> Result<(), ApiError> {
        let id = new.device_id.as_str();
        if id.is_empty() || id.chars().any(char::is_control) {
            return Err(ApiError::invalid_param("device_id must be a non-empty printable string"));
        }
        if id.len() > MAX_DEVICE_ID_BYTES {
            return Err(ApiError::list_too_long("device_id", MAX_DEVICE_ID_BYTES));
        }
        if !new.device_data.get("algorithm").is_some_and(Value::is_string) {
            return Err(ApiError::bad_json("device_data must be an object with an algorithm"));
        }
        let size = serde_json::to_vec(&new.device_data).map_or(usize::MAX, |b| b.len());
        if size > self.max_dehydrated_device_bytes {
            return Err(ApiError::list_too_long("device_data", self.max_dehydrated_device_bytes));
        }
        if let Some(name) = &new.display_name
            && name.chars().count() > self.max_display_name_chars
        {
            return Err(ApiError::list_too_long(
                "initial_device_display_name",
                self.max_display_name_chars,
            ));
        }
        let keys = &new.keys.device_keys;
        if !keys.is_object() {
            return Err(ApiError::bad_json("device_keys must be an object"));
        }
        if keys["user_id"] != user.as_str() || keys["device_id"] != id {
            return Err(ApiError::invalid_param("the device keys are not of this device"));
        }
        Ok(())
    }

    /// Stores `new` as the user's dehydrated device, replacing (deleting) the one they had;
    /// answers its id. A device id of another of the user's devices is refused (it would
    /// take over a device in use).
    pub(crate) async fn put_dehydrated_device(
        &self,
        user: &UserId,
        new: NewDehydratedDevice,
    ) -> Result<String, ApiError> {
        self.check_dehydrated(user, &new)?;
        let device_data = serde_json::to_vec(&new.device_data)
            .map_err(|_| ApiError::bad_json("device_data does not serialise"))?;
        let _one_at_a_time = self.dehydration.lock().await;
        let old = self.storage.dehydrated_device(user.as_str()).await?;
        let replaces_itself = old.as_ref().is_some_and(|o| o.device_id == new.device_id);
        if !replaces_itself && self.storage.device(user.as_str(), &new.device_id).await?.is_some() {
            return Err(ApiError::invalid_param("device_id names another device of this user"));
        }
        let mut changes = ChangeSet::new();
        if let Some(old) = old {
            changes.deleted_devices.push((user.to_string(), old.device_id));
            if replaces_itself {
                // In one change set, the deletion would apply after the device is written
                // again (and delete it): the old device goes first.
                self.apply_deleting(std::mem::take(&mut changes)).await?;
            }
        }
        let id = new.device_id;
        changes.devices.push(Device {
            user_id: user.to_string(),
            device_id: id.clone(),
            display_name: new.display_name.clone(),
        });
        changes.dehydrated_devices.push(DehydratedDevice {
            user_id: user.to_string(),
            device_id: id.clone(),
            device_data,
        });
        let ephemeral = &self.ephemeral;
        let noted = ephemeral.note_new_device_keys(
            &mut changes,
            user.as_str(),
            &id,
            new.display_name,
            new.keys,
        );
        noted.await?;
        self.apply_deleting(changes).await?;
        self.ephemeral.device_added(user.as_str()).await;
        Ok(id)
    }

    /// The user's dehydrated device: its id and data.
    pub(crate) async fn dehydrated_device(
        &self,
        user: &UserId,
    ) -> Result<Option<(String, Value)>, ApiError> {
        let Some(stored) = self.storage.dehydrated_device(user.as_str()).await? else {
            return Ok(None);
        };
        let data = serde_json::from_slice(&stored.device_data)
            .map_err(|_| ApiError::unknown("a stored dehydrated device does not parse"))?;
        Ok(Some((stored.device_id, data)))
    }

    /// Deletes the user's dehydrated device (with its keys and messages); answers its id, or
    /// `None` when they had none.
    pub(crate) async fn delete_dehydrated_device(
        &self,
        user: &UserId,
    ) -> Result<Option<String>, ApiError> {
        let _one_at_a_time = self.dehydration.lock().await;
        let Some(old) = self.storage.dehydrated_device(user.as_str()).await? else {
            return Ok(None);
        };
        let mut changes = ChangeSet::new();
        changes.deleted_devices.push((user.to_string(), old.device_id.clone()));
        self.apply_deleting(changes).await?;
        Ok(Some(old.device_id))
    }

    /// A batch of the to-device messages of the user's dehydrated device `device` after
    /// `since` (see `Ephemeral::to_device_batch`: those before are deleted), at most `limit`,
    /// with the position to ask from next. A device that is not the user's dehydrated device
    /// (another user's, one of their own devices in use, or none): 403.
    pub(crate) async fn dehydrated_events(
        &self,
        user: &UserId,
        device: &str,
        since: StreamPos,
        limit: usize,
    ) -> Result<(Vec<ToDeviceMessage>, StreamPos), ApiError> {
        let ours = self.storage.dehydrated_device(user.as_str()).await?;
        if ours.is_none_or(|d| d.device_id != device) {
            return Err(ApiError::forbidden("this is not the user's dehydrated device"));
        }
        let limit = limit.clamp(1, MAX_EVENTS_PER_BATCH);
        self.ephemeral.to_device_batch(user.as_str(), device, since, limit).await
    }
}
