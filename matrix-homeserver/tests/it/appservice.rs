//! Application services, the client side: `as_token` authentication and masquerading,
//! registration and login of namespace users, exclusive namespaces against everyone else,
//! rate limits, queries to the service for unknown users and aliases, and pings, with a
//! loopback service stub. Attackers: other tokens, other namespaces, the `hs_token`.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use matrix_homeserver::{AppserviceRegistration, Config, Namespace};
use serde_json::{Value, json};

use crate::rooms::user;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";
const V1: &str = "/_matrix/client/v1";
const AS_TOKEN: &str = "as-secret-token";
const HS_TOKEN: &str = "hs-secret-token";

/// What the stub service does and saw.
#[derive(Default)]
struct Stub {
    /// The homeserver's base URL, once it runs.
    homeserver: Mutex<Option<String>>,
    /// 0: answers; 1: answers pings 500; 2: answers pings after 20 seconds.
    mode: AtomicU8,
    user_queries: AtomicUsize,
    alias_queries: AtomicUsize,
    pings: Mutex<Vec<Value>>,
    /// Requests whose bearer token was not the hs_token.
    bad_auth: AtomicUsize,
}

type Shared = Arc<Stub>;

fn authorized(stub: &Stub, headers: &HeaderMap) -> bool {
    let ok = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {HS_TOKEN}"));
    if !ok {
        stub.bad_auth.fetch_add(1, Ordering::SeqCst);
    }
    ok
}

fn as_client(stub: &Stub) -> Client {
    let base = stub.homeserver.lock().expect("the lock").clone().expect("the homeserver runs");
    Client::at(&base).with_token(AS_TOKEN)
}

async fn stub_user(
    State(stub): State<Shared>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> (StatusCode, axum::Json<Value>) {
    stub.user_queries.fetch_add(1, Ordering::SeqCst);
    if !authorized(&stub, &headers) || !user.starts_with("@bridge_known") {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"errcode": "M_NOT_FOUND"})));
    }
    let localpart = user.trim_start_matches('@').split(':').next().unwrap_or_default().to_owned();
    let client = as_client(&stub);
    let body = json!({"type": "m.login.application_service", "username": localpart,
                      "inhibit_login": true});
    let (status, _) = client.post(&format!("{V3}/register"), &body).await;
    assert_eq!(status, 200);
    (StatusCode::OK, axum::Json(json!({})))
}

async fn stub_room(
    State(stub): State<Shared>,
    headers: HeaderMap,
    Path(alias): Path<String>,
) -> (StatusCode, axum::Json<Value>) {
    stub.alias_queries.fetch_add(1, Ordering::SeqCst);
    if !authorized(&stub, &headers) || !alias.starts_with("#bridge_room") {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"errcode": "M_NOT_FOUND"})));
    }
    let localpart = alias.trim_start_matches('#').split(':').next().unwrap_or_default().to_owned();
    let client = as_client(&stub);
    let (status, _) =
        client.post(&format!("{V3}/createRoom"), &json!({"room_alias_name": localpart})).await;
    assert_eq!(status, 200);
    (StatusCode::OK, axum::Json(json!({})))
}

async fn stub_ping(
    State(stub): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&stub, &headers) {
        return (StatusCode::FORBIDDEN, axum::Json(json!({"errcode": "M_FORBIDDEN"})));
    }
    stub.pings.lock().expect("the lock").push(body);
    if stub.mode.load(Ordering::SeqCst) == 2 {
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    }
    if stub.mode.load(Ordering::SeqCst) == 1 {
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"errcode": "X_BROKEN"})));
    }
    (StatusCode::OK, axum::Json(json!({})))
}

type Fields = axum::extract::Query<std::collections::HashMap<String, String>>;

async fn stub_protocol(Path(protocol): Path<String>) -> (StatusCode, axum::Json<Value>) {
    if protocol != "irc" {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"errcode": "M_NOT_FOUND"})));
    }
    let metadata = json!({
        "user_fields": ["network", "nickname"],
        "location_fields": ["network", "channel"],
        "icon": "mxc://example.org/irc",
        "field_types": {
            "network": {"regexp": "[a-z]+", "placeholder": "libera"},
            "nickname": {"regexp": ".+", "placeholder": "alice"},
            "channel": {"regexp": "#.+", "placeholder": "#matrix"},
        },
        "instances": [{"desc": "Libera", "network_id": "libera", "fields": {"network": "libera"}}],
    });
    (StatusCode::OK, axum::Json(metadata))
}

