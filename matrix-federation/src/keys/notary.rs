//! Our notary endpoint, `/_matrix/key/v2/query`: what is asked, and the signed answer.

use matrix_core::json::Object;
use matrix_core::signing::sign_json;
use matrix_core::{SigningKey, Value};

use super::server::KeysError;

/// Servers answered at most in one query.
pub const MAX_QUERY_SERVERS: usize = 100;

/// What a `POST /_matrix/key/v2/query` body asks: each server with the latest
/// `minimum_valid_until_ts` of its criteria (`now_ms` when none gives one). Key ids are not
/// kept: a notary answers with every key of the server.
pub fn parse_key_query(body: &Object, now_ms: i64) -> Result<Vec<(String, i64)>, KeysError> {
    let servers =
        body.get_object("server_keys").ok_or(KeysError::Malformed("no `server_keys` object"))?;
    if servers.len() > MAX_QUERY_SERVERS {
        return Err(KeysError::TooMany);
    }
    let mut asked = Vec::with_capacity(servers.len());
    for (server, criteria) in servers {
        let criteria =
            criteria.as_object().ok_or(KeysError::Malformed("criteria not an object"))?;
        let minimum = criteria
            .iter()
            .filter_map(|(_, c)| c.as_object()?.get("minimum_valid_until_ts")?.as_i64())
            .max()
            .unwrap_or(now_ms);
        asked.push((server.to_owned(), minimum));
    }
    Ok(asked)
}

/// The answer of our notary endpoint: each server's own verified response, signed by us as
/// well (`our_server` with each of `our_keys`), as `{"server_keys": [...]}`.
pub fn notary_response(
    responses: Vec<Object>,
    our_server: &str,
    our_keys: &[&SigningKey],
) -> Object {
    let signed: Vec<Value> = responses
        .into_iter()
        .map(|mut response| {
            for key in our_keys {
                sign_json(&mut response, our_server, key);
            }
            Value::Object(response)
        })
        .collect();
    let mut body = Object::new();
    body.insert("server_keys", signed);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::server::{server_keys_response, verify_server_keys};
    use matrix_core::signing::{KeyRing, verify_json};

    fn parse(text: &str) -> Object {
        matrix_core::json::parse_strict(text.as_bytes())
            .expect("json")
            .as_object()
            .expect("object")
            .clone()
    }

    #[test]
    fn queries_parse_with_their_minimum_validity() {
        let body = parse(
            r#"{"server_keys":{"a.org":{"ed25519:x":{"minimum_valid_until_ts":5},"ed25519:y":{"minimum_valid_until_ts":9}},"b.org":{}}}"#,
        );
        assert_eq!(
            parse_key_query(&body, 100),
            Ok(vec![("a.org".to_owned(), 9), ("b.org".to_owned(), 100)])
        );
        assert!(parse_key_query(&parse(r#"{}"#), 0).is_err());
        assert!(parse_key_query(&parse(r#"{"server_keys":{"a.org":1}}"#), 0).is_err());
        let mut many = Object::new();
        for i in 0..=MAX_QUERY_SERVERS {
            many.object_entry("server_keys").insert(format!("s{i}.org"), Object::new());
        }
        assert_eq!(parse_key_query(&many, 0), Err(KeysError::TooMany));
    }

    #[test]
    fn answers_carry_both_signatures() {
        let theirs = SigningKey::from_seed("t", &[1; 32]);
        let ours = SigningKey::from_seed("o", &[2; 32]);
        let response = server_keys_response("them.org", &[&theirs], &[], 10);
        let answer = notary_response(vec![response], "us.org", &[&ours]);
        let entries = answer.get("server_keys").and_then(Value::as_array).expect("list");
        let entry = entries[0].as_object().expect("object");
        verify_server_keys(entry, "them.org").expect("still self-signed");
        let mut ring = KeyRing::new();
        ring.insert("us.org", ours.key_id(), ours.public_key());
        verify_json(entry, "us.org", &ring).expect("signed by us");
    }
}
