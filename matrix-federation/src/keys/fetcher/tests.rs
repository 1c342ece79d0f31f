use matrix_core::SigningKey;
use matrix_core::signing::sign_json;
use matrix_storage::memory::MemoryStore;
use matrix_storage::{KeyStore, OurKey};

use super::*;
use crate::keys::server::{OldKey, server_keys_response};

const DAY: i64 = 24 * 3600 * 1000;

/// An answer, or why the destination is unreachable.
type Canned = Result<(u16, Object), String>;

/// Canned answers per destination and path; counts requests.
#[derive(Debug, Default)]
struct FakeNet {
    answers: Mutex<HashMap<(String, String), Canned>>,
    requests: Mutex<Vec<(String, String, Vec<u8>)>>,
}

impl FakeNet {
    fn answer(&self, destination: &str, path: &str, body: Object) {
        let key = (destination.to_owned(), path.to_owned());
        self.answers.lock().expect("lock").insert(key, Ok((200, body)));
    }
    fn fail(&self, destination: &str, path: &str) {
        let key = (destination.to_owned(), path.to_owned());
        self.answers.lock().expect("lock").insert(key, Err("connection refused".to_owned()));
    }
    fn requests(&self) -> Vec<(String, String, Vec<u8>)> {
        self.requests.lock().expect("lock").clone()
    }
    fn count(&self, destination: &str) -> usize {
        self.requests().iter().filter(|(d, _, _)| d == destination).count()
    }
}

#[async_trait]
impl Transport for FakeNet {
    async fn send(
        &self,
        destination: &str,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, FederationError> {
        let path = request.uri().path().to_owned();
        let body = request.body().to_vec();
        self.requests.lock().expect("lock").push((destination.to_owned(), path.clone(), body));
        // Let concurrent callers run, as a real request would.
        tokio::task::yield_now().await;
        let answer =
            self.answers.lock().expect("lock").get(&(destination.to_owned(), path)).cloned();
        match answer {
            Some(Ok((status, body))) => {
                let bytes = matrix_core::json::to_canonical_vec(&Value::Object(body));
                let mut response = http::Response::new(Bytes::from(bytes));
                *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
                Ok(response)
            }
            Some(Err(reason)) => {
                Err(FederationError::Unreachable { destination: destination.to_owned(), reason })
            }
            None => Err(FederationError::Unreachable {
                destination: destination.to_owned(),
                reason: "no route".to_owned(),
            }),
        }
    }
}

const SERVER: &str = "/_matrix/key/v2/server";
const QUERY: &str = "/_matrix/key/v2/query";

struct Setup {
    storage: Arc<MemoryStore>,
    net: Arc<FakeNet>,
    fetcher: Arc<KeyFetcher>,
}

fn setup(notaries: &[&str]) -> Setup {
    let storage = Arc::new(MemoryStore::new());
    let net = Arc::new(FakeNet::default());
    let mut federation = FederationOptions::new("us.org");
    federation.trusted_key_servers = notaries.iter().map(|n| (*n).to_owned()).collect();
    let fetcher =
        KeyFetcher::new(storage.clone(), net.clone(), KeyFetcherOptions::new(&federation));
    Setup { storage, net, fetcher: Arc::new(fetcher) }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(&format!("k{seed}"), &[seed; 32])
}

#[tokio::test]
async fn keys_are_fetched_once_then_read_from_memory_and_storage() {
    let Setup { storage, net, fetcher } = setup(&[]);
    let a = key(1);
    net.answer("a.org", SERVER, server_keys_response("a.org", &[&a], &[], now_ms() + DAY));
    let now = now_ms();
    assert_eq!(
        fetcher.public_key("a.org", a.key_id(), now).await.expect("ok"),
        Some(a.public_key())
    );
    assert_eq!(
        fetcher.public_key("a.org", a.key_id(), now).await.expect("ok"),
        Some(a.public_key())
    );
    assert_eq!(net.count("a.org"), 1);
    let stored = storage.remote_key("a.org", a.key_id()).await.expect("read").expect("stored");
    assert_eq!(stored.public_key, a.public_key().to_base64());
    // Another process over the same storage does not ask the network.
    let other = KeyFetcher::new(
        storage.clone(),
        net.clone(),
        KeyFetcherOptions::new(&FederationOptions::new("us.org")),
    );
    assert_eq!(other.public_key("a.org", a.key_id(), now).await.expect("ok"), Some(a.public_key()));
    assert_eq!(net.count("a.org"), 1);
    // The request was the plain key request.
    assert_eq!(net.requests()[0].1, SERVER);
}

#[tokio::test]
async fn validity_is_capped_at_seven_days_and_old_keys_verify_only_the_past() {
    let Setup { storage, net, fetcher } = setup(&[]);
    let (a, old) = (key(1), key(2));
    let now = now_ms();
    let old_key = OldKey {
        key_id: old.key_id().to_owned(),
        public_key: old.public_key(),
        expired_ts: now - DAY,
    };
    net.answer("a.org", SERVER, server_keys_response("a.org", &[&a], &[old_key], now + 365 * DAY));
    assert!(fetcher.public_key("a.org", a.key_id(), now).await.expect("ok").is_some());
    let stored = storage.remote_key("a.org", a.key_id()).await.expect("read").expect("stored");
    assert!(stored.valid_until_ts <= now_ms() + MAX_KEY_VALIDITY_MS);
    assert!(stored.valid_until_ts >= now + MAX_KEY_VALIDITY_MS);
    // Beyond the cap the key is not valid (the server is asked again, and says the same).
    assert_eq!(fetcher.public_key("a.org", a.key_id(), now + 8 * DAY).await.expect("ok"), None);
    assert_eq!(net.count("a.org"), 2);
    // The old key verifies events from before its expiry, not requests now.
    assert_eq!(
        fetcher.public_key("a.org", old.key_id(), now - 2 * DAY).await.expect("ok"),
        Some(old.public_key())
    );
    assert_eq!(fetcher.public_key("a.org", old.key_id(), now).await.expect("ok"), None);
    // Room versions 1 to 4 ignore validity.
    assert!(fetcher.public_key("a.org", old.key_id(), i64::MIN).await.expect("ok").is_some());
}

#[tokio::test(start_paused = true)]
async fn failures_are_remembered_briefly() {
    let Setup { net, fetcher, .. } = setup(&[]);
    let a = key(1);
    net.fail("a.org", SERVER);
    let now = now_ms();
    assert!(matches!(
        fetcher.public_key("a.org", a.key_id(), now).await,
        Err(FederationError::Unreachable { .. })
    ));
    assert!(fetcher.public_key("a.org", a.key_id(), now).await.is_err());
    assert_eq!(net.count("a.org"), 1);
    // An answer without the key is `None`, remembered too.
    net.answer("a.org", SERVER, server_keys_response("a.org", &[&key(3)], &[], now + DAY));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(fetcher.public_key("a.org", a.key_id(), now).await.expect("answered"), None);
    assert_eq!(fetcher.public_key("a.org", a.key_id(), now).await.expect("answered"), None);
    assert_eq!(net.count("a.org"), 2);
    // After the negative TTL the server is asked again.
    net.answer("a.org", SERVER, server_keys_response("a.org", &[&a], &[], now + DAY));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        fetcher.public_key("a.org", a.key_id(), now).await.expect("ok"),
        Some(a.public_key())
    );
}