async fn stub_location(Path(protocol): Path<String>, fields: Fields) -> axum::Json<Value> {
    let channel = fields.get("channel").cloned().unwrap_or_default();
    if protocol != "irc" || channel.is_empty() {
        return axum::Json(json!([]));
    }
    axum::Json(json!([
        {"alias": "#bridge_irc_x:localhost", "protocol": "irc", "fields": {"channel": channel}},
        "not an object",
    ]))
}

async fn stub_tp_user(Path(protocol): Path<String>, fields: Fields) -> axum::Json<Value> {
    let nick = fields.get("nickname").cloned().unwrap_or_default();
    if protocol != "irc" || nick.is_empty() || fields.contains_key("access_token") {
        return axum::Json(json!([]));
    }
    axum::Json(json!([
        {"userid": format!("@bridge_{nick}:localhost"), "protocol": "irc",
         "fields": {"nickname": nick}},
    ]))
}

async fn stub_location_of_alias(fields: Fields) -> axum::Json<Value> {
    let alias = fields.get("alias").cloned().unwrap_or_default();
    axum::Json(json!([{"alias": alias, "protocol": "irc", "fields": {"channel": "#x"}}]))
}

async fn stub_user_of_id(fields: Fields) -> axum::Json<Value> {
    let user = fields.get("userid").cloned().unwrap_or_default();
    axum::Json(json!([{"userid": user, "protocol": "irc", "fields": {"nickname": "x"}}]))
}

/// The stub service on a loopback port: its URL and what it saw.
async fn start_stub() -> (String, Shared) {
    let stub = Shared::default();
    let router = axum::Router::new()
        .route("/_matrix/app/v1/users/{user}", get(stub_user))
        .route("/_matrix/app/v1/rooms/{alias}", get(stub_room))
        .route("/_matrix/app/v1/ping", post(stub_ping))
        .route("/_matrix/app/v1/thirdparty/protocol/{protocol}", get(stub_protocol))
        .route("/_matrix/app/v1/thirdparty/location/{protocol}", get(stub_location))
        .route("/_matrix/app/v1/thirdparty/user/{protocol}", get(stub_tp_user))
        .route("/_matrix/app/v1/thirdparty/location", get(stub_location_of_alias))
        .route("/_matrix/app/v1/thirdparty/user", get(stub_user_of_id))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, stub)
}

/// The bridge's registration: users `@bridge_*`, aliases `#bridge_*`, both exclusive.
fn registration(
    id: &str,
    url: Option<String>,
    as_token: &str,
    hs_token: &str,
) -> AppserviceRegistration {
    let mut registration =
        AppserviceRegistration::new(id, url, as_token, hs_token, format!("{id}bot"));
    registration.namespaces.users.push(Namespace::new(format!("@{id}_.*:localhost"), true));
    registration.namespaces.aliases.push(Namespace::new(format!("#{id}_.*:localhost"), true));
    registration.rate_limited = Some(false);
    registration
}

async fn start(
    backend: crate::Backend,
    change: impl FnOnce(&mut Config),
) -> Option<(crate::Server, Shared)> {
    let (url, stub) = start_stub().await;
    let server = crate::start_changed(backend, |config| {
        config.appservices.push(registration("bridge", Some(url), AS_TOKEN, HS_TOKEN));
        change(config);
    })
    .await?;
    *stub.homeserver.lock().expect("the lock") = Some(server.base_url().to_owned());
    Some((server, stub))
}

async fn register_puppet(client: &Client, localpart: &str) -> (u16, Value) {
    let body = json!({"type": "m.login.application_service", "username": localpart,
                      "inhibit_login": true});
    client.post(&format!("{V3}/register"), &body).await
}

