//! The services: domain logic over the storage traits, with no HTTP in them.

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod appservice;
pub(crate) mod backup;
pub(crate) mod delayed_events;
pub(crate) mod ephemeral;
pub(crate) mod federation;
pub(crate) mod key_backup;
pub(crate) mod media;
pub(crate) mod migrate;
pub(crate) mod openid;
pub(crate) mod presence;
pub(crate) mod push;
pub(crate) mod rate_limit;
pub(crate) mod rooms;
pub(crate) mod sync;
pub(crate) mod thirdparty;
pub(crate) mod url_preview;
pub(crate) mod voip;