#[tokio::test]
async fn forged_direct_answers_are_refused() {
    let Setup { storage, net, fetcher } = setup(&[]);
    let (a, mallory) = (key(1), key(9));
    // Signed by another key than the one listed.
    let mut forged = server_keys_response("a.org", &[&a], &[], now_ms() + DAY);
    forged.remove("signatures");
    sign_json(&mut forged, "a.org", &SigningKey::from_seed("k1", &[9; 32]));
    net.answer("a.org", SERVER, forged);
    assert!(matches!(
        fetcher.public_key("a.org", a.key_id(), now_ms()).await,
        Err(FederationError::Malformed { .. })
    ));
    // Another server's keys served under this name.
    net.answer("b.org", SERVER, server_keys_response("c.org", &[&mallory], &[], now_ms() + DAY));
    assert!(fetcher.public_key("b.org", mallory.key_id(), now_ms()).await.is_err());
    assert_eq!(storage.remote_key("a.org", a.key_id()).await.expect("read"), None);
    assert_eq!(storage.remote_key("c.org", mallory.key_id()).await.expect("read"), None);
}

fn notarised(
    server: &str,
    server_key: &SigningKey,
    notary: &str,
    notary_key: &SigningKey,
) -> Object {
    let mut entry = server_keys_response(server, &[server_key], &[], now_ms() + DAY);
    sign_json(&mut entry, notary, notary_key);
    entry
}

fn query_answer(entries: Vec<Object>) -> Object {
    let mut answer = Object::new();
    answer.insert("server_keys", entries.into_iter().map(Value::Object).collect::<Vec<_>>());
    answer
}

