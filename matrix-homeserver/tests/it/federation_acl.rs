//! Server ACLs on every federation entry point the spec lists (server-server "Server Access
//! Control Lists"): a server the room's `m.room.server_acl` denies gets 403 `M_FORBIDDEN` from
//! `make_join`, `make_leave`, `make_knock`, `send_join`, `send_leave`, `send_knock` and
//! `invite`; its PDUs in `/send` are refused one by one (and not stored) and its room EDUs
//! (typing, receipts) dropped. The reads (`event`, `state`, `state_ids`, `event_auth`,
//! `backfill`, `get_missing_events`) are in `federation_reads.rs`.

use matrix_core::Value as CoreValue;
use matrix_homeserver::matrix_federation::FederationError;
use serde_json::json;

use crate::federation::call;
use crate::federation_edus::{edu, has_receipt, send, shared_room, typing_users, wait_for_event};

fn errcode<T: std::fmt::Debug>(result: Result<T, FederationError>) -> (u16, String) {
    match result {
        Err(FederationError::Status { status, body, .. }) => {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            (status, json["errcode"].as_str().unwrap_or_default().to_owned())
        }
        other => panic!("not refused: {other:?}"),
    }
}

/// `template`'s event with its membership (and state key) changed: what a server would sign
/// and send; the ACL refuses it before any signature is looked at.
fn member_event(
    template: &matrix_core::Object,
    membership: &str,
    target: Option<&str>,
) -> matrix_core::Object {
    let Some(CoreValue::Object(mut event)) = template.get("event").cloned() else {
        panic!("a template: {template:?}")
    };
    event.object_entry("content").insert("membership", membership);
    if let Some(target) = target {
        event.insert("state_key", target);
    }
    // Well formed (never checked: the ACL refuses first).
    event.object_entry("hashes").insert("sha256", "AAAA");
    event.object_entry("signatures");
    event
}

#[tokio::test]
async fn a_server_the_acl_denies_is_refused_on_every_entry_point() {
    let s = shared_room().await;
    let (a, b, room) = (s.a(), s.b(), s.room.clone());
    let event = send(a, &s.alice.access_token, &room, "before").await;
    wait_for_event(b, &s.bob.access_token, &room, &event).await;
    let client = b.federation_client().expect("federation is on");
    let versions = ["10", "11", "12"];
    // A template of bob's while b is allowed.
    let template = client.make_leave("a.test", &room, "@bob:b.test").await.expect("b is allowed");
    let version = template.get_str("room_version").expect("a version").to_owned();
    let rules = matrix_core::RoomVersionRules::get(&version).expect("known");

    // alice denies b.test.
    let (status, body) = call(
        a,
        &s.alice.access_token,
        reqwest::Method::PUT,
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/"),
        json!({"allow": ["*"], "deny": ["b.test"], "allow_ip_literals": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let forbidden = (403, "M_FORBIDDEN".to_owned());
    assert_eq!(
        errcode(client.make_join("a.test", &room, "@bob:b.test", &versions).await),
        forbidden
    );
    assert_eq!(errcode(client.make_leave("a.test", &room, "@bob:b.test").await), forbidden);
    assert_eq!(
        errcode(client.make_knock("a.test", &room, "@bob:b.test", &versions).await),
        forbidden
    );
    for membership in ["join", "leave", "knock"] {
        let event = member_event(&template, membership, None);
        let pdu = matrix_core::Pdu::from_object(event.clone(), rules).expect("a pdu");
        let result = match membership {
            "join" => client.send_join("a.test", &room, pdu.event_id(), &event, false).await,
            "leave" => client.send_leave("a.test", &room, pdu.event_id(), &event).await,
            _ => client.send_knock("a.test", &room, pdu.event_id(), &event).await,
        };
        assert_eq!(errcode(result), forbidden, "send_{membership}");
    }
    // An invite of alice's friend by bob, into a room a knows.
    a.register_user("dora", "pw").await;
    let invite = member_event(&template, "invite", Some("@dora:a.test"));
    let pdu = matrix_core::Pdu::from_object(invite.clone(), rules).expect("a pdu");
    let result = client.invite("a.test", &room, pdu.event_id(), &version, invite, Vec::new()).await;
    assert_eq!(errcode(result), forbidden, "invite");

    // A PDU of b's in a transaction: refused with the reason, not stored.
    let (status, sent) = call(
        b,
        &s.bob.access_token,
        reqwest::Method::PUT,
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/denied"),
        json!({"msgtype": "m.text", "body": "denied"}),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["event_id"].as_str().expect("an id").to_owned();
    // (b upholds the ACL too and serves it to nobody: its own copy is read.)
    let stored = b.storage().event(&id).await.expect("b reads").expect("b stored it");
    let pdu = matrix_core::json::parse_lenient(&stored.json).expect("json");
    let answer = client
        .send_transaction("a.test", "acl-pdu-1", vec![pdu], Vec::new())
        .await
        .expect("a answers the transaction");
    let error = answer
        .get_object("pdus")
        .and_then(|p| p.get_object(&id))
        .and_then(|r| r.get_str("error"))
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("ACL"), "{answer:?}");
    assert!(a.storage().event(&id).await.expect("a reads").is_none(), "a denied PDU is not stored");

    // Room EDUs of b's: dropped.
    let edus = vec![
        edu("m.typing", json!({"room_id": room, "user_id": "@bob:b.test", "typing": true})),
        edu(
            "m.receipt",
            json!({ room.as_str(): {"m.read": {"@bob:b.test": {"event_ids": [event], "data": {"ts": 1}}}}}),
        ),
    ];
    let answer = client.send_transaction("a.test", "acl-edu-1", Vec::new(), edus).await;
    assert!(answer.is_ok(), "{answer:?}");
    let (status, sync) =
        call(a, &s.alice.access_token, reqwest::Method::GET, "/_matrix/client/v3/sync", json!({}))
            .await;
    assert_eq!(status, 200, "{sync}");
    assert!(typing_users(&sync, &room).is_empty(), "{sync}");
    assert!(!has_receipt(&sync, &room, &event, "@bob:b.test"), "{sync}");
}
