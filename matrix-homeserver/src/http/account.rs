//! Accounts: register (with the user-interactive auth flow), availability, login, logout,
//! whoami.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::account::{get_username_availability, register, whoami};
use ruma::api::client::session::{get_login_types, login, logout, logout_all};
use ruma::api::client::uiaa::{AuthData, UserIdentifier};
use serde_json::json;

use super::{ApiResult, AppserviceToken, Auth, ClientAddress, Ruma, RumaResponse};
use crate::config::RegistrationMode;
use crate::error::ApiError;
use crate::services::accounts::DeviceRequest;
use crate::services::rate_limit::Action;

type AppState = State<Arc<crate::State>>;

/// The 401 that starts (or continues) the user-interactive auth of a registration.
fn registration_flows(stage: &str) -> Result<ApiError, ApiError> {
    let mut session = [0u8; 16];
    getrandom::fill(&mut session).map_err(|_| ApiError::unknown("no randomness available"))?;
    Ok(ApiError::auth_required(json!({
        "flows": [{"stages": [stage]}],
        "params": {},
        "session": matrix_core::b64::encode_url_safe(session),
    })))
}

/// The 401 of a failed stage: the flows again, with the errcode and the client's session, so
/// that the client can retry the stage (the spec's user-interactive authentication).
pub(super) fn stage_failed(stage: &str, session: Option<&str>, error: &str) -> ApiError {
    let mut body = json!({
        "flows": [{"stages": [stage]}],
        "params": {},
        "completed": [],
        "errcode": "M_FORBIDDEN",
        "error": error,
    });
    if let Some(session) = session {
        body["session"] = json!(session);
    }
    ApiError::auth_required(body)
}