#[tokio::test]
async fn notaries_answer_for_unreachable_servers_with_both_signatures_checked() {
    let Setup { storage, net, fetcher } = setup(&["notary.org"]);
    let (a, n) = (key(1), key(5));
    net.fail("a.org", SERVER);
    net.answer(
        "notary.org",
        SERVER,
        server_keys_response("notary.org", &[&n], &[], now_ms() + DAY),
    );
    net.answer("notary.org", QUERY, query_answer(vec![notarised("a.org", &a, "notary.org", &n)]));
    let now = now_ms();
    assert_eq!(
        fetcher.public_key("a.org", a.key_id(), now).await.expect("ok"),
        Some(a.public_key())
    );
    assert!(storage.remote_key("a.org", a.key_id()).await.expect("read").is_some());
    // The query asked for the key with the time it must be valid at.
    let (_, _, body) = net.requests().into_iter().find(|(_, p, _)| p == QUERY).expect("query");
    let body = String::from_utf8(body).expect("utf-8");
    assert!(body.contains(r#""a.org":{"ed25519:k1":{"minimum_valid_until_ts":"#), "{body}");
    // The response kept for our own notary endpoint has only the server's signature.
    let kept = fetcher.response_for_notary("a.org", 0).await.expect("ok").expect("held");
    let signers: Vec<_> = kept.get_object("signatures").expect("signatures").keys().collect();
    assert_eq!(signers, vec!["a.org"]);
}

#[tokio::test]
async fn notary_answers_without_valid_signatures_are_refused() {
    let (a, n, mallory) = (key(1), key(5), key(9));
    let cases: Vec<(&str, Object)> = vec![
        // Not signed by the notary.
        ("unsigned", server_keys_response("a.org", &[&a], &[], now_ms() + DAY)),
        // Signed by someone else in the notary's name.
        (
            "wrong notary key",
            notarised("a.org", &a, "notary.org", &SigningKey::from_seed("k5", &[6; 32])),
        ),
        // The server's signature broken after notarising.
        ("broken self-signature", {
            let mut entry = notarised("a.org", &a, "notary.org", &n);
            entry.object_entry("signatures").object_entry("a.org").insert(a.key_id(), "AAAA");
            entry
        }),
        // Keys of another server.
        ("other server", notarised("c.org", &mallory, "notary.org", &n)),
    ];
    for (case, entry) in cases {
        let Setup { storage, net, fetcher } = setup(&["notary.org"]);
        net.fail("a.org", SERVER);
        net.answer(
            "notary.org",
            SERVER,
            server_keys_response("notary.org", &[&n], &[], now_ms() + DAY),
        );
        net.answer("notary.org", QUERY, query_answer(vec![entry]));
        assert!(fetcher.public_key("a.org", a.key_id(), now_ms()).await.is_err(), "{case}");
        assert_eq!(storage.remote_key("a.org", a.key_id()).await.expect("read"), None, "{case}");
    }
    // A notary that answers nothing: `None` (someone answered), not an error.
    let Setup { net, fetcher, .. } = setup(&["notary.org"]);
    net.fail("a.org", SERVER);
    net.answer("notary.org", QUERY, query_answer(Vec::new()));
    assert_eq!(fetcher.public_key("a.org", a.key_id(), now_ms()).await.expect("answered"), None);
}

#[tokio::test]
async fn a_burst_for_one_unknown_server_makes_one_fetch() {
    let Setup { net, fetcher, .. } = setup(&[]);
    let a = key(1);
    net.answer("a.org", SERVER, server_keys_response("a.org", &[&a], &[], now_ms() + DAY));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let fetcher = fetcher.clone();
            let key_id = a.key_id().to_owned();
            tokio::spawn(async move { fetcher.public_key("a.org", &key_id, now_ms()).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("ok"), Some(a.public_key()));
    }
    assert_eq!(net.count("a.org"), 1);
    // The same for a server that does not answer.
    net.fail("b.org", SERVER);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let fetcher = fetcher.clone();
            tokio::spawn(async move { fetcher.public_key("b.org", "ed25519:x", now_ms()).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.expect("task").is_err());
    }
    assert_eq!(net.count("b.org"), 1);
}

#[tokio::test]
async fn our_own_keys_come_from_storage() {
    let Setup { storage, net, fetcher } = setup(&[]);
    let (current, old) = (key(1), key(2));
    let mut changes = ChangeSet::default();
    changes.our_keys = vec![
        OurKey {
            key_id: current.key_id().to_owned(),
            seed: current.seed_base64(),
            expired_ts: None,
        },
        OurKey { key_id: old.key_id().to_owned(), seed: old.seed_base64(), expired_ts: Some(1000) },
    ];
    storage.apply(changes).await.expect("apply");
    let now = now_ms();
    assert_eq!(
        fetcher.public_key("us.org", current.key_id(), now).await.expect("ok"),
        Some(current.public_key())
    );
    assert_eq!(
        fetcher.public_key("us.org", old.key_id(), 999).await.expect("ok"),
        Some(old.public_key())
    );
    assert_eq!(fetcher.public_key("us.org", old.key_id(), now).await.expect("ok"), None);
    assert_eq!(fetcher.public_key("us.org", "ed25519:nope", now).await.expect("ok"), None);
    assert!(net.requests().is_empty());
}

#[tokio::test]
async fn memory_stays_bounded() {
    let storage = Arc::new(MemoryStore::new());
    let net = Arc::new(FakeNet::default());
    let mut options = KeyFetcherOptions::new(&FederationOptions::new("us.org"));
    options.max_cached_keys = 4;
    options.max_cached_misses = 4;
    options.max_cached_responses = 4;
    let fetcher = KeyFetcher::new(storage, net.clone(), options);
    for i in 0..50u8 {
        let server = format!("s{i}.org");
        let k = key(i.max(1));
        net.answer(&server, SERVER, server_keys_response(&server, &[&k], &[], now_ms() + DAY));
        assert!(fetcher.public_key(&server, k.key_id(), now_ms()).await.expect("ok").is_some());
        let _ = fetcher.public_key(&format!("missing{i}.org"), "ed25519:x", now_ms()).await;
    }
    let memory = fetcher.memory();
    assert!(memory.keys.len() <= 4 && memory.misses.len() <= 4 && memory.responses.len() <= 4);
}
