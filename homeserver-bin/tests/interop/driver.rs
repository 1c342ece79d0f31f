//! The driver's own helpers against Synapse: shared-secret registration (and its refusal of a
//! forged MAC), password login, a room, a message and a sync that sees it.

use std::time::Duration;

use serde_json::json;

use crate::client::{Session, encode, http_client, request};
use crate::synapse::{Synapse, registration_mac};

const PASSWORD: &str = "a long enough password";

/// A user registered with the shared secret logs in on a second device, creates a room and
/// sends to it; the first device's sync sees the message. A user registered through open
/// registration is invited, joins and sees it too.
#[tokio::test]
async fn a_synapse_user_registers_creates_a_room_and_sends() {
    let Some(synapse) = Synapse::from_env() else { return };
    let name = crate::unique("driver");
    let first = synapse.register(&name, PASSWORD, false).await;
    assert_eq!(first.user_id, format!("@{name}:{}", synapse.server_name));

    let second = Session::login(&synapse.client_url, &name, PASSWORD).await;
    assert_eq!(second.user_id, first.user_id);
    assert_ne!(second.device_id, first.device_id);

    let room = second.create_room(&json!({"preset": "private_chat", "name": "driver"})).await;
    let event_id = second.send_text(&room, "hello from the driver").await;
    let seen = first
        .wait_for_event(&room, Duration::from_secs(20), |event| event["event_id"] == event_id)
        .await;
    assert_eq!(seen["content"]["body"], "hello from the driver");
    assert_eq!(seen["sender"], first.user_id.as_str());

    let guest = Session::register_open(&synapse.client_url, &crate::unique("open"), PASSWORD).await;
    let (status, answer) = second
        .post(&format!("/rooms/{}/invite", encode(&room)), &json!({"user_id": guest.user_id}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let invited = guest.wait_for_invite(Some(&room), Duration::from_secs(20)).await;
    assert_eq!(invited, room);
    assert_eq!(guest.join(&room, &[]).await, room);
    let seen = guest
        .wait_for_event(&room, Duration::from_secs(20), |event| event["event_id"] == event_id)
        .await;
    assert_eq!(seen["content"]["body"], "hello from the driver");
}

/// A registration whose MAC was made with another secret, or that reuses a nonce, is refused.
#[tokio::test]
async fn synapse_refuses_a_forged_registration_mac() {
    let Some(synapse) = Synapse::from_env() else { return };
    let url = format!("{}/_synapse/admin/v1/register", synapse.client_url);
    let http = http_client();
    let (status, answer) = request(&http, reqwest::Method::GET, &url, None, None).await;
    assert_eq!(status, 200, "{answer}");
    let nonce = answer["nonce"].as_str().expect("a nonce");
    let name = crate::unique("forged");
    let mac = registration_mac("not the secret", nonce, &name, PASSWORD, true);
    let body = json!({"nonce": nonce, "username": name, "password": PASSWORD,
                      "admin": true, "mac": mac});
    let (status, answer) = request(&http, reqwest::Method::POST, &url, None, Some(&body)).await;
    assert_eq!(status, 403, "a forged MAC: {answer}");
    // The nonce was spent by the refused attempt.
    let (status, answer) = request(&http, reqwest::Method::POST, &url, None, Some(&body)).await;
    assert!(matches!(status, 400 | 403), "a replayed nonce: {status} {answer}");
}
