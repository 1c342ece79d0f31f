//! [`KeyFetcher`]: the [`KeyProvider`] of a running server. Storage first, then the server
//! itself, then the configured notaries; what it learns goes to storage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use matrix_core::json::Object;
use matrix_core::signing::{KeyRing, verify_json};
use matrix_core::{PublicKey, Value};
use matrix_storage::{ChangeSet, RemoteKey, Storage};
use tokio::time::Instant;

use super::KeyProvider;
use super::server::{ServerKeys, verify_server_keys};
use crate::flight::Flights;
use crate::transport::{ResponseLimit, Transport};
use crate::{FederationError, FederationOptions, now_ms};

/// The spec's cap on how far ahead a key is trusted, whatever its `valid_until_ts`: 7 days.
pub const MAX_KEY_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;
/// Entries of a notary's answer looked at, at most.
const MAX_NOTARY_ENTRIES: usize = 16;
/// Signatures of a notary on one entry tried, at most.
const MAX_NOTARY_SIGNATURES: usize = 8;

/// What [`KeyFetcher`] needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyFetcherOptions {
    /// Our server name: our own keys come from storage (`our_keys`), never the network.
    pub server_name: String,
    /// Notaries asked when a server cannot give its keys itself, in order.
    pub notaries: Vec<String>,
    /// How long a failed look-up (no such key, or nobody answered) is remembered before
    /// the network is asked again: 1 minute.
    pub negative_ttl: Duration,
    /// Keys kept in memory at most (storage has them all): 10 000.
    pub max_cached_keys: usize,
    /// Failed look-ups remembered at most: 10 000.
    pub max_cached_misses: usize,
    /// Verified key responses kept for our notary endpoint: 1 000 servers.
    pub max_cached_responses: usize,
    /// The largest key answer read: 1 MiB.
    pub max_response_bytes: usize,
}

impl KeyFetcherOptions {
    /// The defaults, with our name and the notaries from `federation`.
    pub fn new(federation: &FederationOptions) -> Self {
        KeyFetcherOptions {
            server_name: federation.server_name.clone(),
            notaries: federation.trusted_key_servers.clone(),
            negative_ttl: Duration::from_secs(60),
            max_cached_keys: 10_000,
            max_cached_misses: 10_000,
            max_cached_responses: 1_000,
            max_response_bytes: 1 << 20,
        }
    }
}

/// A failed look-up, remembered for a while.
#[derive(Debug, Clone)]
struct Miss {
    until: Instant,
    /// Why nobody answered, or `None` when a server answered without the key.
    unreachable: Option<String>,
}

#[derive(Debug, Default)]
struct Memory {
    /// `(server, key_id) -> (key, valid until)`.
    keys: HashMap<(String, String), (PublicKey, i64)>,
    misses: HashMap<(String, String), Miss>,
    /// The latest verified response per server, with only the server's own signatures.
    responses: HashMap<String, Object>,
}

/// Inserts into a map bounded to `max` entries, forgetting everything when it is full (a
/// cache of storage or of the network: forgetting costs a look-up, never correctness).
fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, max: usize, k: K, v: V) {
    if max == 0 {
        return;
    }
    if map.len() >= max && !map.contains_key(&k) {
        map.clear();
    }
    map.insert(k, v);
}

/// The key provider of a server: see the module docs. Answers from memory or storage when
/// it can; a burst of look-ups for one unknown server makes one fetch; a failed look-up is
/// remembered for [`KeyFetcherOptions::negative_ttl`].
///
/// Keys are stored with `valid_until_ts` capped at 7 days after they were fetched; old keys
/// (`old_verify_keys`) are stored with their `expired_ts` as `valid_until_ts`, so they verify
/// what was sent before they expired and nothing after.
pub struct KeyFetcher {
    storage: Arc<dyn Storage>,
    transport: Arc<dyn Transport>,
    options: KeyFetcherOptions,
    memory: Mutex<Memory>,
    flights: Flights,
}

