//! `/_matrix/key/v2/*`: our keys, and the notary (other servers' keys, signed by us too). No
//! authentication: keys are public, and signed.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::{federation, json_response};
use crate::error::ApiError;
use crate::http::{Params, RawBody};

type AppState = State<Arc<crate::State>>;

/// `GET /_matrix/key/v2/server`.
pub(super) async fn server(State(state): AppState) -> Result<Response, ApiError> {
    Ok(json_response(&federation(&state)?.our_keys()))
}

/// `POST /_matrix/key/v2/query`.
pub(super) async fn query(
    State(state): AppState,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let federation = federation(&state)?;
    let body = match matrix_core::json::parse_lenient(&body) {
        Ok(matrix_core::Value::Object(body)) => body,
        Ok(_) => return Err(ApiError::bad_json("the body must be an object")),
        Err(_) => return Err(ApiError::not_json()),
    };
    let servers = matrix_federation::keys::parse_key_query(&body, matrix_federation::now_ms())
        .map_err(|e| ApiError::bad_json(e.to_string()))?;
    Ok(json_response(&federation.notary(&servers).await))
}

/// `GET /_matrix/key/v2/query/{serverName}`.
pub(super) async fn query_one(
    State(state): AppState,
    Params(server): Params<String>,
) -> Result<Response, ApiError> {
    let federation = federation(&state)?;
    if ruma::ServerName::parse(&server).is_err() {
        return Err(ApiError::invalid_param("not a server name"));
    }
    let servers = [(server, matrix_federation::now_ms())];
    Ok(json_response(&federation.notary(&servers).await))
}
