//! The one integration-test binary of matrix-homeserver: every endpoint over real HTTP through
//! `TestHomeserver`, with its failure cases.

mod account;
mod discovery;
mod rooms;
mod spec;
mod sync;

use serde_json::Value;

/// A tiny client for the tests: JSON in, status and JSON out.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    pub(crate) token: Option<String>,
}

impl Client {
    pub(crate) fn new(server: &matrix_homeserver::testing::TestHomeserver) -> Self {
        Client { http: reqwest::Client::new(), base: server.base_url().to_owned(), token: None }
    }

    pub(crate) fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("a body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// A raw body, for malformed requests.
    pub(crate) async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let json =
            serde_json::from_slice(&response.bytes().await.expect("a body")).unwrap_or(Value::Null);
        (status, json)
    }
}

/// The errcode of an error body.
pub(crate) fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or("(none)")
}
