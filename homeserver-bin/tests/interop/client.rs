//! A Matrix client for the tests: the standard client-server API, so the same code talks to
//! Synapse and to our server. Every request is bounded in time; waiting for something to
//! arrive is bounded polling of `/sync`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// How long any one request may take (a long-polling sync asks for at most 1 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A plain-HTTP client with the tests' request timeout.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("an HTTP client")
}

/// An HTTPS client for federation listeners with self-signed certificates: certificates are
/// not verified (loopback test networks only).
pub(crate) fn federation_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("an HTTPS client")
}

/// Sends a request with an optional JSON body; answers the status and the body as JSON
/// (`Null` when it is not JSON). Panics only when there is no answer at all.
pub(crate) async fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut builder = http.request(method.clone(), url);
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    if let Some(body) = body {
        builder = builder.json(body);
    }
    let response =
        builder.send().await.unwrap_or_else(|e| panic!("{method} {url}: no answer: {e}"));
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// A logged-in device of a user on one homeserver's client API.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) http: reqwest::Client,
    /// The homeserver's client API, `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// The access token.
    pub(crate) token: String,
    /// The full user id, `@name:server`.
    pub(crate) user_id: String,
    /// The device the token belongs to.
    pub(crate) device_id: String,
}

impl Session {
    /// A session from a `/register` or `/login` answer.
    pub(crate) fn from_login(base: &str, answer: &Value) -> Session {
        let field = |name: &str| {
            answer[name].as_str().unwrap_or_else(|| panic!("no {name} in {answer}")).to_owned()
        };
        Session {
            http: http_client(),
            base: base.to_owned(),
            token: field("access_token"),
            user_id: field("user_id"),
            device_id: field("device_id"),
        }
    }

    /// Registers `localpart` through open registration's `m.login.dummy` stage (our server's
    /// `[registration] mode = "open"`, or Synapse's `enable_registration`).
    pub(crate) async fn register_open(base: &str, localpart: &str, password: &str) -> Session {
        let body = json!({"username": localpart, "password": password,
                          "auth": {"type": "m.login.dummy"}});
        let url = format!("{base}{V3}/register");
        let (status, answer) =
            request(&http_client(), reqwest::Method::POST, &url, None, Some(&body)).await;
        assert_eq!(status, 200, "registering {localpart} at {base}: {answer}");
        Session::from_login(base, &answer)
    }

    /// Logs in with a password: a new device of an existing user.
    pub(crate) async fn login(base: &str, user: &str, password: &str) -> Session {
        let body = json!({"type": "m.login.password", "password": password,
                          "identifier": {"type": "m.id.user", "user": user}});
        let url = format!("{base}{V3}/login");
        let (status, answer) =
            request(&http_client(), reqwest::Method::POST, &url, None, Some(&body)).await;
        assert_eq!(status, 200, "logging {user} in at {base}: {answer}");
        Session::from_login(base, &answer)
    }

    /// A client-API call (`path` after `/_matrix/client/v3`) with this session's token.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("{}{V3}{path}", self.base);
        request(&self.http, method, &url, Some(&self.token), body).await
    }

    /// `GET` a client-API path.
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST` a client-API path.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PUT` a client-API path.
    pub(crate) async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Creates a room with `body` as the `/createRoom` request; answers its id.
    pub(crate) async fn create_room(&self, body: &Value) -> String {
        let (status, answer) = self.post("/createRoom", body).await;
        assert_eq!(status, 200, "{} creating a room: {answer}", self.user_id);
        answer["room_id"].as_str().expect("a room id").to_owned()
    }

    /// Joins a room by id or alias (`via` servers for a room this server is not in); answers
    /// the room id.
    pub(crate) async fn join(&self, room: &str, via: &[&str]) -> String {
        let mut path = format!("/join/{}", encode(room));
        for (i, server) in via.iter().enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str("server_name=");
            path.push_str(&encode(server));
        }
        let (status, answer) = self.post(&path, &json!({})).await;
        assert_eq!(status, 200, "{} joining {room}: {answer}", self.user_id);
        answer["room_id"].as_str().expect("a room id").to_owned()
    }

    /// Sends an `m.room.message` of `msgtype` `m.text`; answers the event id.
    pub(crate) async fn send_text(&self, room: &str, text: &str) -> String {
        let txn = crate::unique("txn");
        let path = format!("/rooms/{}/send/m.room.message/{txn}", encode(room));
        let (status, answer) = self.put(&path, &json!({"msgtype": "m.text", "body": text})).await;
        assert_eq!(status, 200, "{} sending to {room}: {answer}", self.user_id);
        answer["event_id"].as_str().expect("an event id").to_owned()
    }

    /// Syncs (from the start, then incrementally) until `found` picks something out of a sync
    /// answer, for at most `within`; answers what it picked. Panics, with the last answer, when
    /// time runs out.
    pub(crate) async fn sync_until<T>(
        &self,
        within: Duration,
        mut found: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        let mut since: Option<String> = None;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let path = match &since {
                Some(token) => format!("/sync?timeout=1000&since={}", encode(token)),
                None => "/sync?timeout=0".to_owned(),
            };
            let (status, answer) = self.get(&path).await;
            assert_eq!(status, 200, "{} syncing: {answer}", self.user_id);
            if let Some(value) = found(&answer) {
                return value;
            }
            since = answer["next_batch"].as_str().map(str::to_owned);
            last = answer;
        }
        panic!("{}: not seen within {within:?}; last sync: {last}", self.user_id)
    }

    /// Waits (by [`Session::sync_until`]) for an event in the joined room's timeline that
    /// `matches`; answers the event.
    pub(crate) async fn wait_for_event(
        &self,
        room: &str,
        within: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        self.sync_until(within, |answer| {
            answer["rooms"]["join"][room]["timeline"]["events"]
                .as_array()?
                .iter()
                .find(|event| matches(event))
                .cloned()
        })
        .await
    }

    /// Waits for an invite to `room`, or to any room when `room` is `None`; answers its id.
    pub(crate) async fn wait_for_invite(&self, room: Option<&str>, within: Duration) -> String {
        self.sync_until(within, |answer| {
            let invites = answer["rooms"]["invite"].as_object()?;
            invites.keys().find(|id| room.is_none_or(|wanted| wanted == id.as_str())).cloned()
        })
        .await
    }
}

/// Percent-encodes a path segment or query value (room ids and aliases hold `!`, `#`, `:`).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[test]
fn encode_escapes_what_matrix_ids_hold() {
    assert_eq!(encode("!room:127.0.0.1:8448"), "%21room%3A127.0.0.1%3A8448");
    assert_eq!(encode("#a b"), "%23a%20b");
    assert_eq!(encode("plain-._~"), "plain-._~");
}
