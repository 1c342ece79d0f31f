//! Third-party networks (`/thirdparty/*`): the protocols application services bridge to, and
//! lookups of their users and locations (portal rooms). Application services are what provide
//! them; until they are wired in, no protocol is known, and every answer is what the spec and
//! Synapse give then: no protocols, an unknown protocol 404 `M_NOT_FOUND`, lookups by Matrix
//! id empty. The application service work replaces [`ThirdParty::providers`] with the
//! registered services that declare `protocols`, and the lookups with queries to them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ApiError;

/// The third-party networks this server knows of.
#[derive(Debug, Default)]
pub(crate) struct ThirdParty {}

impl ThirdParty {
    /// The protocols, by name, with their metadata (`user_fields`, `location_fields`, `icon`,
    /// `field_types`, `instances`).
    pub(crate) fn providers(&self) -> BTreeMap<String, Value> {
        BTreeMap::new()
    }

    /// One protocol's metadata: 404 `M_NOT_FOUND` for one nobody provides.
    pub(crate) fn protocol(&self, protocol: &str) -> Result<Value, ApiError> {
        self.providers()
            .remove(protocol)
            .ok_or_else(|| ApiError::not_found(format!("no protocol {protocol:?} is bridged here")))
    }

    /// Locations of a protocol matching the `fields`: 404 `M_NOT_FOUND` when none is found.
    pub(crate) fn locations(
        &self,
        protocol: &str,
        _fields: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        self.protocol(protocol)?;
        Err(ApiError::not_found("no portal rooms were found"))
    }

    /// Users of a protocol matching the `fields`: 404 `M_NOT_FOUND` when none is found.
    pub(crate) fn users(
        &self,
        protocol: &str,
        _fields: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        self.protocol(protocol)?;
        Err(ApiError::not_found("no third-party users were found"))
    }

    /// The third-party locations a Matrix room alias is a portal for (none).
    pub(crate) fn locations_of_alias(&self, _alias: &str) -> Vec<Value> {
        Vec::new()
    }

    /// The third-party users a Matrix user id stands for (none).
    pub(crate) fn users_of_id(&self, _user_id: &str) -> Vec<Value> {
        Vec::new()
    }
}
