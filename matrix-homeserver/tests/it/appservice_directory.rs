//! The room lists of application services' networks: `PUT` (and Synapse's `DELETE`)
//! `/directory/list/appservice/{networkId}/{roomId}` with the service's token only, and the
//! `publicRooms` filters `include_all_networks` and `third_party_instance_id` that read them.

use matrix_homeserver::{AppserviceRegistration, Namespace};
use serde_json::{Value, json};

use crate::rooms::{create, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";
const AS_TOKEN: &str = "directory-as-token";

/// The room ids of a `publicRooms` answer, sorted.
fn rooms_of(body: &Value) -> Vec<String> {
    let mut rooms: Vec<String> = body["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["room_id"].as_str().map(str::to_owned))
        .collect();
    rooms.sort();
    rooms
}

async fn public_rooms(client: &Client, body: Value) -> (u16, Value) {
    client.post(&format!("{V3}/publicRooms"), &body).await
}

fn sorted(mut rooms: Vec<&String>) -> Vec<String> {
    rooms.sort();
    rooms.into_iter().cloned().collect()
}

async fn services_publish_rooms_in_their_network_lists(backend: crate::Backend) {
    let Some(server) = crate::start_changed(backend, |config| {
        let mut r = AppserviceRegistration::new("irc", None, AS_TOKEN, "hs-token", "ircbot");
        r.namespaces.users.push(Namespace::new("@irc_.*:localhost", true));
        config.appservices.push(r);
    })
    .await
    else {
        return;
    };
    let service = Client::new(&server).with_token(AS_TOKEN);
    let (alice, _) = user(&server, "alice").await;
    let main = create(&alice, json!({"visibility": "public"})).await;
    let libera = create(&alice, json!({})).await;
    let oftc = create(&alice, json!({})).await;

    let list =
        |network: &str, room: &str| format!("{V3}/directory/list/appservice/{network}/{room}");
    let (status, body) =
        service.put(&list("libera", &libera), &json!({"visibility": "public"})).await;
    assert_eq!(status, 200, "{body}");
    check(
        "appservice_room_directory.yaml",
        "/directory/list/appservice/{networkId}/{roomId}",
        "put",
        200,
        &body,
    );
    // Synapse's default visibility: public.
    let (status, body) = service.put(&list("oftc", &oftc), &json!({})).await;
    assert_eq!(status, 200, "{body}");

    // Only a service may; a bad visibility, an unknown or malformed room are refused.
    let (status, body) = alice.put(&list("libera", &main), &json!({"visibility": "public"})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = service.put(&list("libera", &main), &json!({"visibility": "loud"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) =
        service.put(&list("libera", "!nope:localhost"), &json!({"visibility": "public"})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, _) = service.put(&list("libera", "not-a-room"), &json!({})).await;
    assert_eq!(status, 400);

    // The main list holds only the directory's rooms; all networks hold every list; one
    // instance (`{service}|{network}`) its own.
    let (status, body) = public_rooms(&alice, json!({})).await;
    assert_eq!(status, 200, "{body}");
    check("list_public_rooms.yaml", "/publicRooms", "post", 200, &body);
    assert_eq!(rooms_of(&body), vec![main.clone()]);
    let (status, body) = alice.get(&format!("{V3}/publicRooms")).await;
    assert_eq!((status, rooms_of(&body)), (200, vec![main.clone()]));
    let (status, body) = public_rooms(&alice, json!({"include_all_networks": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rooms_of(&body), sorted(vec![&main, &libera, &oftc]));
    assert_eq!(body["total_room_count_estimate"], 3);
    let (status, body) =
        public_rooms(&alice, json!({"third_party_instance_id": "irc|libera"})).await;
    assert_eq!((status, rooms_of(&body)), (200, vec![libera.clone()]), "{body}");
    let (status, body) =
        public_rooms(&alice, json!({"third_party_instance_id": "irc|efnet"})).await;
    assert_eq!((status, rooms_of(&body)), (200, Vec::<String>::new()));
    let both = json!({"include_all_networks": true, "third_party_instance_id": "irc|libera"});
    let (status, body) = public_rooms(&alice, both).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = public_rooms(&alice, json!({"third_party_instance_id": "libera"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // Taken out: private, or Synapse's DELETE.
    let (status, _) =
        service.put(&list("libera", &libera), &json!({"visibility": "private"})).await;
    assert_eq!(status, 200);
    let (status, body) =
        public_rooms(&alice, json!({"third_party_instance_id": "irc|libera"})).await;
    assert_eq!((status, rooms_of(&body)), (200, Vec::<String>::new()));
    let (status, _) = service.send(reqwest::Method::DELETE, &list("oftc", &oftc), None).await;
    assert_eq!(status, 200);
    let (status, body) = public_rooms(&alice, json!({"include_all_networks": true})).await;
    assert_eq!((status, rooms_of(&body)), (200, vec![main]));
}

crate::on_every_backend!(services_publish_rooms_in_their_network_lists);
