//! Registration (closed, open, token; the user-interactive auth flow), availability, login,
//! logout, whoami, and their failure cases.

use matrix_homeserver::{Config, RegistrationMode};
use serde_json::{Value, json};

use crate::spec::check;
use crate::{Client, errcode};

const REGISTER: &str = "/_matrix/client/v3/register";
const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

fn password_login(user: &str, password: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
           "password": password})
}

async fn open_registration_follows_the_dummy_flow(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let client = Client::new(&server);
    let (status, body) = client.post(REGISTER, &json!({"username": "bob", "password": "pw"})).await;
    assert_eq!(status, 401, "{body}");
    check("registration.yaml", "/register", "post", 401, &body);
    assert_eq!(body["flows"][0]["stages"], json!(["m.login.dummy"]));
    let session = body["session"].as_str().expect("a session").to_owned();

    let (status, body) = client
        .post(
            REGISTER,
            &json!({"username": "bob", "password": "pw",
                                "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    check("registration.yaml", "/register", "post", 200, &body);
    assert_eq!(body["user_id"], "@bob:localhost");
    let token = body["access_token"].as_str().expect("a token");
    let device = body["device_id"].as_str().expect("a device");

    let (status, me) = Client::new(&server).with_token(token).get(WHOAMI).await;
    assert_eq!(status, 200);
    check("whoami.yaml", "/account/whoami", "get", 200, &me);
    assert_eq!((&me["user_id"], &me["device_id"]), (&json!("@bob:localhost"), &json!(device)));
    assert_ne!(me["is_guest"], json!(true));

    // The name is taken now.
    let (status, body) = client
        .post(
            REGISTER,
            &json!({"username": "bob", "password": "x",
                                "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_USER_IN_USE"));
    check("registration.yaml", "/register", "post", 400, &body);
}

async fn registration_is_closed_by_default(backend: crate::Backend) {
    let server = match crate::start_with(backend, Config::new("localhost")).await {
        Some(s) => s,
        None => return,
    };
    let (status, body) = Client::new(&server)
        .post(
            REGISTER,
            &json!({"username": "eve", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    assert!(server.homeserver().create_user("admin", Some("pw"), true).await.is_ok());
    // No token is valid where registration is not by token.
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token=x";
    let (status, body) = Client::new(&server).get(validity).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
}

async fn token_registration_wants_a_known_token(backend: crate::Backend) {
    let mut config = Config::new("localhost");
    config.registration.mode = RegistrationMode::Token;
    config.registration.tokens = vec!["let-me-in".into()];
    let server = match crate::start_with(backend, config).await {
        Some(s) => s,
        None => return,
    };
    let client = Client::new(&server);
    let (status, body) = client.post(REGISTER, &json!({"username": "carol"})).await;
    assert_eq!(status, 401);
    assert_eq!(body["flows"][0]["stages"], json!(["m.login.registration_token"]));
    let (status, body) = client
        .post(
            REGISTER,
            &json!({"username": "carol",
                                "auth": {"type": "m.login.registration_token", "token": "nope"}}),
        )
        .await;
    // A failed stage answers the 401 again (with the errcode), so the client can retry it.
    assert_eq!((status, errcode(&body)), (401, "M_FORBIDDEN"));
    assert_eq!(body["flows"][0]["stages"], json!(["m.login.registration_token"]));
    let (status, body) = client
        .post(REGISTER, &json!({"username": "carol",
                                "auth": {"type": "m.login.registration_token", "token": "let-me-in"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    // The dummy stage is not enough here.
    let (status, _) = client
        .post(REGISTER, &json!({"username": "dave", "auth": {"type": "m.login.dummy"}}))
        .await;
    assert_eq!(status, 401);

    // A token can be checked before registering (v1.2), each check a try of the same limit.
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    let (status, body) = client.get(&format!("{validity}?token=let-me-in")).await;
    assert_eq!((status, &body), (200, &json!({"valid": true})));
    check(
        "registration_tokens.yaml",
        "/register/m.login.registration_token/validity",
        "get",
        200,
        &body,
    );
    let (status, body) = client.get(&format!("{validity}?token=let-me")).await;
    assert_eq!((status, body), (200, json!({"valid": false})), "a prefix is not the token");
    let (status, body) = client.get(validity).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    let mut limited = false;
    for _ in 0..20 {
        let (status, body) = client.get(&format!("{validity}?token=guess")).await;
        if status == 429 {
            assert_eq!(errcode(&body), "M_LIMIT_EXCEEDED");
            limited = true;
            break;
        }
    }
    assert!(limited, "guesses are rate limited");
}

async fn invalid_user_names_and_guests_are_refused(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let client = Client::new(&server);
    for name in ["Bob", "bob smith", "", "é"] {
        let (status, body) = client
            .post(REGISTER, &json!({"username": name, "auth": {"type": "m.login.dummy"}}))
            .await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_USERNAME"), "{name:?}");
    }
    let (status, body) = client.post(&format!("{REGISTER}?kind=guest"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_GUEST_ACCESS_FORBIDDEN"));
    // No user name: one is picked.
    let (status, body) = client.post(REGISTER, &json!({"auth": {"type": "m.login.dummy"}})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["user_id"].as_str().is_some_and(|id| id.ends_with(":localhost")));
}

async fn bad_bodies_are_matrix_errors(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let client = Client::new(&server);
    let (status, body) = client.post_raw(REGISTER, b"{not json".to_vec()).await;
    assert_eq!((status, errcode(&body)), (400, "M_NOT_JSON"));
    let (status, body) = client.post(REGISTER, &json!({"username": 5})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = client.post_raw(LOGIN, vec![b' '; 2 * 1024 * 1024]).await;
    assert_eq!((status, errcode(&body)), (413, "M_TOO_LARGE"));
}

async fn availability(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    server.register_user("taken", "pw").await;
    let client = Client::new(&server);
    let (status, body) = client.get("/_matrix/client/v3/register/available?username=free").await;
    check("registration.yaml", "/register/available", "get", 200, &body);
    assert_eq!((status, body), (200, json!({"available": true})));
    let (status, body) = client.get("/_matrix/client/v3/register/available?username=taken").await;
    assert_eq!((status, errcode(&body)), (400, "M_USER_IN_USE"));
    check("registration.yaml", "/register/available", "get", 400, &body);
    let (status, body) = client.get("/_matrix/client/v3/register/available?username=NO").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_USERNAME"));
}

async fn login_logout_and_tokens(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    server.register_user("alice", "correct horse").await;
    let client = Client::new(&server);
    let (status, body) = client.get(LOGIN).await;
    assert_eq!((status, &body["flows"][0]["type"]), (200, &json!("m.login.password")));
    check("login.yaml", "/login", "get", 200, &body);

    for (user, password) in [("alice", "wrong"), ("nobody", "correct horse")] {
        let (status, body) = client.post(LOGIN, &password_login(user, password)).await;
        assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{user}");
        check("login.yaml", "/login", "post", 403, &body);
    }
    // A localpart or a full id.
    let (status, first) = client.post(LOGIN, &password_login("alice", "correct horse")).await;
    assert_eq!(status, 200, "{first}");
    check("login.yaml", "/login", "post", 200, &first);
    let (status, second) =
        client.post(LOGIN, &password_login("@alice:localhost", "correct horse")).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(first["device_id"], second["device_id"]);
    let first = Client::new(&server).with_token(first["access_token"].as_str().expect("token"));
    let second = Client::new(&server).with_token(second["access_token"].as_str().expect("token"));

    let (status, body) = first.post("/_matrix/client/v3/logout", &json!({})).await;
    assert_eq!(status, 200);
    check("logout.yaml", "/logout", "post", 200, &body);
    let (status, body) = first.get(WHOAMI).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
    assert_eq!(second.get(WHOAMI).await.0, 200, "the other device is still logged in");

    let (_, third) = client.post(LOGIN, &password_login("alice", "correct horse")).await;
    let third = Client::new(&server).with_token(third["access_token"].as_str().expect("token"));
    let (status, body) = second.post("/_matrix/client/v3/logout/all", &json!({})).await;
    assert_eq!(status, 200);
    check("logout.yaml", "/logout/all", "post", 200, &body);
    assert_eq!(second.get(WHOAMI).await.0, 401);
    assert_eq!(third.get(WHOAMI).await.0, 401);

    let (status, body) = Client::new(&server).with_token("made-up").get(WHOAMI).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
    let (status, body) = Client::new(&server).get(WHOAMI).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"));
}

crate::on_every_backend!(
    open_registration_follows_the_dummy_flow,
    registration_is_closed_by_default,
    token_registration_wants_a_known_token,
    invalid_user_names_and_guests_are_refused,
    bad_bodies_are_matrix_errors,
    availability,
    login_logout_and_tokens
);
