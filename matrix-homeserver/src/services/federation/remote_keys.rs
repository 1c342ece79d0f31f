//! The keys of other servers' users, for our clients' `/keys/query` and `/keys/claim`: one
//! request per server (`user/keys/query`, `user/keys/claim`), all servers at once, each
//! within [`REMOTE_KEYS_TIMEOUT`]; a server that does not answer in time (or fails) is listed
//! in `failures`. Only what an answer says about users of the server that gave it is kept.

use std::collections::BTreeMap;
use std::time::Duration;

use matrix_core::{Object, Value};
use serde_json::json;
use tokio::task::JoinSet;

use crate::State;

/// How long a client's key query or claim waits for another server.
pub(crate) const REMOTE_KEYS_TIMEOUT: Duration = Duration::from_secs(10);

/// What other servers answered: the answers' maps merged, and the servers that failed.
#[derive(Debug, Default)]
pub(crate) struct RemoteAnswers {
    /// Per top-level key of the answers (`device_keys`, `master_keys`, `one_time_keys`...):
    /// user -> value, only for users of the server that answered.
    pub(crate) sections: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// Server -> why it gave nothing.
    pub(crate) failures: serde_json::Map<String, serde_json::Value>,
}

/// Which request to make.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeysRequest {
    /// `user/keys/query`, with `{user: [device...]}` per server.
    Query,
    /// `user/keys/claim`, with `{user: {device: algorithm}}` per server.
    Claim,
}

/// Sends `request` to each server with its users' part of the client's body, at once, and
/// merges the answers. Without federation, every server is a failure.
pub(crate) async fn ask(
    state: &State,
    request: KeysRequest,
    by_server: BTreeMap<String, Object>,
) -> RemoteAnswers {
    let mut answers = RemoteAnswers::default();
    let Some(federation) = state.federation.as_ref() else {
        for server in by_server.into_keys() {
            answers.failures.insert(server, json!({"error": "federation is off"}));
        }
        return answers;
    };
    let mut tasks = JoinSet::new();
    for (server, users) in by_server {
        let client = federation.client().clone();
        tasks.spawn(async move {
            let call = async {
                match request {
                    KeysRequest::Query => client.user_keys_query(&server, users).await,
                    KeysRequest::Claim => client.user_keys_claim(&server, users).await,
                }
            };
            let answer = tokio::time::timeout(REMOTE_KEYS_TIMEOUT, call).await;
            (server, answer)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((server, answer)) = joined else { continue };
        match answer {
            Ok(Ok(body)) => merge(&mut answers, &server, &body),
            Ok(Err(e)) => {
                answers.failures.insert(server, json!({"error": e.to_string()}));
            }
            Err(_) => {
                answers.failures.insert(server, json!({"error": "timed out"}));
            }
        }
    }
    answers
}

/// Keeps, of each map in `body`, the entries of users of `server`.
fn merge(answers: &mut RemoteAnswers, server: &str, body: &Object) {
    for (section, value) in body.iter() {
        let Value::Object(by_user) = value else { continue };
        for (user, entry) in by_user.iter() {
            if user.split_once(':').is_none_or(|(_, s)| s != server) {
                continue;
            }
            let mut bytes = Vec::new();
            match entry {
                Value::Object(object) => object.write_canonical(&mut bytes),
                _ => continue,
            }
            let Ok(entry) = serde_json::from_slice(&bytes) else { continue };
            answers.sections.entry(section.to_owned()).or_default().insert(user.to_owned(), entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_about_other_servers_users_are_dropped() {
        let body = matrix_core::json::parse_lenient(
            br#"{"device_keys":{"@a:b.test":{"D":{"k":1}},"@x:c.test":{"D":{}}},"failures":3}"#,
        )
        .expect("json");
        let Value::Object(body) = body else { panic!("an object") };
        let mut answers = RemoteAnswers::default();
        merge(&mut answers, "b.test", &body);
        let keys = &answers.sections["device_keys"];
        assert!(keys.contains_key("@a:b.test"));
        assert!(!keys.contains_key("@x:c.test"));
        assert!(!answers.sections.contains_key("failures"));
    }
}
