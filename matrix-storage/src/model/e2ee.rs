//! End-to-end encryption: device keys, one-time and fallback keys, and to-device messages.

use super::StreamPos;

/// A one-time key of a device, claimed at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeKey {
    /// The owner.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// `algorithm:id`, e.g. `signed_curve25519:AAAAHg`.
    pub key_id: String,
    /// The key (JSON).
    pub key: Vec<u8>,
}

/// A fallback key of a device: one per algorithm, handed out when the device has no one-time
/// key of that algorithm left, and then marked used (but kept) until the device replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackKey {
    /// The owner.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// The algorithm (the part of the key id before `:`).
    pub algorithm: String,
    /// `algorithm:id`.
    pub key_id: String,
    /// The key (JSON).
    pub key: Vec<u8>,
    /// Whether it was handed out since it was uploaded.
    pub used: bool,
}

/// A key handed out by [`crate::Storage::claim_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKey {
    /// `algorithm:id`.
    pub key_id: String,
    /// The key (JSON).
    pub key: Vec<u8>,
    /// Whether it is the device's fallback key (no one-time key of the algorithm was left).
    pub fallback: bool,
}

/// A to-device message to queue for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToDevice {
    /// The receiving user.
    pub user_id: String,
    /// The receiving device.
    pub device_id: String,
    /// The sending user.
    pub sender: String,
    /// The event type.
    pub kind: String,
    /// The content (JSON).
    pub content: Vec<u8>,
}

impl NewToDevice {
    /// What the message counts against a queue's byte bounds: its content, type and sender.
    pub fn size(&self) -> u64 {
        (self.content.len() + self.kind.len() + self.sender.len()) as u64
    }
}

/// A queued to-device message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToDeviceMessage {
    /// Its position in the stream.
    pub pos: StreamPos,
    /// The sending user.
    pub sender: String,
    /// The event type.
    pub kind: String,
    /// The content (JSON).
    pub content: Vec<u8>,
}

impl ToDeviceMessage {
    /// What the message counts against a queue's byte bounds, as [`NewToDevice::size`].
    pub fn size(&self) -> u64 {
        (self.content.len() + self.kind.len() + self.sender.len()) as u64
    }
}

/// A queued to-device message with the device it waits for (see
/// [`crate::InboxStore::to_device_range`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressedToDevice {
    /// The recipient.
    pub user_id: String,
    /// The recipient's device.
    pub device_id: String,
    /// The message.
    pub message: ToDeviceMessage,
}

/// What waits in a device's to-device queue, in all and from one sender (sizes as
/// [`NewToDevice::size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToDeviceUsage {
    /// Messages waiting.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Messages waiting from the sender asked about.
    pub sender_messages: u64,
    /// Their bytes.
    pub sender_bytes: u64,
}

impl ToDeviceUsage {
    /// Counts one waiting message; `sender` is the sender asked about.
    pub fn count(&mut self, message: &ToDeviceMessage, sender: &str) {
        let size = message.size();
        self.messages += 1;
        self.bytes += size;
        if message.sender == sender {
            self.sender_messages += 1;
            self.sender_bytes += size;
        }
    }
}

/// A user's dehydrated device (MSC3814): a device without access tokens, whose private keys
/// the user's clients keep here encrypted (`device_data`), so that it receives to-device
/// messages while none of them runs. At most one per user. The device itself (its
/// [`crate::Device`] record, keys, one-time keys and queue) is stored as any device's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DehydratedDevice {
    /// The owner.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// What the client stored (JSON), opaque to the server.
    pub device_data: Vec<u8>,
}
