//! Third-party networks (`/thirdparty/*`): the protocols application services bridge to, and
//! lookups of their users and locations (portal rooms), answered by asking the services that
//! list the protocol in their registration (`/_matrix/app/v1/thirdparty/*`). With no such
//! service the answers are what the spec and Synapse give: no protocols, an unknown protocol
//! 404 `M_NOT_FOUND`, lookups by Matrix id empty. A service that is down, slow or answers
//! garbage is left out of the answer; every answer is bounded.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::services::appservice::query::QUERY_TIMEOUT;
use crate::services::appservice::{Appservice, Appservices};

/// The most results one lookup answers (all services together).
const MAX_RESULTS: usize = 500;
/// The most instances one protocol lists (all services together).
const MAX_INSTANCES: usize = 500;

/// The third-party networks this server knows of (through its application services).
#[derive(Debug, Default)]
pub(crate) struct ThirdParty {}

/// `path` with `query` as its query string.
fn with_query<'a>(path: &str, query: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    serializer.extend_pairs(query);
    let query = serializer.finish();
    if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") }
}

fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// GET `path` of `service`: its JSON, or `None` (logged) when it failed.
async fn ask(services: &Appservices, service: &Appservice, path: &str) -> Option<Value> {
    match services
        .client()
        .call_within(service, reqwest::Method::GET, path, None, QUERY_TIMEOUT)
        .await
    {
        Ok(answer) => Some(answer),
        Err(e) => {
            tracing::warn!("application service {:?}: {path}: {e}", service.id());
            None
        }
    }
}

/// The objects of a list answer, up to what `results` still has room for.
fn collect_objects(answer: Option<Value>, results: &mut Vec<Value>) {
    if let Some(Value::Array(list)) = answer {
        let room = MAX_RESULTS.saturating_sub(results.len());
        results.extend(list.into_iter().filter(Value::is_object).take(room));
    }
}

impl ThirdParty {
    /// The services that list `protocol` and can be asked.
    fn providers_of<'a>(
        services: &'a Appservices,
        protocol: &'a str,
    ) -> impl Iterator<Item = &'a std::sync::Arc<Appservice>> {
        services.all().iter().filter(move |service| {
            service.registration.url.is_some()
                && service.registration.protocols.iter().any(|p| p == protocol)
        })
    }

    /// The protocols, by name, with their metadata as the services describe them; the
    /// instances of services that bridge the same protocol are merged, each given an
    /// `instance_id` unique across them.
    pub(crate) async fn providers(&self, services: &Appservices) -> BTreeMap<String, Value> {
        let mut names: Vec<&str> = services
            .all()
            .iter()
            .flat_map(|service| service.registration.protocols.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut found = BTreeMap::new();
        for name in names {
            if let Some(metadata) = self.metadata(services, name).await {
                found.insert(name.to_owned(), metadata);
            }
        }
        found
    }

    async fn metadata(&self, services: &Appservices, protocol: &str) -> Option<Value> {
        let path = format!("/_matrix/app/v1/thirdparty/protocol/{}", segment(protocol));
        let mut merged: Option<Value> = None;
        let mut instances = Vec::new();
        for service in Self::providers_of(services, protocol) {
            let Some(Value::Object(mut metadata)) = ask(services, service, &path).await else {
                continue;
            };
            if let Some(Value::Array(list)) = metadata.remove("instances") {
                for mut instance in list.into_iter().filter(Value::is_object) {
                    if instances.len() >= MAX_INSTANCES {
                        break;
                    }
                    if instance.get("instance_id").and_then(Value::as_str).is_none() {
                        let network = instance.get("network_id").and_then(Value::as_str);
                        let id = format!("{}|{}", service.id(), network.unwrap_or_default());
                        instance["instance_id"] = json!(id);
                    }
                    instances.push(instance);
                }
            }
            merged.get_or_insert(Value::Object(metadata));
        }
        let mut merged = merged?;
        merged["instances"] = Value::Array(instances);
        Some(merged)
    }

    /// One protocol's metadata: 404 `M_NOT_FOUND` for one nobody provides (or whose
    /// services do not answer).
    pub(crate) async fn protocol(
        &self,
        services: &Appservices,
        protocol: &str,
    ) -> Result<Value, ApiError> {
        self.metadata(services, protocol)
            .await
            .ok_or_else(|| ApiError::not_found(format!("no protocol {protocol:?} is bridged here")))
    }

    async fn lookup(
        &self,
        services: &Appservices,
        kind: &str,
        protocol: &str,
        fields: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        if Self::providers_of(services, protocol).next().is_none() {
            return Err(ApiError::not_found(format!("no protocol {protocol:?} is bridged here")));
        }
        let path = with_query(
            &format!("/_matrix/app/v1/thirdparty/{kind}/{}", segment(protocol)),
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let mut results = Vec::new();
        for service in Self::providers_of(services, protocol) {
            collect_objects(ask(services, service, &path).await, &mut results);
        }
        Ok(results)
    }

    /// Locations of a protocol matching the `fields`: 404 `M_NOT_FOUND` when none is found.
    pub(crate) async fn locations(
        &self,
        services: &Appservices,
        protocol: &str,
        fields: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        let found = self.lookup(services, "location", protocol, fields).await?;
        if found.is_empty() {
            return Err(ApiError::not_found("no portal rooms were found"));
        }
        Ok(found)
    }

    /// Users of a protocol matching the `fields`: 404 `M_NOT_FOUND` when none is found.
    pub(crate) async fn users(
        &self,
        services: &Appservices,
        protocol: &str,
        fields: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        let found = self.lookup(services, "user", protocol, fields).await?;
        if found.is_empty() {
            return Err(ApiError::not_found("no third-party users were found"));
        }
        Ok(found)
    }

    /// The third-party locations a Matrix room alias is a portal for, from the services
    /// whose alias namespace holds it.
    pub(crate) async fn locations_of_alias(
        &self,
        services: &Appservices,
        alias: &str,
    ) -> Vec<Value> {
        let path = with_query("/_matrix/app/v1/thirdparty/location", [("alias", alias)]);
        let mut results = Vec::new();
        for service in services.all().iter().filter(|s| {
            s.registration.url.is_some()
                && !s.registration.protocols.is_empty()
                && s.is_interested_in_alias(alias)
        }) {
            collect_objects(ask(services, service, &path).await, &mut results);
        }
        results
    }

    /// The third-party users a Matrix user id stands for, from the services whose user
    /// namespace holds it.
    pub(crate) async fn users_of_id(&self, services: &Appservices, user_id: &str) -> Vec<Value> {
        let path = with_query("/_matrix/app/v1/thirdparty/user", [("userid", user_id)]);
        let mut results = Vec::new();
        for service in services.all().iter().filter(|s| {
            s.registration.url.is_some()
                && !s.registration.protocols.is_empty()
                && s.is_interested_in_user(user_id)
        }) {
            collect_objects(ask(services, service, &path).await, &mut results);
        }
        results
    }
}
