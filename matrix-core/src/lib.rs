#![doc = include_str!("../README.md")]

pub mod acl;
pub mod auth;
pub mod b64;
pub mod hash;
pub mod json;
pub mod pdu;
pub mod push;
pub mod redaction;
pub mod room_version;
pub mod signing;
pub mod xmatrix;

/// Matrix identifier types from ruma, so that our crates and the rest of the Rust Matrix
/// ecosystem speak the same types.
pub mod ids {
    pub use ruma_common::{
        EventId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId,
        RoomAliasId, RoomId, RoomVersionId, ServerName, UserId,
    };
}

pub use acl::ServerAcl;
pub use auth::{AuthEvent, AuthRejection, AuthState};
pub use json::{Number, Object, Value};
pub use pdu::{Pdu, PduError};
pub use redaction::EventJson;
pub use room_version::RoomVersionRules;
pub use signing::{KeyRing, PublicKey, SigningKey, Verified, VerifyError, VerifyKeys};