impl std::fmt::Debug for KeyFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFetcher")
            .field("transport", &self.transport)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl KeyFetcher {
    /// A fetcher over `storage`, reaching servers through `transport`.
    pub fn new(
        storage: Arc<dyn Storage>,
        transport: Arc<dyn Transport>,
        options: KeyFetcherOptions,
    ) -> Self {
        KeyFetcher {
            storage,
            transport,
            options,
            memory: Mutex::default(),
            flights: Flights::default(),
        }
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Our own key `key_id`, from storage.
    async fn own_key(
        &self,
        key_id: &str,
        valid_at: i64,
    ) -> Result<Option<PublicKey>, FederationError> {
        let keys = self.storage.our_keys().await?;
        let Some(key) = keys.iter().find(|key| key.key_id == key_id) else { return Ok(None) };
        if key.expired_ts.is_some_and(|expired| expired < valid_at) {
            return Ok(None);
        }
        let version = key_id.strip_prefix("ed25519:").unwrap_or(key_id);
        Ok(matrix_core::SigningKey::from_base64_seed(version, &key.seed)
            .ok()
            .map(|k| k.public_key()))
    }

    /// A key we already have (memory, then storage), valid at `valid_at`.
    async fn known(
        &self,
        server: &str,
        key_id: &str,
        valid_at: i64,
    ) -> Result<Option<PublicKey>, FederationError> {
        let id = (server.to_owned(), key_id.to_owned());
        if let Some((key, until)) = self.memory().keys.get(&id)
            && *until >= valid_at
        {
            return Ok(Some(*key));
        }
        let Some(stored) = self.storage.remote_key(server, key_id).await? else { return Ok(None) };
        let Ok(key) = PublicKey::from_base64(&stored.public_key) else { return Ok(None) };
        let max = self.options.max_cached_keys;
        bounded_insert(&mut self.memory().keys, max, id, (key, stored.valid_until_ts));
        Ok((stored.valid_until_ts >= valid_at).then_some(key))
    }

    fn missed(
        &self,
        server: &str,
        key_id: &str,
    ) -> Option<Result<Option<PublicKey>, FederationError>> {
        let id = (server.to_owned(), key_id.to_owned());
        let miss = self.memory().misses.get(&id).filter(|m| m.until > Instant::now()).cloned()?;
        Some(match miss.unreachable {
            None => Ok(None),
            Some(reason) => {
                Err(FederationError::Unreachable { destination: server.to_owned(), reason })
            }
        })
    }

    fn remember_miss(&self, server: &str, key_id: &str, unreachable: Option<String>) {
        let miss = Miss { until: Instant::now() + self.options.negative_ttl, unreachable };
        let id = (server.to_owned(), key_id.to_owned());
        let max = self.options.max_cached_misses;
        bounded_insert(&mut self.memory().misses, max, id, miss);
    }

    /// Stores checked keys (and remembers the response for our notary endpoint).
    async fn store(&self, keys: &ServerKeys, response: &Object) -> Result<(), FederationError> {
        let valid_until = keys.valid_until_ts.min(now_ms().saturating_add(MAX_KEY_VALIDITY_MS));
        let server = &keys.server_name;
        let rows: Vec<(String, PublicKey, i64)> = keys
            .verify_keys
            .iter()
            .map(|(id, key)| (id.clone(), *key, valid_until))
            .chain(
                keys.old_verify_keys
                    .iter()
                    .map(|(id, (key, expired))| (id.clone(), *key, *expired)),
            )
            .collect();
        let mut changes = ChangeSet::default();
        changes.remote_keys = rows
            .iter()
            .map(|(key_id, key, until)| RemoteKey {
                server: server.clone(),
                key_id: key_id.clone(),
                public_key: key.to_base64(),
                valid_until_ts: *until,
            })
            .collect();
        self.storage.apply(changes).await?;
        let mut own_signatures_only = response.clone();
        if let Some(signatures) = own_signatures_only.get_object("signatures") {
            let kept: Object = signatures
                .iter()
                .filter(|(signer, _)| *signer == server.as_str())
                .map(|(signer, value)| (signer.to_owned(), value.clone()))
                .collect();
            own_signatures_only.insert("signatures", kept);
        }
        let mut memory = self.memory();
        for (key_id, key, until) in rows {
            let max = self.options.max_cached_keys;
            memory.misses.remove(&(server.clone(), key_id.clone()));
            bounded_insert(&mut memory.keys, max, (server.clone(), key_id), (key, until));
        }
        let max = self.options.max_cached_responses;
        bounded_insert(&mut memory.responses, max, server.clone(), own_signatures_only);
        Ok(())
    }

    /// Sends a key request (unauthenticated, as the spec has them) and parses the answer.
    async fn ask(
        &self,
        destination: &str,
        method: http::Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Object, FederationError> {
        let mut request = http::Request::new(body.map(Bytes::from).unwrap_or_default());
        *request.method_mut() = method;
        *request.uri_mut() = uri.parse().map_err(|_| FederationError::Malformed {
            destination: destination.to_owned(),
            reason: format!("bad request URI {uri}"),
        })?;
        request
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        request.extensions_mut().insert(ResponseLimit(self.options.max_response_bytes));
        let response = self.transport.send(destination, request).await?;
        let malformed = |reason: String| FederationError::Malformed {
            destination: destination.to_owned(),
            reason,
        };
        if !response.status().is_success() {
            let body = response.body();
            return Err(FederationError::Status {
                destination: destination.to_owned(),
                status: response.status().as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned(),
            });
        }
        match matrix_core::json::parse_lenient(response.body()) {
            Ok(Value::Object(object)) => Ok(object),
            Ok(_) => Err(malformed("not a JSON object".to_owned())),
            Err(e) => Err(malformed(e.to_string())),
        }
    }

    /// `GET /_matrix/key/v2/server` of `server`, checked and stored.
    async fn fetch_direct(&self, server: &str) -> Result<ServerKeys, FederationError> {
        let body = self.ask(server, http::Method::GET, "/_matrix/key/v2/server", None).await?;
        let keys = verify_server_keys(&body, server).map_err(|e| FederationError::Malformed {
            destination: server.to_owned(),
            reason: e.to_string(),
        })?;
        self.store(&keys, &body).await?;
        Ok(keys)
    }

    /// A notary's own key: known, or fetched from the notary itself (never through another
    /// notary, and outside single flight, so that look-ups cannot wait on each other).
    async fn notary_key(
        &self,
        notary: &str,
        key_id: &str,
    ) -> Result<Option<PublicKey>, FederationError> {
        let now = now_ms();
        if notary == self.options.server_name {
            return self.own_key(key_id, now).await;
        }
        if let Some(key) = self.known(notary, key_id, now).await? {
            return Ok(Some(key));
        }
        self.fetch_direct(notary).await?;
        self.known(notary, key_id, now).await
    }

    /// `POST /_matrix/key/v2/query` to `notary` for `server`: every entry that is signed by
    /// the server's listed keys and by the notary is stored. Returns how many were.
    async fn fetch_via_notary(
        &self,
        notary: &str,
        server: &str,
        key_id: &str,
        valid_at: i64,
    ) -> Result<usize, FederationError> {
        let mut criteria = Object::new();
        criteria.insert("minimum_valid_until_ts", valid_at.max(0));
        let mut query = Object::new();
        query.object_entry("server_keys").object_entry(server).insert(key_id, criteria);
        let body = matrix_core::json::to_canonical_vec(&Value::Object(query));
        let answer =
            self.ask(notary, http::Method::POST, "/_matrix/key/v2/query", Some(body)).await?;
        let malformed = |reason: &str| FederationError::Malformed {
            destination: notary.to_owned(),
            reason: reason.to_owned(),
        };
        let entries = answer
            .get("server_keys")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("no `server_keys` list"))?;
        let mut stored = 0;
        let mut refused = 0;
        for entry in entries.iter().take(MAX_NOTARY_ENTRIES) {
            let Some(entry) = entry.as_object() else {
                refused += 1;
                continue;
            };
            let Ok(keys) = verify_server_keys(entry, server) else {
                refused += 1;
                continue;
            };
            if !self.signed_by_notary(entry, notary).await? {
                refused += 1;
                continue;
            }
            self.store(&keys, entry).await?;
            stored += 1;
        }
        if stored == 0 && refused > 0 {
            return Err(malformed("no entry signed by both the server and the notary"));
        }
        Ok(stored)
    }

    /// Whether `notary` signed `entry` with a key of its we can get, and every such
    /// signature verifies.
    async fn signed_by_notary(
        &self,
        entry: &Object,
        notary: &str,
    ) -> Result<bool, FederationError> {
        let Some(signatures) = entry.get_object("signatures").and_then(|s| s.get_object(notary))
        else {
            return Ok(false);
        };
        let mut ring = KeyRing::new();
        for (key_id, _) in signatures.iter().take(MAX_NOTARY_SIGNATURES) {
            match self.notary_key(notary, key_id).await {
                Ok(Some(key)) => ring.insert(notary, key_id, key),
                Ok(None) => {}
                Err(FederationError::Storage(e)) => return Err(e.into()),
                Err(_) => return Ok(false),
            }
        }
        Ok(verify_json(entry, notary, &ring).is_ok())
    }

    /// Looks the key up on the network: the server, then each notary. `Ok(None)` when
    /// someone answered without it, `Err` when nobody answered.
    async fn fetch(
        &self,
        server: &str,
        key_id: &str,
        valid_at: i64,
    ) -> Result<Option<PublicKey>, FederationError> {
        let mut answered = false;
        let mut last_error = None;
        match self.fetch_direct(server).await {
            Ok(_) => {
                answered = true;
                if let Some(key) = self.known(server, key_id, valid_at).await? {
                    return Ok(Some(key));
                }
            }
            Err(e @ FederationError::Storage(_)) => return Err(e),
            Err(e) => last_error = Some(e),
        }
        for notary in &self.options.notaries {
            if notary == server || *notary == self.options.server_name {
                continue;
            }
            match self.fetch_via_notary(notary, server, key_id, valid_at).await {
                Ok(_) => {
                    answered = true;
                    if let Some(key) = self.known(server, key_id, valid_at).await? {
                        return Ok(Some(key));
                    }
                }
                Err(e @ FederationError::Storage(_)) => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        match last_error {
            Some(e) if !answered => Err(e),
            _ => Ok(None),
        }
    }

    /// The latest verified response of `server` for our notary endpoint (with only the
    /// server's own signatures: add ours with [`super::notary_response`]). When the one we
    /// hold is not valid until `minimum_valid_until_ts`, the server is asked again; if it
    /// does not answer, the one we hold is returned anyway, as the spec asks of notaries.
    pub async fn response_for_notary(
        &self,
        server: &str,
        minimum_valid_until_ts: i64,
    ) -> Result<Option<Object>, FederationError> {
        let held = self.memory().responses.get(server).cloned();
        let fresh_enough = held
            .as_ref()
            .and_then(|r| r.get("valid_until_ts"))
            .and_then(Value::as_i64)
            .is_some_and(|until| until >= minimum_valid_until_ts);
        if fresh_enough || server == self.options.server_name {
            return Ok(held);
        }
        let _turn = self.flights.turn(server).await;
        match self.fetch_direct(server).await {
            Ok(_) => Ok(self.memory().responses.get(server).cloned()),
            Err(e @ FederationError::Storage(_)) => Err(e),
            Err(_) => Ok(held),
        }
    }
}

#[async_trait]
impl KeyProvider for KeyFetcher {
    async fn public_key(
        &self,
        server: &str,
        key_id: &str,
        valid_at_ts: i64,
    ) -> Result<Option<PublicKey>, FederationError> {
        if server == self.options.server_name {
            return self.own_key(key_id, valid_at_ts).await;
        }
        if let Some(key) = self.known(server, key_id, valid_at_ts).await? {
            return Ok(Some(key));
        }
        if let Some(miss) = self.missed(server, key_id) {
            return miss;
        }
        let _turn = self.flights.turn(server).await;
        // Whoever had the turn before may have found it.
        if let Some(key) = self.known(server, key_id, valid_at_ts).await? {
            return Ok(Some(key));
        }
        if let Some(miss) = self.missed(server, key_id) {
            return miss;
        }
        match self.fetch(server, key_id, valid_at_ts).await {
            Ok(Some(key)) => Ok(Some(key)),
            Ok(None) => {
                self.remember_miss(server, key_id, None);
                Ok(None)
            }
            Err(e @ FederationError::Storage(_)) => Err(e),
            Err(e) => {
                self.remember_miss(server, key_id, Some(e.to_string()));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
