//! Server notices (Synapse's `server_notices` settings): messages from the server's
//! administrators, sent by a user of the server's own into a room of its own per recipient.

use serde::{Deserialize, Serialize};

/// Who sends server notices and what their rooms look like. Without
/// `system_mxid_localpart`, server notices are off and the admin API's
/// `send_server_notice` answers 400, as Synapse's does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerNoticesConfig {
    /// The localpart of the user who sends the notices (created when first needed).
    pub system_mxid_localpart: Option<String>,
    /// That user's display name.
    pub system_mxid_display_name: Option<String>,
    /// That user's avatar (`mxc://`).
    pub system_mxid_avatar_url: Option<String>,
    /// The name of each notice room.
    pub room_name: String,
    /// The avatar of each notice room (`mxc://`).
    pub room_avatar_url: Option<String>,
    /// The topic of each notice room.
    pub room_topic: Option<String>,
    /// Whether recipients are joined to their notice room rather than invited.
    pub auto_join: bool,
}

impl Default for ServerNoticesConfig {
    fn default() -> Self {
        ServerNoticesConfig {
            system_mxid_localpart: None,
            system_mxid_display_name: None,
            system_mxid_avatar_url: None,
            room_name: "Server Notices".to_owned(),
            room_avatar_url: None,
            room_topic: None,
            auto_join: false,
        }
    }
}

impl ServerNoticesConfig {
    /// Server notices with `localpart` as their sender, the rest at the defaults.
    pub fn sent_by(localpart: impl Into<String>) -> Self {
        ServerNoticesConfig {
            system_mxid_localpart: Some(localpart.into()),
            ..ServerNoticesConfig::default()
        }
    }
}