/// Whether `given` is one of `tokens`, in time that depends on neither: both sides are hashed
/// first (so the length of a token is not compared), and every token is compared in full.
fn token_matches(tokens: &[String], given: &str) -> bool {
    use sha2::{Digest, Sha256};
    let given = Sha256::digest(given.as_bytes());
    tokens.iter().fold(false, |found, token| {
        let token = Sha256::digest(token.as_bytes());
        let diff = token.iter().zip(given.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        found | (diff == 0)
    })
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`: whether a token
/// would be taken now. Each question counts as a try against the same per-address limit as
/// registering with a token (a guess here costs what a guess there does); 403 when
/// registration is not by token.
pub(super) async fn registration_token_validity(
    State(state): AppState,
    ClientAddress(address): ClientAddress,
    super::Query(query): super::Query<TokenQuery>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let token = query.token.ok_or_else(|| ApiError::missing_param("`token` is required"))?;
    let registration = &state.config.registration;
    if registration.mode != RegistrationMode::Token {
        return Err(ApiError::forbidden("registration is not by token on this server"));
    }
    state.limiter.check(Action::RegistrationToken, &address)?;
    let valid = token_matches(&registration.tokens, &token)
        || crate::services::admin::tokens::is_valid(&state, &token).await?;
    Ok(axum::Json(json!({"valid": valid})))
}

/// Refuses a password longer than the server hashes (hashing a long one only costs us).
pub(super) fn check_password_length(state: &crate::State, password: &str) -> Result<(), ApiError> {
    let max = state.config.limits.max_password_bytes;
    if password.len() > max {
        return Err(ApiError::invalid_param(format!("the password is over {max} bytes")));
    }
    Ok(())
}

/// Refuses a localpart an application service holds exclusively (`except` the one asking).
fn check_not_exclusive(
    state: &crate::State,
    localpart: &str,
    except: Option<&str>,
) -> Result<(), ApiError> {
    let user_id = state.accounts.local_user_id(localpart)?;
    if state.appservices.user_is_exclusive_to_other(user_id.as_str(), except) {
        return Err(ApiError::exclusive("This user ID is reserved by an application service."));
    }
    Ok(())
}

/// `m.login.application_service` registration: a user of the service's namespace, with no
/// password, whatever the registration mode.
async fn register_for_service(
    state: &crate::State,
    service: Result<Arc<crate::services::appservice::Appservice>, ApiError>,
    request: register::v3::Request,
) -> ApiResult<register::v3::Response> {
    let service = service?;
    let localpart = request
        .username
        .as_deref()
        .ok_or_else(|| ApiError::missing_param("an application service names the username"))?;
    let user_id = state.accounts.local_user_id(localpart)?;
    if !service.is_interested_in_user(user_id.as_str()) {
        return Err(ApiError::exclusive("Invalid user localpart for this application service."));
    }
    check_not_exclusive(state, localpart, Some(service.id()))?;
    let device = (!request.inhibit_login).then(|| DeviceRequest {
        device_id: request.device_id.clone(),
        display_name: request.initial_device_display_name.clone(),
    });
    let (user_id, session) =
        state.accounts.create_user(Some(localpart), None, false, device).await?;
    let mut response = register::v3::Response::new(user_id);
    if let Some(session) = session {
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
    }
    Ok(RumaResponse(response))
}

pub(super) async fn register(
    State(state): AppState,
    ClientAddress(address): ClientAddress,
    AppserviceToken(service): AppserviceToken,
    Ruma(request): Ruma<register::v3::Request>,
) -> ApiResult<register::v3::Response> {
    if request.kind == register::RegistrationKind::Guest {
        return Err(ApiError::guest_access_forbidden());
    }
    if request.login_type == Some(register::LoginType::ApplicationService) {
        return register_for_service(&state, service, request).await;
    }
    if let Some(localpart) = request.username.as_deref() {
        check_not_exclusive(&state, localpart, None)?;
    }
    let registration = &state.config.registration;
    let stage = match registration.mode {
        RegistrationMode::Open => "m.login.dummy",
        RegistrationMode::Token => "m.login.registration_token",
        _ => return Err(ApiError::forbidden("registration is closed on this server")),
    };
    // A token the administrators made (not one of the config's), whose use is reserved
    // before the account is made and counted after.
    let mut stored_token = None;
    match (&request.auth, registration.mode) {
        (None, _) => return Err(registration_flows(stage)?),
        (Some(AuthData::Dummy(_)), RegistrationMode::Open) => {}
        (Some(AuthData::RegistrationToken(given)), RegistrationMode::Token) => {
            // Counted before the token is looked at: every guess costs a try.
            state.limiter.check(Action::RegistrationToken, &address)?;
            let listed = token_matches(&registration.tokens, &given.token);
            if !listed && crate::services::admin::tokens::is_valid(&state, &given.token).await? {
                stored_token = Some((given.token.clone(), given.session.clone()));
            } else if !listed {
                return Err(stage_failed(
                    stage,
                    given.session.as_deref(),
                    "the registration token is not valid",
                ));
            }
        }
        (Some(_), _) => return Err(registration_flows(stage)?),
    }
    if let Some(password) = &request.password {
        check_password_length(&state, password)?;
    }
    state.limiter.check(Action::Registration, &address)?;
    let device = (!request.inhibit_login).then(|| DeviceRequest {
        device_id: request.device_id.clone(),
        display_name: request.initial_device_display_name.clone(),
    });
    if let Some((token, session)) = &stored_token
        && !crate::services::admin::tokens::reserve(&state, token).await?
    {
        return Err(stage_failed(stage, session.as_deref(), "the registration token is not valid"));
    }
    let created = state
        .accounts
        .create_user(request.username.as_deref(), request.password.clone(), false, device)
        .await;
    if let Some((token, _)) = &stored_token {
        crate::services::admin::tokens::finish(&state, token, created.is_ok()).await?;
    }
    let (user_id, session) = created?;
    let mut response = register::v3::Response::new(user_id);
    if let Some(session) = session {
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
    }
    Ok(RumaResponse(response))
}

pub(super) async fn available(
    State(state): AppState,
    ClientAddress(address): ClientAddress,
    Ruma(request): Ruma<get_username_availability::v3::Request>,
) -> ApiResult<get_username_availability::v3::Response> {
    // It tells whether an account exists: enumeration is rate limited.
    state.limiter.check(Action::Lookup, &address)?;
    check_not_exclusive(&state, &request.username, None)?;
    if state.accounts.available(&request.username).await? {
        Ok(RumaResponse(get_username_availability::v3::Response::new(true)))
    } else {
        Err(ApiError::user_in_use())
    }
}

pub(super) async fn login_types(
    State(state): AppState,
    Ruma(_): Ruma<get_login_types::v3::Request>,
) -> ApiResult<get_login_types::v3::Response> {
    use get_login_types::v3::{ApplicationServiceLoginType, LoginType, PasswordLoginType};
    let mut types = vec![LoginType::Password(PasswordLoginType::new())];
    if !state.appservices.is_empty() {
        types.push(LoginType::ApplicationService(ApplicationServiceLoginType::new()));
    }
    Ok(RumaResponse(get_login_types::v3::Response::new(types)))
}

/// `m.login.application_service`: a new device for a user of the service's namespace.
async fn login_for_service(
    state: &crate::State,
    service: Result<Arc<crate::services::appservice::Appservice>, ApiError>,
    user: Option<&UserIdentifier>,
    device: DeviceRequest,
) -> ApiResult<login::v3::Response> {
    let service = service?;
    if service.registration.msc4190 {
        return Err(ApiError::appservice_login_unsupported());
    }
    let name = match user {
        Some(UserIdentifier::Matrix(id)) => id.user.as_str(),
        Some(_) => return Err(ApiError::unknown_login_type()),
        None => return Err(ApiError::bad_json("no user was named")),
    };
    let user_id =
        state.accounts.named_user(name).ok_or_else(|| ApiError::forbidden("Invalid username"))?;
    if !service.owns_user(&user_id) {
        return Err(ApiError::with_code(403, "M_EXCLUSIVE", "Invalid access_token"));
    }
    let session = state.accounts.login_trusted(&user_id, device).await?;
    Ok(RumaResponse(login::v3::Response::new(
        session.user_id,
        session.access_token,
        session.device_id,
    )))
}

pub(super) async fn login(
    State(state): AppState,
    ClientAddress(address): ClientAddress,
    AppserviceToken(service): AppserviceToken,
    Ruma(request): Ruma<login::v3::Request>,
) -> ApiResult<login::v3::Response> {
    if let login::v3::LoginInfo::ApplicationService(info) = &request.login_info {
        let device = DeviceRequest {
            device_id: request.device_id.clone(),
            display_name: request.initial_device_display_name.clone(),
        };
        return login_for_service(&state, service, info.identifier.as_ref(), device).await;
    }
    state.limiter.check(Action::Login, &address)?;
    let login::v3::LoginInfo::Password(password) = request.login_info else {
        return Err(ApiError::unknown_login_type());
    };
    let user = match &password.identifier {
        Some(UserIdentifier::Matrix(id)) => id.user.clone(),
        Some(_) => return Err(ApiError::unknown_login_type()),
        None => {
            #[allow(deprecated)]
            let user = password.user.clone();
            user.ok_or_else(|| ApiError::bad_json("no user was named"))?
        }
    };
    check_password_length(&state, &password.password)?;
    // Per account too, whatever the address: guessing spread over many addresses is slowed
    // by the account's bucket, and stopped by its failed-attempts bucket.
    let account = state.accounts.named_user(&user).map_or_else(|| user.clone(), |u| u.to_string());
    state.limiter.check(Action::LoginAccount, &account)?;
    state.limiter.ready(Action::LoginFailed, &account)?;
    let device = DeviceRequest {
        device_id: request.device_id,
        display_name: request.initial_device_display_name,
    };
    let session = match state.accounts.login_password(&user, password.password, device).await {
        Ok(session) => session,
        Err(e) => {
            if e.errcode() == "M_FORBIDDEN" {
                state.limiter.spend(Action::LoginFailed, &account);
            }
            return Err(e);
        }
    };
    Ok(RumaResponse(login::v3::Response::new(
        session.user_id,
        session.access_token,
        session.device_id,
    )))
}

pub(super) async fn logout(
    State(state): AppState,
    auth: Auth,
    Ruma(_): Ruma<logout::v3::Request>,
) -> ApiResult<logout::v3::Response> {
    match &auth.puppet_token {
        Some(hash) => state.accounts.revoke_puppet_token(hash).await?,
        None => state.accounts.logout(&auth.user_id, auth.device()?.as_str()).await?,
    }
    Ok(RumaResponse(logout::v3::Response::new()))
}

pub(super) async fn logout_all(
    State(state): AppState,
    auth: Auth,
    Ruma(_): Ruma<logout_all::v3::Request>,
) -> ApiResult<logout_all::v3::Response> {
    state.accounts.logout_all(&auth.user_id).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}

pub(super) async fn whoami(
    auth: Auth,
    Ruma(_): Ruma<whoami::v3::Request>,
) -> ApiResult<whoami::v3::Response> {
    let mut response = whoami::v3::Response::new(auth.user_id, false);
    response.device_id = auth.device_id;
    Ok(RumaResponse(response))
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn registration_tokens_match_only_in_full() {
        let tokens = vec!["first-token".to_owned(), "second".to_owned()];
        assert!(token_matches(&tokens, "first-token"));
        assert!(token_matches(&tokens, "second"));
        for wrong in ["", "first", "first-token-", "secon", "Second", "second\0"] {
            assert!(!token_matches(&tokens, wrong), "{wrong:?}");
        }
        assert!(!token_matches(&[], "anything"));
    }
}
