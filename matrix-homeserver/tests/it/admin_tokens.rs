//! Synapse's registration tokens admin API (`/_synapse/admin/v1/registration_tokens`), and
//! registration honouring the tokens it makes.

use matrix_homeserver::RegistrationMode;
use reqwest::Method;
use serde_json::{Value, json};

use crate::{Client, Server, errcode};

const TOKENS: &str = "/_synapse/admin/v1/registration_tokens";
const REGISTER: &str = "/_matrix/client/v3/register";

/// A server whose registration is by token (one in the config), with an administrator.
async fn with_admin(backend: crate::Backend) -> Option<(Server, Client)> {
    let server = crate::start_changed(backend, |c| {
        c.registration.mode = RegistrationMode::Token;
        c.registration.tokens = vec!["from-config".into()];
    })
    .await?;
    let hs = server.homeserver();
    hs.create_user("boss", Some("pw-boss"), true).await.expect("boss is created");
    let boss = hs.login("boss", "pw-boss").await.expect("boss logs in");
    let admin = Client::new(&server).with_token(&boss.access_token);
    Some((server, admin))
}

async fn register(client: &Client, name: &str, token: &str) -> (u16, Value) {
    let body = json!({"username": name, "password": "pw-long-enough",
        "auth": {"type": "m.login.registration_token", "token": token}});
    client.post(REGISTER, &body).await
}

async fn only_administrators(backend: crate::Backend) {
    let Some((server, admin)) = with_admin(backend).await else { return };
    let alice = server.homeserver();
    alice.create_user("alice", Some("pw-alice"), false).await.expect("created");
    let session = alice.login("alice", "pw-alice").await.expect("logs in");
    let alice = Client::new(&server).with_token(&session.access_token);
    let anonymous = Client::new(&server);
    let (status, body) = admin.post(&format!("{TOKENS}/new"), &json!({"token": "abcd"})).await;
    assert_eq!(status, 200, "{body}");
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, TOKENS.into(), None),
        (Method::POST, format!("{TOKENS}/new"), Some(json!({}))),
        (Method::GET, format!("{TOKENS}/abcd"), None),
        (Method::PUT, format!("{TOKENS}/abcd"), Some(json!({"uses_allowed": 1}))),
        (Method::DELETE, format!("{TOKENS}/abcd"), None),
    ];
    for (method, path, body) in &calls {
        let (status, answer) = anonymous.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (401, "M_MISSING_TOKEN"), "{method} {path}");
        let (status, answer) = alice.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (403, "M_FORBIDDEN"), "{method} {path}: {answer}");
    }
    let (_, body) = admin.get(&format!("{TOKENS}/abcd")).await;
    assert_eq!(body["uses_allowed"], Value::Null, "unchanged: {body}");
}

