//! Directories across servers (`TestFederation`): space hierarchies served to other servers
//! and asked of them, other servers' public room directories (`publicRooms?server=`),
//! aliases of other servers, and users of other servers in the user directory.

use matrix_homeserver::matrix_federation::FederationError;
use matrix_homeserver::testing::TestFederation;
use serde_json::{Value, json};

use crate::spec::{check, check_federation};
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";
const V1: &str = "/_matrix/client/v1";

fn serde(object: &matrix_core::Object) -> Value {
    let text = matrix_core::json::to_canonical_string(&matrix_core::Value::Object(object.clone()));
    serde_json::from_str(&text).expect("canonical JSON parses")
}

fn ids(body: &Value, key: &str) -> Vec<String> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .iter()
        .map(|r| r["room_id"].as_str().expect("a room id").to_owned())
        .collect()
}

async fn create(client: &Client, body: Value) -> String {
    let (status, answer) = client.post(&format!("{V3}/createRoom"), &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["room_id"].as_str().expect("a room id").to_owned()
}

async fn set_child(client: &Client, space: &str, child: &str) {
    let path = format!("{V3}/rooms/{space}/state/m.space.child/{child}");
    let (status, body) = client.put(&path, &json!({"via": ["a.test"]})).await;
    assert_eq!(status, 200, "{body}");
}

/// A space on a.test (room version 11, so that its id names its server) with a public
/// child and a private one.
async fn space_on_a(alice: &Client) -> (String, String, String) {
    let space = create(
        alice,
        json!({"preset": "public_chat", "name": "Space", "room_version": "11",
               "creation_content": {"type": "m.space"}}),
    )
    .await;
    let public = create(alice, json!({"preset": "public_chat", "name": "Public"})).await;
    let private = create(alice, json!({"preset": "private_chat", "name": "Private"})).await;
    set_child(alice, &space, &public).await;
    set_child(alice, &space, &private).await;
    (space, public, private)
}

#[tokio::test]
async fn hierarchies_are_served_to_other_servers_and_asked_of_them() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let alice = Client::new(a).with_token(&alice.access_token);
    let bob = b.register_user("bob", "pw").await;
    let bob = Client::new(b).with_token(&bob.access_token);
    let (space, public, private) = space_on_a(&alice).await;

    // Served: the space, the children b.test may see, the ids of the others.
    let b_client = b.federation_client().expect("federation is on");
    let answer = serde(&b_client.hierarchy("a.test", &space, false).await.expect("served"));
    check_federation("space_hierarchy.yaml", "/hierarchy/{roomId}", "get", 200, &answer);
    assert_eq!(answer["room"]["room_id"], space.as_str());
    assert_eq!(answer["room"]["children_state"].as_array().map(Vec::len), Some(2));
    assert_eq!(ids(&answer, "children"), vec![public.clone()]);
    assert_eq!(answer["inaccessible_children"], json!([private]));
    // Not served: a private room, a room a.test does not have.
    for room in [private.as_str(), "!nowhere:a.test"] {
        match b_client.hierarchy("a.test", room, false).await {
            Err(FederationError::Status { status: 404, .. }) => {}
            other => panic!("{room}: expected a 404, got {other:?}"),
        }
    }

    // Asked: bob on b.test (in no room) walks a.test's space through b.test.
    let path = format!("{V1}/rooms/{space}/hierarchy");
    let (status, body) = bob.get(&path).await;
    assert_eq!(status, 200, "{body}");
    check("space_hierarchy.yaml", "/rooms/{roomId}/hierarchy", "get", 200, &body);
    assert_eq!(ids(&body, "rooms"), vec![space.clone(), public.clone()]);
    assert_eq!(body["rooms"][1]["name"], "Public");
    // The private room is not his to see, even asked directly.
    let (status, body) = bob.get(&format!("{V1}/rooms/{private}/hierarchy")).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // A summary of a.test's public room through b.test (`via`), and of the private one:
    // not found.
    let summary = format!("{V1}/room_summary/{}?via=a.test", crate::rooms::urlencode(&public));
    let (status, body) = bob.get(&summary).await;
    assert_eq!(status, 200, "{body}");
    check("room_summary.yaml", "/room_summary/{roomIdOrAlias}", "get", 200, &body);
    assert_eq!((&body["room_id"], &body["name"]), (&json!(public), &json!("Public")));
    let summary = format!("{V1}/room_summary/{}?via=a.test", crate::rooms::urlencode(&private));
    let (status, body) = bob.get(&summary).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    // Once bob is in the space, b.test has it, and asks a.test for the children only.
    let (status, body) =
        bob.post(&format!("{V3}/join/{space}?server_name=a.test"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = bob.get(&path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body, "rooms"), vec![space.clone(), public.clone()]);
}

#[tokio::test]
async fn other_servers_directories_and_aliases() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let alice = Client::new(a).with_token(&alice.access_token);
    let bob_session = b.register_user("bob", "pw").await;
    let bob = Client::new(b).with_token(&bob_session.access_token);
    let lobby = create(
        &alice,
        json!({"preset": "public_chat", "visibility": "public", "name": "Lobby",
               "room_alias_name": "lobby"}),
    )
    .await;
    let space = create(
        &alice,
        json!({"preset": "public_chat", "visibility": "public", "name": "Space",
               "creation_content": {"type": "m.space"}}),
    )
    .await;

    // bob lists a.test's directory through b.test, whole and filtered.
    let (status, body) = bob.get(&format!("{V3}/publicRooms?server=a.test&limit=1")).await;
    assert_eq!(status, 200, "{body}");
    check("list_public_rooms.yaml", "/publicRooms", "get", 200, &body);
    assert_eq!(body["chunk"].as_array().map(Vec::len), Some(1));
    let next = body["next_batch"].as_str().expect("a next page");
    let (_, second) =
        bob.get(&format!("{V3}/publicRooms?server=a.test&limit=1&since={next}")).await;
    let mut both = ids(&body, "chunk");
    both.extend(ids(&second, "chunk"));
    both.sort();
    let mut expected = vec![lobby.clone(), space.clone()];
    expected.sort();
    assert_eq!(both, expected);
    let filter = json!({"filter": {"room_types": ["m.space"]}});
    let (status, body) = bob.post(&format!("{V3}/publicRooms?server=a.test"), &filter).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body, "chunk"), vec![space.clone()]);
    let filter = json!({"filter": {"generic_search_term": "LOBBY"}});
    let (_, body) = bob.post(&format!("{V3}/publicRooms?server=a.test"), &filter).await;
    assert_eq!(ids(&body, "chunk"), vec![lobby.clone()]);
    // A bad token is a.test's 400, passed on as a failure; a server that cannot be reached
    // is a 502.
    let (status, _) = bob.get(&format!("{V3}/publicRooms?server=a.test&since=garbage")).await;
    assert!(status >= 400, "{status}");
    net.cut("a.test", "b.test");
    let (status, body) = bob.get(&format!("{V3}/publicRooms?server=a.test")).await;
    assert_eq!(status, 502, "{body}");
    net.heal("a.test", "b.test");

    // Aliases of a.test, resolved by b.test over federation; an unknown one is 404.
    let (status, body) = bob.get(&format!("{V3}/directory/room/%23lobby:a.test")).await;
    assert_eq!((status, &body["room_id"]), (200, &json!(lobby)), "{body}");
    let (status, body) = bob.get(&format!("{V3}/directory/room/%23nothing:a.test")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    // bob joins the lobby by its alias, with a display name: alice finds him in her user
    // directory; a stranger of a.test does too (the lobby is public).
    let bob_id = bob_session.user_id.to_string();
    let (status, body) = bob
        .put(&format!("{V3}/profile/{bob_id}/displayname"), &json!({"displayname": "Bob of B"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = bob.post(&format!("{V3}/join/%23lobby:a.test"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        alice.post(&format!("{V3}/user_directory/search"), &json!({"search_term": "of b"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["user_id"], bob_id.as_str(), "{body}");
    assert_eq!(body["results"][0]["display_name"], "Bob of B");
}
