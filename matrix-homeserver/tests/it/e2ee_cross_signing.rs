//! Cross-signing over HTTP: `/keys/device_signing/upload` (with its user-interactive auth
//! rule), `/keys/signatures/upload` and what `/keys/query` answers, as Element bootstraps
//! cross-signing, and as an attacker tries to get keys or signatures stored that should not
//! be; the keys survive a restart.

use matrix_core::SigningKey;
use serde_json::{Value, json};

use crate::abuse_ephemeral::{device_of, next_batch, sync};
use crate::rooms::{create, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

/// An ed25519 key of a test: a device's or a cross-signing key.
pub(crate) struct Key {
    secret: SigningKey,
    /// The public key, unpadded base64.
    pub(crate) public: String,
}

impl Key {
    pub(crate) fn new(seed: u8) -> Self {
        let secret = SigningKey::from_seed("x", &[seed; 32]);
        let public = secret.public_key().to_base64();
        Key { secret, public }
    }

    /// `ed25519:<public>`.
    pub(crate) fn id(&self) -> String {
        format!("ed25519:{}", self.public)
    }

    /// Signs `object` as `signer` by this key, under `key_id`.
    pub(crate) fn sign_as(&self, object: &mut Value, signer: &str, key_id: &str) {
        let bytes = serde_json::to_vec(object).expect("serialises");
        let parsed = matrix_core::json::parse_lenient(&bytes).expect("parses");
        let input = matrix_core::signing::signing_input(parsed.as_object().expect("an object"));
        let signature = matrix_core::b64::encode(self.secret.sign(&input));
        object["signatures"][signer][key_id] = json!(signature);
    }

    /// Signs `object` as `signer` by this key, under its own id.
    pub(crate) fn sign(&self, object: &mut Value, signer: &str) {
        self.sign_as(object, signer, &self.id());
    }
}

/// A cross-signing key of `user` for `usage`.
pub(crate) fn signing_key(user: &str, usage: &str, key: &Key) -> Value {
    json!({"user_id": user, "usage": [usage], "keys": {key.id(): key.public}})
}

/// A user's three cross-signing keys, the other two signed by the master key.
pub(crate) struct Identity {
    pub(crate) master: Key,
    pub(crate) self_signing: Key,
    pub(crate) user_signing: Key,
}

impl Identity {
    pub(crate) fn new(seed: u8) -> Self {
        Identity {
            master: Key::new(seed),
            self_signing: Key::new(seed + 1),
            user_signing: Key::new(seed + 2),
        }
    }

    /// The upload body of the three keys.
    pub(crate) fn upload(&self, user: &str) -> Value {
        let master = signing_key(user, "master", &self.master);
        let mut self_signing = signing_key(user, "self_signing", &self.self_signing);
        self.master.sign(&mut self_signing, user);
        let mut user_signing = signing_key(user, "user_signing", &self.user_signing);
        self.master.sign(&mut user_signing, user);
        json!({"master_key": master, "self_signing_key": self_signing,
               "user_signing_key": user_signing})
    }
}

fn password(user: &str) -> Value {
    json!({"type": "m.login.password", "password": "pw",
           "identifier": {"type": "m.id.user", "user": user}})
}

async fn upload_signing(client: &Client, body: &Value) -> (u16, Value) {
    client.post(&format!("{V3}/keys/device_signing/upload"), body).await
}

async fn upload_signatures(client: &Client, body: &Value) -> Value {
    let (status, answer) = client.post(&format!("{V3}/keys/signatures/upload"), body).await;
    assert_eq!(status, 200, "{answer}");
    check("cross_signing.yaml", "/keys/signatures/upload", "post", 200, &answer);
    answer["failures"].clone()
}

/// Uploads device keys for the client's device, its ed25519 key `key`; answers them (as
/// stored, unsigned by anyone but the device) and the device id.
pub(crate) async fn upload_device(client: &Client, user: &str, key: &Key) -> (Value, String) {
    let device = device_of(client).await;
    let mut keys = json!({"user_id": user, "device_id": device,
                          "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                          "keys": {format!("ed25519:{device}"): key.public,
                                   format!("curve25519:{device}"): "curve"}});
    key.sign_as(&mut keys, user, &format!("ed25519:{device}"));
    let (status, answer) =
        client.post(&format!("{V3}/keys/upload"), &json!({"device_keys": keys})).await;
    assert_eq!(status, 200, "{answer}");
    (keys, device)
}

