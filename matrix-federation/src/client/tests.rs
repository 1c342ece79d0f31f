use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::keys::StaticKeys;
use crate::request::{Received, authenticate};

/// What the fake server saw: checked with the receiving side's `authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    destination: String,
    method: String,
    uri: String,
    body: String,
    limit: Option<usize>,
    origin: String,
}

#[derive(Debug)]
struct FakeServer {
    keys: StaticKeys,
    seen: Mutex<Vec<Seen>>,
    /// Answer status and body for every request.
    answer: Mutex<(u16, Vec<u8>)>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl FakeServer {
    fn new(key: &SigningKey) -> Self {
        let mut keys = StaticKeys::default();
        keys.insert("us.org", key.key_id(), key.public_key());
        FakeServer {
            keys,
            seen: Mutex::default(),
            answer: Mutex::new((200, b"{}".to_vec())),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }
    fn answer(&self, status: u16, body: &[u8]) {
        *self.answer.lock().expect("lock") = (status, body.to_vec());
    }
    fn last(&self) -> Seen {
        self.seen.lock().expect("lock").last().cloned().expect("a request")
    }
}

#[async_trait]
impl Transport for FakeServer {
    async fn send(
        &self,
        destination: &str,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, FederationError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let uri = request.uri().to_string();
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let received = Received {
            method: request.method().as_str(),
            uri: &uri,
            authorization: authorization.as_deref(),
            body: Some(request.body()),
        };
        let origin = authenticate(&received, destination, &self.keys, 0)
            .await?
            .expect("the request authenticates on the receiving side");
        self.seen.lock().expect("lock").push(Seen {
            destination: destination.to_owned(),
            method: request.method().to_string(),
            uri,
            body: String::from_utf8(request.body().to_vec()).expect("utf-8"),
            limit: request.extensions().get::<ResponseLimit>().map(|l| l.0),
            origin: origin.to_string(),
        });
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let (status, body) = self.answer.lock().expect("lock").clone();
        let mut response = http::Response::new(Bytes::from(body));
        *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
        Ok(response)
    }
}

fn client(options: ClientOptions) -> (FederationClient, Arc<FakeServer>) {
    let key = Arc::new(SigningKey::from_seed("1", &[7; 32]));
    let server = Arc::new(FakeServer::new(&key));
    let client =
        FederationClient::new(&FederationOptions::new("us.org"), key, server.clone(), options);
    (client, server)
}

fn object(text: &str) -> Object {
    parse_lenient(text.as_bytes()).expect("json").as_object().expect("object").clone()
}

#[test]
fn identifiers_are_percent_encoded() {
    assert_eq!(encode("!room:b.org"), "%21room%3Ab.org");
    assert_eq!(encode("$abc/def+g="), "%24abc%2Fdef%2Bg%3D");
    assert_eq!(encode("@ü:x"), "%40%C3%BC%3Ax");
    assert_eq!(encode("A-z_0.9~"), "A-z_0.9~");
}

#[tokio::test]
async fn every_helper_sends_a_signed_request_to_its_endpoint() {
    let (client, server) = client(ClientOptions::default());
    let large = Some(64 << 20);
    let event = object(r#"{"type":"m.room.member","depth":1.50}"#);
    let room = "!r:them.org";
    let dest = "them.org";

    macro_rules! check {
        ($call:expr, $method:expr, $uri:expr, $body:expr, $limit:expr) => {{
            $call.await.expect("an answer");
            let seen = server.last();
            assert_eq!(seen.method, $method, "{}", $uri);
            assert_eq!(seen.uri, $uri);
            assert_eq!(seen.body, $body, "{}", $uri);
            assert_eq!(seen.limit, $limit, "{}", $uri);
            assert_eq!((seen.destination.as_str(), seen.origin.as_str()), (dest, "us.org"));
        }};
    }
    server.answer(200, br#"{"server":{"name":"X","version":"1"}}"#);
    let version = client.version(dest).await.expect("version");
    assert_eq!(version, ServerVersion { name: Some("X".into()), version: Some("1".into()) });
    server.answer(200, b"{}");
    check!(client.server_keys(dest), "GET", "/_matrix/key/v2/server", "", None);
    check!(
        client.query_keys(dest, object(r#"{"a.org":{}}"#)),
        "POST",
        "/_matrix/key/v2/query",
        r#"{"server_keys":{"a.org":{}}}"#,
        None
    );
    check!(
        client.make_join(dest, room, "@u:us.org", &["10", "11"]),
        "GET",
        "/_matrix/federation/v1/make_join/%21r%3Athem.org/%40u%3Aus.org?ver=10&ver=11",
        "",
        None
    );
    // Event bodies keep their numbers exactly.
    check!(
        client.send_join(dest, room, "$e", &event, true),
        "PUT",
        "/_matrix/federation/v2/send_join/%21r%3Athem.org/%24e?omit_members=true",
        r#"{"depth":1.50,"type":"m.room.member"}"#,
        large
    );
    check!(
        client.make_leave(dest, room, "@u:us.org"),
        "GET",
        "/_matrix/federation/v1/make_leave/%21r%3Athem.org/%40u%3Aus.org",
        "",
        None
    );
    check!(
        client.send_leave(dest, room, "$e", &event),
        "PUT",
        "/_matrix/federation/v2/send_leave/%21r%3Athem.org/%24e",
        r#"{"depth":1.50,"type":"m.room.member"}"#,
        None
    );
    check!(
        client.invite(dest, room, "$e", "11", event.clone(), vec![Value::from("s")]),
        "PUT",
        "/_matrix/federation/v2/invite/%21r%3Athem.org/%24e",
        r#"{"event":{"depth":1.50,"type":"m.room.member"},"invite_room_state":["s"],"room_version":"11"}"#,
        None
    );
    check!(
        client.make_knock(dest, room, "@u:us.org", &["7"]),
        "GET",
        "/_matrix/federation/v1/make_knock/%21r%3Athem.org/%40u%3Aus.org?ver=7",
        "",
        None
    );
    check!(
        client.send_knock(dest, room, "$e", &event),
        "PUT",
        "/_matrix/federation/v1/send_knock/%21r%3Athem.org/%24e",
        r#"{"depth":1.50,"type":"m.room.member"}"#,
        None
    );
    check!(
        client.backfill(dest, room, &["$a", "$b"], 10),
        "GET",
        "/_matrix/federation/v1/backfill/%21r%3Athem.org?limit=10&v=%24a&v=%24b",
        "",
        large
    );
    check!(
        client.get_missing_events(dest, room, &["$a"], &["$b"], 5, 2),
        "POST",
        "/_matrix/federation/v1/get_missing_events/%21r%3Athem.org",
        r#"{"earliest_events":["$a"],"latest_events":["$b"],"limit":5,"min_depth":2}"#,
        large
    );
    check!(
        client.state(dest, room, "$e"),
        "GET",
        "/_matrix/federation/v1/state/%21r%3Athem.org?event_id=%24e",
        "",
        large
    );
    check!(
        client.state_ids(dest, room, "$e"),
        "GET",
        "/_matrix/federation/v1/state_ids/%21r%3Athem.org?event_id=%24e",
        "",
        large
    );
    check!(client.event(dest, "$e/x"), "GET", "/_matrix/federation/v1/event/%24e%2Fx", "", None);
    check!(
        client.event_auth(dest, room, "$e"),
        "GET",
        "/_matrix/federation/v1/event_auth/%21r%3Athem.org/%24e",
        "",
        large
    );
    check!(
        client.query_profile(dest, "@u:them.org", Some("displayname")),
        "GET",
        "/_matrix/federation/v1/query/profile?user_id=%40u%3Athem.org&field=displayname",
        "",
        None
    );
    check!(
        client.query_directory(dest, "#a:them.org"),
        "GET",
        "/_matrix/federation/v1/query/directory?room_alias=%23a%3Athem.org",
        "",
        None
    );
    check!(
        client.public_rooms(dest, Some(5), Some("tok en")),
        "GET",
        "/_matrix/federation/v1/publicRooms?limit=5&since=tok%20en",
        "",
        None
    );
    check!(
        client.public_rooms(dest, None, None),
        "GET",
        "/_matrix/federation/v1/publicRooms",
        "",
        None
    );
    check!(
        client.public_rooms_filtered(dest, &object(r#"{"limit":1}"#)),
        "POST",
        "/_matrix/federation/v1/publicRooms",
        r#"{"limit":1}"#,
        None
    );
    check!(
        client.user_devices(dest, "@u:them.org"),
        "GET",
        "/_matrix/federation/v1/user/devices/%40u%3Athem.org",
        "",
        None
    );
    check!(
        client.user_keys_query(dest, object(r#"{"@u:them.org":[]}"#)),
        "POST",
        "/_matrix/federation/v1/user/keys/query",
        r#"{"device_keys":{"@u:them.org":[]}}"#,
        None
    );
    check!(
        client.user_keys_claim(dest, object(r#"{"@u:them.org":{"D":"signed_curve25519"}}"#)),
        "POST",
        "/_matrix/federation/v1/user/keys/claim",
        r#"{"one_time_keys":{"@u:them.org":{"D":"signed_curve25519"}}}"#,
        None
    );
    // A transaction carries our origin and a timestamp.
    client
        .send_transaction(dest, "t 1", vec![Value::Object(event.clone())], vec![])
        .await
        .expect("sent");
    let seen = server.last();
    assert_eq!(seen.uri, "/_matrix/federation/v1/send/t%201");
    let body = object(&seen.body);
    assert_eq!(body.get_str("origin"), Some("us.org"));
    assert!(body.get("origin_server_ts").and_then(Value::as_i64).is_some_and(|ts| ts > 0));
    assert_eq!(body.get("pdus").and_then(Value::as_array).map(<[Value]>::len), Some(1));
}

#[tokio::test]
async fn errors_say_what_the_destination_answered() {
    let (client, server) = client(ClientOptions::default());
    server.answer(403, br#"{"errcode":"M_FORBIDDEN","error":"not allowed"}"#);
    let error = client.event("them.org", "$e").await.expect_err("forbidden");
    assert!(matches!(error, FederationError::Status { status: 403, .. }));
    assert_eq!(error.errcode().as_deref(), Some("M_FORBIDDEN"));
    server.answer(500, b"<html>");
    let error = client.event("them.org", "$e").await.expect_err("error");
    assert_eq!(error.errcode(), None);
    for body in [&b"not json"[..], b"[1,2]", b"{\"a\":", b""] {
        server.answer(200, body);
        assert!(matches!(
            client.event("them.org", "$e").await,
            Err(FederationError::Malformed { .. })
        ));
    }
}

#[tokio::test]
async fn requests_to_one_destination_are_bounded() {
    let options = ClientOptions { max_concurrent_per_destination: 2, ..ClientOptions::default() };
    let (client, server) = client(options);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.event("them.org", "$e").await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("answer");
    }
    let max = server.max_in_flight.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "{max} requests at once");
    assert_eq!(server.seen.lock().expect("lock").len(), 10);
}
