//! Synapse's admin API: shared-secret registration (`/_synapse/admin/v1/register`), as
//! `register_new_matrix_user` calls it, and what it refuses.

use matrix_homeserver::registration_mac;
use serde_json::{Value, json};

use crate::{Client, errcode};

const REGISTER: &str = "/_synapse/admin/v1/register";

async fn nonce(client: &Client) -> String {
    let (status, body) = client.get(REGISTER).await;
    assert_eq!(status, 200, "{body}");
    body["nonce"].as_str().expect("a nonce").to_owned()
}

fn request(nonce: &str, user: &str, password: &str, admin: bool, secret: &str) -> Value {
    json!({
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": admin,
        "mac": registration_mac(secret, nonce, user, password, admin, None),
    })
}

async fn shared_secret_registration(backend: crate::Backend) {
    let Some(server) =
        crate::start_changed(backend, |c| c.registration.shared_secret = Some("s3cret".into()))
            .await
    else {
        return;
    };
    let client = Client::new(&server);

    // The right MAC: an administrator with a working token.
    let first = nonce(&client).await;
    let (status, body) =
        client.post(REGISTER, &request(&first, "boss", "pw-boss", true, "s3cret")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], format!("@boss:{}", server.server_name()));
    let token = body["access_token"].as_str().expect("a token");
    let (status, whoami) =
        client.clone().with_token(token).get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(status, 200, "{whoami}");
    assert_eq!(whoami["device_id"], body["device_id"]);

    // A nonce is good once.
    let (status, body) =
        client.post(REGISTER, &request(&first, "again", "pw", false, "s3cret")).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"), "{body}");
    // Made up: refused.
    let (status, body) =
        client.post(REGISTER, &request("made-up", "again", "pw", false, "s3cret")).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"), "{body}");
    // The wrong secret, or a MAC for other values (admin flipped): 403, and no user.
    let n = nonce(&client).await;
    let (status, body) = client.post(REGISTER, &request(&n, "mallory", "pw", true, "guess")).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let n = nonce(&client).await;
    let mut flipped = request(&n, "mallory", "pw", false, "s3cret");
    flipped["admin"] = json!(true);
    let (status, body) = client.post(REGISTER, &flipped).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, _) = client
        .post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "mallory"}, "password": "pw"}),
        )
        .await;
    assert_eq!(status, 403, "mallory was not created");
    // A name in use.
    let n = nonce(&client).await;
    let (status, body) = client.post(REGISTER, &request(&n, "boss", "pw", false, "s3cret")).await;
    assert_eq!((status, errcode(&body)), (400, "M_USER_IN_USE"), "{body}");
    // Nonces are bounded: a flood gets 429, not memory.
    let mut limited = false;
    for _ in 0..1_100 {
        let (status, _) = client.get(REGISTER).await;
        if status == 429 {
            limited = true;
            break;
        }
        assert_eq!(status, 200);
    }
    assert!(limited, "outstanding nonces are bounded");
}

async fn without_a_secret_the_endpoint_is_off(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let client = Client::new(&server);
    let (status, body) = client.get(REGISTER).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"), "{body}");
    let (status, body) = client.post(REGISTER, &request("n", "boss", "pw", true, "")).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"), "{body}");
}

crate::on_every_backend!(shared_secret_registration, without_a_secret_the_endpoint_is_off);