async fn query(client: &Client, user: &str) -> Value {
    let body = json!({"device_keys": {user: []}});
    let (status, answer) = client.post(&format!("{V3}/keys/query"), &body).await;
    assert_eq!(status, 200, "{answer}");
    check("keys.yaml", "/keys/query", "post", 200, &answer);
    answer
}

/// Element's bootstrap: keys uploaded (no auth asked the first time), the device signed by
/// the self-signing key and the master key by the device; the query shows all of it, others
/// see the master and self-signing keys but not the user-signing key; a new master key
/// needs the password, and tells those sharing a room.
async fn element_bootstraps_cross_signing(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let device_key = Key::new(1);
    let (device_keys, device) = upload_device(&alice, &alice_id, &device_key).await;
    let identity = Identity::new(10);

    // The first upload needs no auth; the same again neither (a retry).
    let upload = identity.upload(&alice_id);
    let (status, answer) = upload_signing(&alice, &upload).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = upload_signing(&alice, &upload).await;
    assert_eq!(status, 200, "an identical upload is idempotent: {answer}");

    // Alice's device signed by her self-signing key, her master key by her device.
    let mut signed_device = device_keys.clone();
    identity.self_signing.sign(&mut signed_device, &alice_id);
    let mut signed_master = upload["master_key"].clone();
    device_key.sign_as(&mut signed_master, &alice_id, &format!("ed25519:{device}"));
    let body = json!({&alice_id: {&device: signed_device,
                                  &identity.master.public: signed_master}});
    assert_eq!(upload_signatures(&alice, &body).await, json!({}));

    let mine = query(&alice, &alice_id).await;
    let master = &mine["master_keys"][&alice_id];
    assert_eq!(master["keys"][identity.master.id()], json!(identity.master.public), "{mine}");
    assert!(master["signatures"][&alice_id][format!("ed25519:{device}")].is_string(), "{mine}");
    let ssk = &mine["self_signing_keys"][&alice_id];
    assert_eq!(ssk["keys"][identity.self_signing.id()], json!(identity.self_signing.public));
    assert!(mine["user_signing_keys"][&alice_id].is_object(), "her own: {mine}");
    let signatures = &mine["device_keys"][&alice_id][&device]["signatures"][&alice_id];
    assert!(signatures[identity.self_signing.id()].is_string(), "{mine}");
    assert!(signatures[format!("ed25519:{device}")].is_string(), "the device's own stays");

    let theirs = query(&bob, &alice_id).await;
    assert_eq!(theirs["master_keys"][&alice_id], mine["master_keys"][&alice_id]);
    assert_eq!(theirs["self_signing_keys"][&alice_id], mine["self_signing_keys"][&alice_id]);
    assert_eq!(theirs["user_signing_keys"], json!({}), "never another's: {theirs}");

    // A new master key needs the password: 401 with the flows, a wrong one 401 again.
    let room = create(&alice, json!({"invite": [&bob_id]})).await;
    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);
    let since = next_batch(&sync(&bob, "").await);
    let replaced = Identity::new(20).upload(&alice_id);
    let (status, answer) = upload_signing(&alice, &replaced).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["flows"][0]["stages"][0], "m.login.password", "{answer}");
    let mut wrong = replaced.clone();
    wrong["auth"] = json!({"type": "m.login.password", "password": "nope",
                           "identifier": {"type": "m.id.user", "user": "alice"}});
    let (status, answer) = upload_signing(&alice, &wrong).await;
    assert_eq!((status, errcode(&answer)), (401, "M_FORBIDDEN"), "{answer}");
    assert_eq!(query(&bob, &alice_id).await["master_keys"], theirs["master_keys"], "unchanged");
    // A replayed old key with a new self-signing key needs it too.
    let mut sneaky = upload.clone();
    sneaky["self_signing_key"] = replaced["self_signing_key"].clone();
    assert_eq!(upload_signing(&alice, &sneaky).await.0, 401);

    let mut authed = replaced.clone();
    authed["auth"] = password("alice");
    let (status, answer) = upload_signing(&alice, &authed).await;
    assert_eq!(status, 200, "{answer}");
    let now = query(&bob, &alice_id).await;
    assert_eq!(now["master_keys"][&alice_id], replaced["master_key"], "{now}");
    let signatures = &now["device_keys"][&alice_id][&device]["signatures"][&alice_id];
    assert!(signatures.get(identity.self_signing.id()).is_none(), "the old key's: {now}");
    let got = sync(&bob, &format!("since={since}")).await;
    let changed = &got["device_lists"]["changed"];
    assert!(changed.as_array().is_some_and(|c| c.contains(&json!(alice_id))), "{got}");
}

