//! Third-party identifiers (3PIDs: email addresses, phone numbers) of accounts. This server
//! sends no email and no SMS and talks to no identity server, so it validates no identifier:
//! every account lists none, and what would need a validation is refused with the reason, as
//! Synapse refuses it without email or SMS settings:
//!
//! - `GET /account/3pid`: `{"threepids": []}`;
//! - `POST /account/3pid/{email,msisdn}/requestToken`: 400 `M_THREEPID_MEDIUM_NOT_SUPPORTED`;
//! - `POST /register/{email,msisdn}/requestToken`, `/account/password/{email,msisdn}/requestToken`:
//!   403 `M_THREEPID_DENIED` (registration and password resets by email or phone are off);
//! - `POST /account/3pid/add` and the deprecated `POST /account/3pid`: 400
//!   `M_THREEPID_AUTH_FAILED` (no session can have been validated);
//! - `POST /account/3pid/bind`: 403 `M_FORBIDDEN` (no binding at identity servers);
//! - `POST /account/3pid/unbind`, `/account/3pid/delete`: nothing is bound or stored, so they
//!   succeed with `id_server_unbind_result: "no-support"`, as Synapse answers then.
//!
//! Bodies are checked first: a malformed one is 400 `M_BAD_JSON` or `M_NOT_JSON`.

use axum::Json;
use axum::Router;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{Auth, JsonBody, JsonResult, Routes, route};
use crate::error::ApiError;

pub(super) fn routes() -> Routes {
    const A: &str = "/_matrix/client/v3/account";
    const R: &str = "/_matrix/client/v3/register";
    Router::new()
        .route(&format!("{A}/3pid"), route(get(list).post(add_deprecated)))
        .route(&format!("{A}/3pid/add"), route(post(add)))
        .route(&format!("{A}/3pid/bind"), route(post(bind)))
        .route(&format!("{A}/3pid/unbind"), route(post(unbind)))
        .route(&format!("{A}/3pid/delete"), route(post(delete)))
        .route(&format!("{A}/3pid/email/requestToken"), route(post(add_email_token)))
        .route(&format!("{A}/3pid/msisdn/requestToken"), route(post(add_msisdn_token)))
        .route(&format!("{R}/email/requestToken"), route(post(register_email_token)))
        .route(&format!("{R}/msisdn/requestToken"), route(post(register_msisdn_token)))
        .route(&format!("{A}/password/email/requestToken"), route(post(reset_email_token)))
        .route(&format!("{A}/password/msisdn/requestToken"), route(post(reset_msisdn_token)))
}

/// The longest `client_secret` (the spec's grammar: `[0-9a-zA-Z.=_-]`, at most 255).
const MAX_SECRET: usize = 255;

fn check_secret(secret: &str) -> Result<(), ApiError> {
    let valid = !secret.is_empty()
        && secret.len() <= MAX_SECRET
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b".=_-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_param("client_secret must be 1-255 of [0-9a-zA-Z.=_-]"))
    }
}

#[derive(Debug, Deserialize)]
struct EmailToken {
    client_secret: String,
    email: String,
    #[allow(dead_code)]
    send_attempt: u64,
}

#[derive(Debug, Deserialize)]
struct MsisdnToken {
    client_secret: String,
    #[allow(dead_code)]
    country: String,
    #[allow(dead_code)]
    phone_number: String,
    #[allow(dead_code)]
    send_attempt: u64,
}

fn check_email(body: &EmailToken) -> Result<(), ApiError> {
    check_secret(&body.client_secret)?;
    if !body.email.contains('@') || body.email.len() > 320 {
        return Err(ApiError::invalid_param("not an email address"));
    }
    Ok(())
}

async fn list(_auth: Auth) -> JsonResult {
    Ok(Json(json!({"threepids": []})))
}

async fn add_email_token(JsonBody(body): JsonBody<EmailToken>) -> JsonResult {
    check_email(&body)?;
    Err(ApiError::threepid_medium_not_supported(
        "adding an email address is not supported: this server sends no email",
    ))
}

async fn add_msisdn_token(JsonBody(body): JsonBody<MsisdnToken>) -> JsonResult {
    check_secret(&body.client_secret)?;
    Err(ApiError::threepid_medium_not_supported(
        "adding a phone number is not supported: this server sends no SMS",
    ))
}

async fn register_email_token(JsonBody(body): JsonBody<EmailToken>) -> JsonResult {
    check_email(&body)?;
    Err(ApiError::threepid_denied("registration by email is disabled: this server sends no email"))
}

async fn register_msisdn_token(JsonBody(body): JsonBody<MsisdnToken>) -> JsonResult {
    check_secret(&body.client_secret)?;
    Err(ApiError::threepid_denied(
        "registration by phone number is disabled: this server sends no SMS",
    ))
}

async fn reset_email_token(JsonBody(body): JsonBody<EmailToken>) -> JsonResult {
    check_email(&body)?;
    Err(ApiError::threepid_denied(
        "password resets by email are disabled: this server sends no email",
    ))
}

async fn reset_msisdn_token(JsonBody(body): JsonBody<MsisdnToken>) -> JsonResult {
    check_secret(&body.client_secret)?;
    Err(ApiError::threepid_denied(
        "password resets by phone number are disabled: this server sends no SMS",
    ))
}

#[derive(Debug, Deserialize)]
struct AddBody {
    client_secret: String,
    #[allow(dead_code)]
    sid: String,
}

async fn add(_auth: Auth, JsonBody(body): JsonBody<AddBody>) -> JsonResult {
    check_secret(&body.client_secret)?;
    Err(ApiError::threepid_auth_failed(
        "no validated third-party identifier session: this server validates none",
    ))
}

#[derive(Debug, Deserialize)]
struct DeprecatedAddBody {
    three_pid_creds: AddBody,
}

async fn add_deprecated(_auth: Auth, JsonBody(body): JsonBody<DeprecatedAddBody>) -> JsonResult {
    check_secret(&body.three_pid_creds.client_secret)?;
    Err(ApiError::threepid_auth_failed(
        "no validated third-party identifier session: this server validates none",
    ))
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct BindBody {
    client_secret: String,
    id_access_token: String,
    id_server: String,
    sid: String,
}

async fn bind(_auth: Auth, JsonBody(body): JsonBody<BindBody>) -> JsonResult {
    check_secret(&body.client_secret)?;
    Err(ApiError::forbidden("this server binds no identifiers at identity servers"))
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct UnbindBody {
    address: String,
    medium: String,
    id_server: Option<String>,
}

fn check_medium(body: &UnbindBody) -> Result<(), ApiError> {
    match body.medium.as_str() {
        "email" | "msisdn" => Ok(()),
        other => Err(ApiError::invalid_param(format!("unknown medium {other:?}"))),
    }
}

async fn unbind(_auth: Auth, JsonBody(body): JsonBody<UnbindBody>) -> JsonResult {
    check_medium(&body)?;
    Ok(Json(json!({"id_server_unbind_result": "no-support"})))
}

async fn delete(_auth: Auth, JsonBody(body): JsonBody<UnbindBody>) -> JsonResult {
    check_medium(&body)?;
    Ok(Json(json!({"id_server_unbind_result": "no-support"})))
}