async fn manage_tokens(backend: crate::Backend) {
    let Some((_server, admin)) = with_admin(backend).await else { return };
    let (status, body) = admin.post(&format!("{TOKENS}/new"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let generated = body["token"].as_str().expect("a token").to_owned();
    assert_eq!(generated.len(), 16);
    assert_eq!(
        (
            body["uses_allowed"].clone(),
            body["pending"].clone(),
            body["completed"].clone(),
            body["expiry_time"].clone()
        ),
        (Value::Null, json!(0), json!(0), Value::Null)
    );
    let (_, body) = admin.post(&format!("{TOKENS}/new"), &json!({"length": 5})).await;
    assert_eq!(body["token"].as_str().map(str::len), Some(5));
    let (status, body) = admin
        .post(
            &format!("{TOKENS}/new"),
            &json!({"token": "once", "uses_allowed": 1, "expiry_time": 4_000_000_000_000u64}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["uses_allowed"].clone(), body["expiry_time"].clone()),
        (json!(1), json!(4_000_000_000_000u64))
    );

    let (status, body) = admin.get(TOKENS).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["registration_tokens"].as_array().map(Vec::len), Some(3));
    let (_, body) = admin.put(&format!("{TOKENS}/once"), &json!({"uses_allowed": 0})).await;
    assert_eq!(body["uses_allowed"], 0);
    let (_, body) = admin.get(&format!("{TOKENS}?valid=false")).await;
    assert_eq!(body["registration_tokens"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["registration_tokens"][0]["token"], "once");
    let (_, body) = admin.get(&format!("{TOKENS}?valid=true")).await;
    assert_eq!(body["registration_tokens"].as_array().map(Vec::len), Some(2), "{body}");
    let (_, body) = admin
        .put(&format!("{TOKENS}/once"), &json!({"uses_allowed": null, "expiry_time": null}))
        .await;
    assert_eq!(
        (body["uses_allowed"].clone(), body["expiry_time"].clone()),
        (Value::Null, Value::Null)
    );
    let (status, body) = admin.get(&format!("{TOKENS}/once")).await;
    assert_eq!((status, body["token"].clone()), (200, json!("once")));

    let (status, body) = admin.send(Method::DELETE, &format!("{TOKENS}/once"), None).await;
    assert_eq!(status, 200, "{body}");
    for (method, path) in [(Method::GET, "once"), (Method::DELETE, "once")] {
        let (status, body) = admin.send(method.clone(), &format!("{TOKENS}/{path}"), None).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{method}: {body}");
    }
    let (status, body) = admin.put(&format!("{TOKENS}/once"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    let bad = [
        json!({"token": generated}),
        json!({"token": "has space"}),
        json!({"token": "x".repeat(65)}),
        json!({"token": ""}),
        json!({"length": 0}),
        json!({"length": 65}),
        json!({"uses_allowed": -1}),
        json!({"expiry_time": 1}),
    ];
    for body in bad {
        let (status, answer) = admin.post(&format!("{TOKENS}/new"), &body).await;
        assert_eq!((status, errcode(&answer)), (400, "M_INVALID_PARAM"), "{body}: {answer}");
    }
    let (status, body) = admin.get(&format!("{TOKENS}?valid=maybe")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
}

async fn registration_uses_tokens(backend: crate::Backend) {
    let Some((server, admin)) = with_admin(backend).await else { return };
    let client = Client::new(&server);
    let (status, body) =
        admin.post(&format!("{TOKENS}/new"), &json!({"token": "twice", "uses_allowed": 2})).await;
    assert_eq!(status, 200, "{body}");
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    let (_, body) = client.get(&format!("{validity}?token=twice")).await;
    assert_eq!(body, json!({"valid": true}));

    let (status, body) = register(&client, "first", "twice").await;
    assert_eq!(status, 200, "{body}");
    // A failed registration (the name is taken) gives its use back.
    let (status, body) = register(&client, "first", "twice").await;
    assert_eq!((status, errcode(&body)), (400, "M_USER_IN_USE"), "{body}");
    let (_, body) = admin.get(&format!("{TOKENS}/twice")).await;
    assert_eq!(
        (body["pending"].clone(), body["completed"].clone()),
        (json!(0), json!(1)),
        "{body}"
    );
    let (status, body) = register(&client, "second", "twice").await;
    assert_eq!(status, 200, "{body}");
    // Used up.
    let (status, body) = register(&client, "third", "twice").await;
    assert_eq!((status, errcode(&body)), (401, "M_FORBIDDEN"), "{body}");
    let (_, body) = client.get(&format!("{validity}?token=twice")).await;
    assert_eq!(body, json!({"valid": false}));
    let (_, body) = admin.get(&format!("{TOKENS}/twice")).await;
    assert_eq!(
        (body["pending"].clone(), body["completed"].clone()),
        (json!(0), json!(2)),
        "{body}"
    );
    // The config's token still works beside them; a deleted token no longer does.
    let (status, body) = register(&client, "third", "from-config").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = admin.post(&format!("{TOKENS}/new"), &json!({"token": "gone"})).await;
    assert_eq!(status, 200);
    let (status, _) = admin.send(Method::DELETE, &format!("{TOKENS}/gone"), None).await;
    assert_eq!(status, 200);
    let (status, body) = register(&client, "fourth", "gone").await;
    assert_eq!((status, errcode(&body)), (401, "M_FORBIDDEN"), "{body}");
}

crate::on_every_backend!(only_administrators, manage_tokens, registration_uses_tokens);