/// Bob verifies Alice: his user-signing key signs her master key; he sees his signature, she
/// does not (a signature on another user's key is its signer's business).
async fn a_user_signs_another_users_master_key(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (alice_keys, bob_keys) = (Identity::new(10), Identity::new(20));
    assert_eq!(upload_signing(&alice, &alice_keys.upload(&alice_id)).await.0, 200);
    assert_eq!(upload_signing(&bob, &bob_keys.upload(&bob_id)).await.0, 200);

    let mut master = query(&bob, &alice_id).await["master_keys"][&alice_id].clone();
    bob_keys.user_signing.sign(&mut master, &bob_id);
    let body = json!({&alice_id: {&alice_keys.master.public: master}});
    assert_eq!(upload_signatures(&bob, &body).await, json!({}));

    let seen_by_bob = query(&bob, &alice_id).await;
    let signatures = &seen_by_bob["master_keys"][&alice_id]["signatures"];
    assert!(signatures[&bob_id][bob_keys.user_signing.id()].is_string(), "{seen_by_bob}");
    let seen_by_alice = query(&alice, &alice_id).await;
    let signatures = &seen_by_alice["master_keys"][&alice_id]["signatures"];
    assert!(signatures.get(&bob_id).is_none(), "{seen_by_alice}");
}