async fn as_token_masquerades_only_within_its_namespace(backend: crate::Backend) {
    let Some((server, stub)) = start(backend, |_| {}).await else { return };
    let service = Client::new(&server).with_token(AS_TOKEN);
    let (alice, alice_id) = user(&server, "alice").await;

    // Without user_id: the service's own user (created at start), with no device.
    let (status, body) = service.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@bridgebot:localhost");
    assert!(body.get("device_id").is_none_or(Value::is_null), "{body}");

    // A puppet is registered without a password; inhibit_login gives no token.
    let (status, body) = register_puppet(&service, "bridge_alice").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@bridge_alice:localhost");
    assert!(body.get("access_token").is_none_or(Value::is_null), "{body}");
    let puppet = "%40bridge_alice%3Alocalhost";
    let (status, body) = service.get(&format!("{V3}/account/whoami?user_id={puppet}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@bridge_alice:localhost");

    // The puppet acts: a room, a message whose sender is the puppet.
    let (status, body) =
        service.post(&format!("{V3}/createRoom?user_id={puppet}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().expect("a room").to_owned();
    let (status, body) = service
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/t1?user_id={puppet}"),
            &json!({"msgtype": "m.text", "body": "from the bridge"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let event = body["event_id"].as_str().expect("an event").to_owned();
    let (status, body) =
        service.get(&format!("{V3}/rooms/{room}/event/{event}?user_id={puppet}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sender"], "@bridge_alice:localhost");
    // The same transaction id again is the same event (kept per service without a device).
    let (_, again) = service
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/t1?user_id={puppet}"),
            &json!({"msgtype": "m.text", "body": "from the bridge"}),
        )
        .await;
    assert_eq!(again["event_id"], event.as_str());

    // What needs a device is refused without one.
    let (status, body) = service
        .post(&format!("{V3}/keys/upload?user_id={puppet}"), &json!({"one_time_keys": {}}))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    // MSC4190 is not enabled for this service: device_id is ignored, not trusted.
    let (status, body) =
        service.get(&format!("{V3}/account/whoami?user_id={puppet}&device_id=NOPE")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("device_id").is_none_or(Value::is_null), "{body}");

    // Attackers. A user outside the namespace (who exists):
    let (status, body) =
        service.get(&format!("{V3}/account/whoami?user_id={}", alice_id.replace('@', "%40"))).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // A namespace user never registered; a remote one; garbage.
    for who in ["%40bridge_nobody%3Alocalhost", "%40bridge_x%3Aevil.example", "not-a-user"] {
        let (status, body) = service.get(&format!("{V3}/account/whoami?user_id={who}")).await;
        assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{who}: {body}");
    }
    // The hs_token is not an access token; neither is a wrong one.
    for token in [HS_TOKEN, "as-secret-token-", "wrong"] {
        let client = Client::new(&server).with_token(token);
        let (status, body) = client.get(&format!("{V3}/account/whoami")).await;
        assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"), "{token}: {body}");
    }
    // The service registers outside its namespace: M_EXCLUSIVE.
    let (status, body) = register_puppet(&service, "alice2").await;
    assert_eq!((status, errcode(&body)), (400, "M_EXCLUSIVE"), "{body}");
    // m.login.application_service without the service's token.
    let anonymous = Client::new(&server);
    let (status, body) = register_puppet(&anonymous, "bridge_bob").await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
    let (status, body) =
        register_puppet(&anonymous.clone().with_token(HS_TOKEN), "bridge_bob").await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"), "{body}");
    // A normal user registering an exclusive localpart; asking whether it is available.
    let (status, body) = anonymous
        .post(
            &format!("{V3}/register"),
            &json!({"username": "bridge_bob", "password": "pw-long-enough",
                    "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_EXCLUSIVE"), "{body}");
    let (status, body) =
        anonymous.get(&format!("{V3}/register/available?username=bridge_bob")).await;
    assert_eq!((status, errcode(&body)), (400, "M_EXCLUSIVE"), "{body}");
    let (status, body) = anonymous.get(&format!("{V3}/register/available?username=carol")).await;
    assert_eq!(status, 200, "{body}");

    // Aliases: a normal user in the exclusive namespace; the service outside its own.
    let (status, body) = alice
        .put(&format!("{V3}/directory/room/%23bridge_hall%3Alocalhost"), &json!({"room_id": room}))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_EXCLUSIVE"), "{body}");
    let (status, body) =
        alice.post(&format!("{V3}/createRoom"), &json!({"room_alias_name": "bridge_x"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_EXCLUSIVE"), "{body}");
    let (status, body) = service
        .put(&format!("{V3}/directory/room/%23hall%3Alocalhost"), &json!({"room_id": room}))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_EXCLUSIVE"), "{body}");
    let (status, body) = service
        .put(
            &format!("{V3}/directory/room/%23bridge_hall%3Alocalhost?user_id={puppet}"),
            &json!({"room_id": room}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Login: listed, works for a puppet with the token, refused for others.
    let (status, body) = anonymous.get(&format!("{V3}/login")).await;
    assert_eq!(status, 200, "{body}");
    let types: Vec<&str> = body["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter_map(|f| f["type"].as_str())
        .collect();
    assert!(types.contains(&"m.login.application_service"), "{body}");
    let login = |user: &str| {
        json!({"type": "m.login.application_service",
               "identifier": {"type": "m.id.user", "user": user}})
    };
    let (status, body) = service.post(&format!("{V3}/login"), &login("bridge_alice")).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("a token").to_owned();
    let (status, body) =
        Client::new(&server).with_token(&token).get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@bridge_alice:localhost");
    assert!(body["device_id"].is_string(), "{body}");
    let (status, body) = service.post(&format!("{V3}/login"), &login("alice")).await;
    assert_eq!((status, errcode(&body)), (403, "M_EXCLUSIVE"), "{body}");
    let (status, body) = anonymous.post(&format!("{V3}/login"), &login("bridge_alice")).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
    assert_eq!(stub.bad_auth.load(Ordering::SeqCst), 0);
}

async fn services_with_devices_act_as_them(backend: crate::Backend) {
    let Some((server, _stub)) = start(backend, |config| {
        config.appservices[0].msc4190 = true;
    })
    .await
    else {
        return;
    };
    let service = Client::new(&server).with_token(AS_TOKEN);
    let (status, body) = register_puppet(&service, "bridge_dev").await;
    assert_eq!(status, 200, "{body}");
    let puppet = "%40bridge_dev%3Alocalhost";
    // A device that does not exist is refused; m.login.application_service is refused
    // (MSC4190 services manage their devices themselves).
    let (status, body) =
        service.get(&format!("{V3}/account/whoami?user_id={puppet}&device_id=NOPE")).await;
    assert_eq!((status, errcode(&body)), (400, "M_FORBIDDEN"), "{body}");
    let login = json!({"type": "m.login.application_service",
                       "identifier": {"type": "m.id.user", "user": "bridge_dev"}});
    let (status, body) = service.post(&format!("{V3}/login"), &login).await;
    assert_eq!((status, errcode(&body)), (400, "M_APPSERVICE_LOGIN_UNSUPPORTED"), "{body}");
    // With a device of the puppet's: the request is that device's.
    let (status, body) = register_puppet(&service, "bridge_dev2").await;
    assert_eq!(status, 200, "{body}");
    let with_device = json!({"type": "m.login.application_service", "username": "bridge_dev3",
                             "device_id": "DEV3"});
    let (status, body) = service.post(&format!("{V3}/register"), &with_device).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], "DEV3");
    let (status, body) = service
        .get(&format!("{V3}/account/whoami?user_id=%40bridge_dev3%3Alocalhost&device_id=DEV3"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], "DEV3");
    // Another user's device is not this user's.
    let (status, body) = service
        .get(&format!("{V3}/account/whoami?user_id=%40bridge_dev2%3Alocalhost&device_id=DEV3"))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_FORBIDDEN"), "{body}");
}

async fn msc4190_services_create_and_delete_their_users_devices(backend: crate::Backend) {
    let Some((server, _stub)) = start(backend, |config| {
        config.appservices[0].msc4190 = true;
        // A second service without MSC4190.
        config.appservices.push(registration("plain", None, "plain-as", "plain-hs"));
    })
    .await
    else {
        return;
    };
    let service = Client::new(&server).with_token(AS_TOKEN);
    let (status, body) = register_puppet(&service, "bridge_p").await;
    assert_eq!(status, 200, "{body}");
    let puppet = "%40bridge_p%3Alocalhost";
    // Created (201), then renamed (200); the puppet's requests may name it.
    let path = format!("{V3}/devices/BRIDGEDEV?user_id={puppet}");
    let (status, body) = service.put(&path, &json!({"display_name": "Bridge"})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = service.put(&path, &json!({"display_name": "Bridge 2"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        service.get(&format!("{V3}/account/whoami?user_id={puppet}&device_id=BRIDGEDEV")).await;
    assert_eq!((status, &body["device_id"]), (200, &json!("BRIDGEDEV")), "{body}");
    let (status, body) = service.get(&format!("{V3}/devices?user_id={puppet}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["devices"][0]["display_name"], "Bridge 2", "{body}");
    // Keys can be uploaded for it now.
    let (status, body) = service
        .post(
            &format!("{V3}/keys/upload?user_id={puppet}&device_id=BRIDGEDEV"),
            &json!({"one_time_keys": {}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Cross-signing keys set, then replaced, without user-interactive auth (v1.17).
    let keys_path = format!("{V3}/keys/device_signing/upload?user_id={puppet}");
    for seed in [10, 20] {
        let identity = crate::e2ee_cross_signing::Identity::new(seed);
        let (status, body) =
            service.post(&keys_path, &identity.upload("@bridge_p:localhost")).await;
        assert_eq!(status, 200, "seed {seed}: {body}");
    }
    // Deleted without user-interactive auth.
    let (status, body) = service
        .send(
            reqwest::Method::DELETE,
            &format!("{V3}/devices/BRIDGEDEV?user_id={puppet}"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        service.get(&format!("{V3}/account/whoami?user_id={puppet}&device_id=BRIDGEDEV")).await;
    assert_eq!((status, errcode(&body)), (400, "M_FORBIDDEN"), "{body}");
    // A service without MSC4190, and a normal user, only rename existing devices.
    let (status, body) = Client::new(&server)
        .with_token("plain-as")
        .put(&format!("{V3}/devices/X"), &json!({}))
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (alice, _) = user(&server, "alice").await;
    let (status, body) = alice.put(&format!("{V3}/devices/NEWDEV"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    // Long names are refused.
    let long = "x".repeat(10_000);
    let (status, _) = service
        .put(&format!("{V3}/devices/D2?user_id={puppet}"), &json!({"display_name": long}))
        .await;
    assert_eq!(status, 400);
}

async fn rate_limits_spare_unlimited_services(backend: crate::Backend) {
    let Some((server, _stub)) = start(backend, |config| {
        config.rate_limits = matrix_homeserver::RateLimitsConfig::default();
        let mut limited = registration("limited", None, "limited-as", "limited-hs");
        limited.rate_limited = None;
        config.appservices.push(limited);
    })
    .await
    else {
        return;
    };
    let service = Client::new(&server).with_token(AS_TOKEN);
    let (status, body) = service.post(&format!("{V3}/createRoom"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().expect("a room").to_owned();
    let message = json!({"msgtype": "m.text", "body": "hi"});
    for n in 0..30 {
        let path = format!("{V3}/rooms/{room}/send/m.room.message/u{n}");
        let (status, body) = service.put(&path, &message).await;
        assert_eq!(status, 200, "message {n}: {body}");
    }
    // A service that is rate limited (the default), and a normal user, are.
    for client in [Client::new(&server).with_token("limited-as"), user(&server, "dora").await.0] {
        let (status, body) = client.post(&format!("{V3}/createRoom"), &json!({})).await;
        assert_eq!(status, 200, "{body}");
        let room = body["room_id"].as_str().expect("a room").to_owned();
        let mut limited = false;
        for n in 0..30 {
            let path = format!("{V3}/rooms/{room}/send/m.room.message/v{n}");
            let (status, body) = client.put(&path, &message).await;
            if status == 429 {
                assert_eq!(errcode(&body), "M_LIMIT_EXCEEDED");
                limited = true;
                break;
            }
        }
        assert!(limited, "the limit applied");
    }
}

async fn unknown_users_and_aliases_are_asked_of_the_service(backend: crate::Backend) {
    let Some((server, stub)) = start(backend, |_| {}).await else { return };
    let (alice, _) = user(&server, "alice").await;
    // An unknown user of the namespace: the service creates it, the profile answers.
    let (status, body) = alice.get(&format!("{V3}/profile/%40bridge_known1%3Alocalhost")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.user_queries.load(Ordering::SeqCst), 1);
    // Known now: not asked again.
    let (status, _) = alice.get(&format!("{V3}/profile/%40bridge_known1%3Alocalhost")).await;
    assert_eq!(status, 200);
    assert_eq!(stub.user_queries.load(Ordering::SeqCst), 1);
    // The service says no: 404. Outside the namespace: not asked at all.
    let (status, body) = alice.get(&format!("{V3}/profile/%40bridge_ghost%3Alocalhost")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, _) = alice.get(&format!("{V3}/profile/%40nobody%3Alocalhost")).await;
    assert_eq!(status, 404);
    assert_eq!(stub.user_queries.load(Ordering::SeqCst), 2);
    // Invites ask too: the invitee exists afterwards.
    let room = crate::rooms::create(&alice, json!({})).await;
    let (status, body) = alice
        .post(&format!("{V3}/rooms/{room}/invite"), &json!({"user_id": "@bridge_known2:localhost"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.user_queries.load(Ordering::SeqCst), 3);

    // An unknown alias of the namespace: the service creates the room, the alias resolves;
    // joining by an alias asks the same way.
    let (status, body) =
        alice.get(&format!("{V3}/directory/room/%23bridge_room1%3Alocalhost")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["room_id"].is_string(), "{body}");
    assert_eq!(stub.alias_queries.load(Ordering::SeqCst), 1);
    let (status, body) =
        alice.get(&format!("{V3}/directory/room/%23bridge_none%3Alocalhost")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, _) = alice.get(&format!("{V3}/directory/room/%23other%3Alocalhost")).await;
    assert_eq!(status, 404);
    assert_eq!(stub.alias_queries.load(Ordering::SeqCst), 2);
    assert_eq!(stub.bad_auth.load(Ordering::SeqCst), 0);
}

async fn a_service_that_is_down_means_not_found(backend: crate::Backend) {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        format!("http://{}", listener.local_addr().expect("an address"))
    };
    let Some(server) = crate::start_changed(backend, |config| {
        config.appservices.push(registration("bridge", Some(closed), AS_TOKEN, HS_TOKEN));
        config.appservices.push(registration("nourl", None, "nourl-as", "nourl-hs"));
    })
    .await
    else {
        return;
    };
    let (alice, _) = user(&server, "alice").await;
    let (status, body) = alice.get(&format!("{V3}/profile/%40bridge_known1%3Alocalhost")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) =
        alice.get(&format!("{V3}/directory/room/%23bridge_room%3Alocalhost")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let service = Client::new(&server).with_token(AS_TOKEN);
    let (status, body) = service.post(&format!("{V1}/appservice/bridge/ping"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (502, "M_CONNECTION_FAILED"), "{body}");
    let nourl = Client::new(&server).with_token("nourl-as");
    let (status, body) = nourl.post(&format!("{V1}/appservice/nourl/ping"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_URL_NOT_SET"), "{body}");
}

async fn pings_reach_the_service(backend: crate::Backend) {
    let Some((server, stub)) = start(backend, |config| {
        config.appservices.push(registration("other", None, "other-as", "other-hs"));
    })
    .await
    else {
        return;
    };
    let service = Client::new(&server).with_token(AS_TOKEN);
    let (status, body) = service
        .post(&format!("{V1}/appservice/bridge/ping"), &json!({"transaction_id": "txn-1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["duration_ms"].is_u64(), "{body}");
    assert_eq!(*stub.pings.lock().expect("the lock"), vec![json!({"transaction_id": "txn-1"})]);
    // Only the service itself: another service, a user, nobody.
    let (alice, _) = user(&server, "alice").await;
    for (client, code) in [
        (Client::new(&server).with_token("other-as"), 403),
        (alice, 403),
        (Client::new(&server), 401),
    ] {
        let (status, body) = client.post(&format!("{V1}/appservice/bridge/ping"), &json!({})).await;
        assert_eq!(status, code, "{body}");
    }
    assert_eq!(stub.pings.lock().expect("the lock").len(), 1);
    // The service answers 500: M_BAD_STATUS with its status and body.
    stub.mode.store(1, Ordering::SeqCst);
    let (status, body) = service.post(&format!("{V1}/appservice/bridge/ping"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (502, "M_BAD_STATUS"), "{body}");
    assert_eq!(body["status"], 500);
    assert!(body["body"].as_str().expect("the body").contains("X_BROKEN"), "{body}");
    // The service hangs: M_CONNECTION_TIMEOUT after the ping's time limit.
    stub.mode.store(2, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let (status, body) = service.post(&format!("{V1}/appservice/bridge/ping"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (504, "M_CONNECTION_TIMEOUT"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(19), "bounded by the limit");
}

async fn thirdparty_lookups_ask_the_services_of_the_protocol(backend: crate::Backend) {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        format!("http://{}", listener.local_addr().expect("an address"))
    };
    let Some((server, _stub)) = start(backend, |config| {
        config.appservices[0].protocols = vec!["irc".to_owned()];
        // A second bridge of the same protocol that is down: left out of every answer.
        let mut down = registration("down", Some(closed), "down-as", "down-hs");
        down.protocols = vec!["irc".to_owned(), "gitter".to_owned()];
        config.appservices.push(down);
    })
    .await
    else {
        return;
    };
    let (alice, _) = user(&server, "alice").await;
    const T: &str = "/_matrix/client/v3/thirdparty";
    let (status, body) = alice.get(&format!("{T}/protocols")).await;
    assert_eq!(status, 200, "{body}");
    crate::spec::check("third_party_lookup.yaml", "/thirdparty/protocols", "get", 200, &body);
    let irc = &body["irc"];
    assert_eq!(irc["icon"], "mxc://example.org/irc", "{body}");
    assert_eq!(irc["instances"][0]["network_id"], "libera", "{body}");
    assert_eq!(irc["instances"][0]["instance_id"], "bridge|libera", "{body}");
    assert!(body.get("gitter").is_none(), "nobody answered for it: {body}");
    let (status, one) = alice.get(&format!("{T}/protocol/irc")).await;
    assert_eq!((status, &one), (200, irc));
    let (status, body) = alice.get(&format!("{T}/protocol/gitter")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    // Lookups pass the fields on (not the access token); what is not an object is dropped.
    let (status, body) = alice.get(&format!("{T}/location/irc?channel=%23matrix")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([{"alias": "#bridge_irc_x:localhost", "protocol": "irc",
                             "fields": {"channel": "#matrix"}}])
    );
    let (status, body) = alice.get(&format!("{T}/location/irc?channel=")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = alice
        .get(&format!(
            "{T}/user/irc?nickname=bob&access_token={}",
            alice.token.clone().unwrap_or_default()
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["userid"], "@bridge_bob:localhost", "{body}");
    let (status, body) = alice.get(&format!("{T}/user/xmpp?nickname=bob")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    // Reverse lookups go to the services whose namespace holds the id.
    let (status, body) =
        alice.get(&format!("{T}/location?alias=%23bridge_irc_x%3Alocalhost")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["alias"], "#bridge_irc_x:localhost", "{body}");
    let (status, body) = alice.get(&format!("{T}/location?alias=%23elsewhere%3Alocalhost")).await;
    assert_eq!((status, body), (200, json!([])));
    let (status, body) = alice.get(&format!("{T}/user?userid=%40bridge_bob%3Alocalhost")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["userid"], "@bridge_bob:localhost", "{body}");
    let (status, body) = alice.get(&format!("{T}/user?userid=%40alice%3Alocalhost")).await;
    assert_eq!((status, body), (200, json!([])));
}

crate::on_every_backend!(
    thirdparty_lookups_ask_the_services_of_the_protocol,
    as_token_masquerades_only_within_its_namespace,
    services_with_devices_act_as_them,
    msc4190_services_create_and_delete_their_users_devices,
    rate_limits_spare_unlimited_services,
    unknown_users_and_aliases_are_asked_of_the_service,
    a_service_that_is_down_means_not_found,
    pings_reach_the_service,
);
