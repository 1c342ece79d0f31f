//! Application service registrations (the bridges), in the shape Synapse reads from its YAML
//! registration files. The binary reads the files; this crate checks what they say when the
//! homeserver is built (see [`crate::BuildError::Appservice`]).

use serde::{Deserialize, Serialize};

/// One application service's registration, as a bridge writes it (`registration.yaml`).
/// Fields Synapse ignores are ignored here too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppserviceRegistration {
    /// A name unique among the registrations.
    pub id: String,
    /// Where the homeserver sends transactions and queries (`null`: nowhere; the service only
    /// acts as its users).
    #[serde(default)]
    pub url: Option<String>,
    /// The token the service authenticates to us with.
    pub as_token: String,
    /// The token we authenticate to the service with.
    pub hs_token: String,
    /// The localpart of the service's own user (`@sender_localpart:server`).
    pub sender_localpart: String,
    /// The users, room aliases and room ids the service is interested in.
    #[serde(default)]
    pub namespaces: Namespaces,
    /// Whether the service's users are rate limited (Synapse's default: yes; bridges set
    /// `false`).
    #[serde(default)]
    pub rate_limited: Option<bool>,
    /// The third-party protocols the service bridges (`/thirdparty/protocols`).
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Whether typing notices, receipts and presence are pushed too (MSC2409, stable name).
    #[serde(default)]
    pub receive_ephemeral: bool,
    /// The same under MSC2409's unstable name (bridges write both).
    #[serde(default, rename = "de.sorunome.msc2409.push_ephemeral")]
    pub push_ephemeral_unstable: bool,
    /// Whether to-device messages, device list changes and one-time key counts are pushed,
    /// and the service may act as its users' devices (MSC3202).
    #[serde(default, rename = "org.matrix.msc3202")]
    pub msc3202: bool,
    /// Whether the service manages its users' devices itself, logging in without `/login`
    /// (MSC4190).
    #[serde(default, rename = "io.element.msc4190")]
    pub msc4190: bool,
}

impl AppserviceRegistration {
    /// A registration with empty namespaces (tests and embedders fill the rest in).
    pub fn new(
        id: impl Into<String>,
        url: Option<String>,
        as_token: impl Into<String>,
        hs_token: impl Into<String>,
        sender_localpart: impl Into<String>,
    ) -> Self {
        AppserviceRegistration {
            id: id.into(),
            url,
            as_token: as_token.into(),
            hs_token: hs_token.into(),
            sender_localpart: sender_localpart.into(),
            namespaces: Namespaces::default(),
            rate_limited: None,
            protocols: Vec::new(),
            receive_ephemeral: false,
            push_ephemeral_unstable: false,
            msc3202: false,
            msc4190: false,
        }
    }

    /// Whether ephemeral events (typing, receipts, presence) are pushed to the service.
    pub fn receives_ephemeral(&self) -> bool {
        self.receive_ephemeral || self.push_ephemeral_unstable
    }

    /// Whether the service's users are rate limited.
    pub fn is_rate_limited(&self) -> bool {
        self.rate_limited.unwrap_or(true)
    }
}

/// The three namespaces of a registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Namespaces {
    /// User ids (`@irc_.*:example\.org`).
    #[serde(default)]
    pub users: Vec<Namespace>,
    /// Room aliases (`#irc_.*:example\.org`).
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    /// Room ids.
    #[serde(default)]
    pub rooms: Vec<Namespace>,
}

/// One regular expression of a namespace. Like Synapse, it matches from the start of the id
/// (it need not match to the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Namespace {
    /// Whether only this service may own what matches (no ordinary user registers a matching
    /// id, no other service claims it).
    #[serde(default)]
    pub exclusive: bool,
    /// The regular expression.
    pub regex: String,
}

impl Namespace {
    /// A namespace for `regex`.
    pub fn new(regex: impl Into<String>, exclusive: bool) -> Self {
        Namespace { exclusive, regex: regex.into() }
    }
}