/// What an attacker (or a broken client) sends is refused, and nothing of it is stored.
async fn bad_keys_and_signatures_are_refused(backend: crate::Backend) {
    // Small enough that a body over it is sent whole before the server answers.
    let small = |c: &mut matrix_homeserver::Config| c.limits.max_request_bytes = 64 * 1024;
    let Some(server) = crate::start_changed(backend, small).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (mallory, mallory_id) = user(&server, "mallory").await;
    let device_key = Key::new(1);
    let (device_keys, device) = upload_device(&alice, &alice_id, &device_key).await;
    let alice_keys = Identity::new(10);

    // A self-signing key without a master key anywhere.
    let mut lonely = alice_keys.upload(&alice_id);
    lonely.as_object_mut().map(|o| o.remove("master_key"));
    let (status, answer) = upload_signing(&alice, &lonely).await;
    assert_eq!((status, errcode(&answer)), (400, "M_MISSING_PARAM"), "{answer}");
    // A self-signing key not signed by the master key (signed by another).
    let mut unsigned = alice_keys.upload(&alice_id);
    let mut forged = signing_key(&alice_id, "self_signing", &alice_keys.self_signing);
    Key::new(99).sign_as(&mut forged, &alice_id, &alice_keys.master.id());
    unsigned["self_signing_key"] = forged;
    let (status, answer) = upload_signing(&alice, &unsigned).await;
    assert_eq!((status, errcode(&answer)), (400, "M_INVALID_SIGNATURE"), "{answer}");
    // Keys of another user, of the wrong usage, or named like a device.
    let theirs = alice_keys.upload(&alice_id);
    let (status, answer) = upload_signing(&mallory, &theirs).await;
    assert_eq!((status, errcode(&answer)), (400, "M_INVALID_PARAM"), "{answer}");
    let mut misused = alice_keys.upload(&alice_id);
    misused["master_key"]["usage"] = json!(["self_signing"]);
    assert_eq!(errcode(&upload_signing(&alice, &misused).await.1), "M_INVALID_PARAM");
    let mut broken = alice_keys.upload(&alice_id);
    broken["master_key"]["keys"] = json!({"ed25519:abc": "abc"});
    assert_eq!(errcode(&upload_signing(&alice, &broken).await.1), "M_INVALID_PARAM");
    // A device whose id is an ed25519 public key, and a master key of that key.
    let named = Key::new(50);
    let body = json!({"type": "m.login.password", "password": "pw", "device_id": named.public,
                      "identifier": {"type": "m.id.user", "user": "alice"}});
    let (status, login) = Client::new(&server).post(&format!("{V3}/login"), &body).await;
    assert_eq!(status, 200, "{login}");
    let as_device = json!({"master_key": signing_key(&alice_id, "master", &named)});
    let (status, answer) = upload_signing(&alice, &as_device).await;
    assert_eq!((status, errcode(&answer)), (403, "M_FORBIDDEN"), "{answer}");
    assert_eq!(query(&alice, &alice_id).await["master_keys"], json!({}), "nothing stored");

    // Now Alice's real keys; Mallory has his own.
    assert_eq!(upload_signing(&alice, &alice_keys.upload(&alice_id)).await.0, 200);
    let mallory_keys = Identity::new(30);
    assert_eq!(upload_signing(&mallory, &mallory_keys.upload(&mallory_id)).await.0, 200);

    // Mallory signs Alice's device, and her master key with a bad signature.
    let mut her_device = device_keys.clone();
    mallory_keys.self_signing.sign(&mut her_device, &mallory_id);
    mallory_keys.user_signing.sign(&mut her_device, &mallory_id);
    let mut her_master = signing_key(&alice_id, "master", &alice_keys.master);
    mallory_keys.user_signing.sign(&mut her_master, &mallory_id);
    let signatures = her_master["signatures"][&mallory_id].as_object_mut().expect("signed");
    for signature in signatures.values_mut() {
        let mut bytes =
            matrix_core::b64::decode(signature.as_str().expect("a string")).expect("b64");
        bytes[0] ^= 1;
        *signature = json!(matrix_core::b64::encode(bytes));
    }
    let body = json!({&alice_id: {&device: her_device, &alice_keys.master.public: her_master}});
    let failures = upload_signatures(&mallory, &body).await;
    assert_eq!(errcode(&failures[&alice_id][&device]), "M_INVALID_PARAM", "{failures}");
    let on_master = &failures[&alice_id][&alice_keys.master.public];
    assert_eq!(errcode(on_master), "M_INVALID_SIGNATURE", "{failures}");
    // Mallory signs "Alice's master key" that is his own key renamed.
    let mut fake = signing_key(&alice_id, "master", &mallory_keys.master);
    mallory_keys.user_signing.sign(&mut fake, &mallory_id);
    let body = json!({&alice_id: {&mallory_keys.master.public: fake}});
    let failures = upload_signatures(&mallory, &body).await;
    assert_eq!(errcode(&failures[&alice_id][&mallory_keys.master.public]), "M_NOT_FOUND");

    // Alice's own bad signature on her device, and a signature on a key that differs.
    let mut bad = device_keys.clone();
    Key::new(98).sign_as(&mut bad, &alice_id, &alice_keys.self_signing.id());
    let mut changed = device_keys.clone();
    changed["keys"][format!("curve25519:{device}")] = json!("other");
    alice_keys.self_signing.sign(&mut changed, &alice_id);
    let failures = upload_signatures(&alice, &json!({&alice_id: {&device: bad}})).await;
    assert_eq!(errcode(&failures[&alice_id][&device]), "M_INVALID_SIGNATURE", "{failures}");
    let failures = upload_signatures(&alice, &json!({&alice_id: {&device: changed}})).await;
    assert_eq!(errcode(&failures[&alice_id][&device]), "M_INVALID_PARAM", "{failures}");
    let failures = upload_signatures(&alice, &json!({&alice_id: {"NODEVICE": {}}})).await;
    assert_eq!(errcode(&failures[&alice_id]["NODEVICE"]), "M_NOT_FOUND", "{failures}");

    // Nothing of it shows.
    for viewer in [&alice, &mallory] {
        let seen = query(viewer, &alice_id).await;
        let device_signatures = &seen["device_keys"][&alice_id][&device]["signatures"];
        assert_eq!(device_signatures.as_object().map(|o| o.len()), Some(1), "{seen}");
        assert_eq!(device_signatures[&alice_id].as_object().map(|o| o.len()), Some(1), "{seen}");
        let master_signatures = &seen["master_keys"][&alice_id]["signatures"];
        assert!(master_signatures.get(&mallory_id).is_none(), "{seen}");
    }

    // Too many signed keys at once, and a body over the request bound.
    let many: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("D{i}"), json!({}))).collect();
    let (status, answer) =
        alice.post(&format!("{V3}/keys/signatures/upload"), &json!({&alice_id: many})).await;
    assert_eq!((status, errcode(&answer)), (400, "M_TOO_LARGE"), "{answer}");
    let mut huge = alice_keys.upload(&alice_id);
    huge["master_key"]["padding"] = json!("x".repeat(70 * 1024));
    let (status, answer) = upload_signing(&alice, &huge).await;
    assert_eq!((status, errcode(&answer)), (413, "M_TOO_LARGE"), "{answer}");
    let mut big = alice_keys.upload(&alice_id);
    big["user_signing_key"]["padding"] = json!("x".repeat(20 * 1024));
    let mut authed = big;
    authed["auth"] = password("alice");
    let (status, answer) = upload_signing(&alice, &authed).await;
    assert_eq!((status, errcode(&answer)), (400, "M_TOO_LARGE"), "{answer}");
}

