//! The homeserver's settings. Plain data: the binary reads them from a file, a test builds
//! them in code; this crate never reads files or the environment.

use serde::{Deserialize, Serialize};

/// Everything the homeserver can be told. Every field has a default, and the defaults are the
/// secure ones: registration closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The server name, the part of every user id after the `:` (`example.org`).
    pub server_name: String,
    /// Who may create an account.
    pub registration: RegistrationConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// What `/.well-known/matrix/*` answers.
    pub well_known: WellKnownConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost".to_owned(),
            registration: RegistrationConfig::default(),
            limits: LimitsConfig::default(),
            well_known: WellKnownConfig::default(),
        }
    }
}

impl Config {
    /// The default settings for `server_name`.
    pub fn new(server_name: impl Into<String>) -> Self {
        Config { server_name: server_name.into(), ..Config::default() }
    }
}

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RegistrationMode {
    /// Nobody: accounts are made by an administrator (`homeserver register-user`).
    #[default]
    Closed,
    /// Anybody, after the `m.login.dummy` stage.
    Open,
    /// Whoever has one of the registration tokens (`m.login.registration_token`).
    Token,
}

/// Registration settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RegistrationConfig {
    /// Who may register.
    pub mode: RegistrationMode,
    /// The tokens that allow registration when `mode` is `token`.
    pub tokens: Vec<String>,
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// The largest request body accepted, in bytes (larger: 413 `M_TOO_LARGE`).
    pub max_request_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { max_request_bytes: 1024 * 1024 }
    }
}

/// The answers of `/.well-known/matrix/client` and `/.well-known/matrix/server`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WellKnownConfig {
    /// The client base URL (`https://matrix.example.org`); unset: 404.
    pub client_base_url: Option<String>,
    /// The federation endpoint (`matrix.example.org:443`); unset: 404.
    pub server: Option<String>,
}