/// Keys and signatures are in storage: a new server on the same storage answers them.
async fn cross_signing_survives_a_restart(backend: crate::Backend) {
    let Some((storage, _dir)) = crate::open_storage(backend).await else { return };
    let config = matrix_homeserver::testing::TestHomeserver::config();
    let first = matrix_homeserver::testing::TestHomeserver::start_on(config, storage.clone()).await;
    let session = first.register_user("alice", "pw").await;
    let alice_id = session.user_id.to_string();
    let alice = Client::new(&first).with_token(&session.access_token);
    let device_key = Key::new(1);
    let (device_keys, device) = upload_device(&alice, &alice_id, &device_key).await;
    let identity = Identity::new(10);
    assert_eq!(upload_signing(&alice, &identity.upload(&alice_id)).await.0, 200);
    let mut signed = device_keys;
    identity.self_signing.sign(&mut signed, &alice_id);
    assert_eq!(upload_signatures(&alice, &json!({&alice_id: {&device: signed}})).await, json!({}));
    let before = query(&alice, &alice_id).await;
    drop(first);

    let config = matrix_homeserver::testing::TestHomeserver::config();
    let second = matrix_homeserver::testing::TestHomeserver::start_on(config, storage).await;
    let alice = Client::new(&second).with_token(&session.access_token);
    assert_eq!(query(&alice, &alice_id).await, before);
}

/// Across servers: bob's new keys reach alice's server (`m.signing_key_update`), whose key
/// query answers his master and self-signing keys (never his user-signing key); alice's
/// signature on bob's master key is kept on her server and shown to her.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_signing_keys_cross_federation() {
    use crate::federation_edus::{call, first_batch, shared_room, wait_changed};
    let s = shared_room().await;
    let (a, b) = (s.a(), s.b());
    let (alice_id, bob_id) = (s.alice.user_id.to_string(), s.bob.user_id.to_string());
    let since = first_batch(a, &s.alice.access_token).await;
    let post = reqwest::Method::POST;
    let upload = "/_matrix/client/v3/keys/device_signing/upload";
    let bob_keys = Identity::new(20);
    let (status, answer) =
        call(b, &s.bob.access_token, post.clone(), upload, bob_keys.upload(&bob_id)).await;
    assert_eq!(status, 200, "{answer}");
    wait_changed(a, &s.alice.access_token, &since, &bob_id).await;

    let query = "/_matrix/client/v3/keys/query";
    let body = json!({"device_keys": {&bob_id: []}});
    let (status, seen) = call(a, &s.alice.access_token, post.clone(), query, body.clone()).await;
    assert_eq!(status, 200, "{seen}");
    let master = seen["master_keys"][&bob_id].clone();
    assert_eq!(master["keys"][bob_keys.master.id()], json!(bob_keys.master.public), "{seen}");
    let ssk = &seen["self_signing_keys"][&bob_id];
    assert_eq!(ssk["keys"][bob_keys.self_signing.id()], json!(bob_keys.self_signing.public));
    assert_eq!(seen["user_signing_keys"], json!({}), "{seen}");

    // alice verifies bob.
    let alice_keys = Identity::new(10);
    let (status, answer) =
        call(a, &s.alice.access_token, post.clone(), upload, alice_keys.upload(&alice_id)).await;
    assert_eq!(status, 200, "{answer}");
    let mut signed = master;
    alice_keys.user_signing.sign(&mut signed, &alice_id);
    let body_signed = json!({&bob_id: {&bob_keys.master.public: signed}});
    let path = "/_matrix/client/v3/keys/signatures/upload";
    let (status, answer) = call(a, &s.alice.access_token, post.clone(), path, body_signed).await;
    assert_eq!((status, answer["failures"].clone()), (200, json!({})), "{answer}");
    let (_, seen) = call(a, &s.alice.access_token, post, query, body).await;
    let signatures = &seen["master_keys"][&bob_id]["signatures"];
    assert!(signatures[&alice_id][alice_keys.user_signing.id()].is_string(), "{seen}");
    assert!(signatures[&bob_id][bob_keys.master.id()].is_null(), "unsigned by itself");
}

crate::on_every_backend!(
    element_bootstraps_cross_signing,
    a_user_signs_another_users_master_key,
    bad_keys_and_signatures_are_refused,
    cross_signing_survives_a_restart,
);
