//! Media: upload (in one request, or `create` then the content), download and thumbnails
//! (legacy and authenticated; only the authenticated paths fetch other servers' media, and
//! the legacy ones serve no media stored while unauthenticated media is frozen), the
//! upload limit, and URL previews (routes only when they are enabled).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::{Auth, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;
use crate::services::media::thumbnail::{Method, Target};
use crate::services::media::{Access, DEFAULT_UPLOAD_WAIT};
use crate::services::rate_limit::Action;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes(previews: bool) -> Routes {
    let router = Router::new()
        .route("/_matrix/media/v3/upload", route(post(upload)))
        .route("/_matrix/media/v1/create", route(post(create)))
        .route("/_matrix/media/v3/upload/{server}/{id}", route(put(upload_to)))
        .route("/_matrix/media/v3/config", route(get(config)))
        .route("/_matrix/client/v1/media/config", route(get(config)))
        .route("/_matrix/media/v3/download/{server}/{id}", route(get(download)))
        .route("/_matrix/media/v3/download/{server}/{id}/{name}", route(get(download_named)))
        .route("/_matrix/client/v1/media/download/{server}/{id}", route(get(download_authed)))
        .route(
            "/_matrix/client/v1/media/download/{server}/{id}/{name}",
            route(get(download_authed_named)),
        )
        .route("/_matrix/media/v3/thumbnail/{server}/{id}", route(get(thumbnail)))
        .route("/_matrix/client/v1/media/thumbnail/{server}/{id}", route(get(thumbnail_authed)));
    if !previews {
        return router;
    }
    router
        .route("/_matrix/client/v1/media/preview_url", route(get(preview_url)))
        .route("/_matrix/media/v3/preview_url", route(get(preview_url)))
}

#[derive(Debug, Deserialize, Default)]
struct UploadQuery {
    filename: Option<String>,
}

/// The content type, declared length and body of an upload request.
fn upload_parts(request: Request) -> (Option<String>, Option<u64>, Body) {
    let header =
        |name| request.headers().get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
    let content_type = header(http::header::CONTENT_TYPE).map(str::to_owned);
    let declared = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    (content_type, declared, request.into_body())
}

async fn upload(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> JsonResult {
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::MediaUpload)?;
    let (content_type, declared, body) = upload_parts(request);
    let timeout = Duration::from_secs(state.config.http.media_upload_timeout_secs);
    let user = auth.user_id.as_str();
    let id = state
        .media
        .upload(user, None, content_type, query.filename, declared, body, timeout)
        .await?;
    Ok(Json(json!({"content_uri": format!("mxc://{}/{id}", state.rooms.server_name())})))
}

/// The query of `preview_url`.
#[derive(Debug, Deserialize)]
struct PreviewQuery {
    url: Option<String>,
    /// The time the client would like the preview from; the freshest one kept (or a new
    /// one) is answered whatever it is.
    #[serde(default)]
    #[allow(dead_code)]
    ts: Option<i64>,
}

async fn preview_url(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<PreviewQuery>,
) -> JsonResult {
    let url = query.url.ok_or_else(|| ApiError::missing_param("the url parameter is missing"))?;
    let previews = state.url_preview.as_ref().ok_or_else(ApiError::unrecognized)?;
    auth.limit(&state.limiter, Action::UrlPreview)?;
    let store = crate::services::url_preview::ImageStore {
        media: &state.media,
        server_name: state.rooms.server_name().as_str(),
        max_media_bytes: state.config.limits.max_media_bytes,
    };
    Ok(Json(previews.preview(&url, auth.user_id.as_str(), store).await?))
}

/// `POST /_matrix/media/v1/create`.
async fn create(State(state): AppState, auth: Auth) -> JsonResult {
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::MediaUpload)?;
    let (id, expires) = state.media.create(auth.user_id.as_str()).await?;
    Ok(Json(json!({
        "content_uri": format!("mxc://{}/{id}", state.rooms.server_name()),
        "unused_expires_at": expires,
    })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`: the content of a created media id.
async fn upload_to(
    State(state): AppState,
    auth: Auth,
    Params((server, id)): Params<(String, String)>,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> JsonResult {
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::MediaUpload)?;
    if server != state.rooms.server_name().as_str() {
        return Err(ApiError::not_found("media ids are created on their own server"));
    }
    // Checked as a download's would be (a bad id is 404).
    state.media.locate(&server, &id)?;
    let (content_type, declared, body) = upload_parts(request);
    let timeout = Duration::from_secs(state.config.http.media_upload_timeout_secs);
    let user = auth.user_id.as_str();
    state
        .media
        .upload(user, Some(&id), content_type, query.filename, declared, body, timeout)
        .await?;
    Ok(Json(json!({})))
}

async fn config(State(state): AppState, _auth: Auth) -> JsonResult {
    Ok(Json(json!({"m.upload.size": state.config.limits.max_media_bytes})))
}

/// The query of the download endpoints.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct DownloadQuery {
    /// How long to wait for content not uploaded yet.
    timeout_ms: Option<u64>,
    /// `true`: a server administrator downloads quarantined media (Synapse's; authenticated
    /// downloads only).
    admin_unsafely_bypass_quarantine: Option<String>,
}

impl DownloadQuery {
    pub(crate) fn wait(&self) -> Duration {
        self.timeout_ms.map_or(DEFAULT_UPLOAD_WAIT, Duration::from_millis)
    }

    /// The access of an authenticated download by `auth`: [`Access::Administrator`] when it
    /// asks to bypass the quarantine and may (anybody else asking: 400, as Synapse answers).
    async fn authenticated_access(
        &self,
        state: &crate::State,
        auth: &Auth,
    ) -> Result<Access, ApiError> {
        if self.admin_unsafely_bypass_quarantine.as_deref() != Some("true") {
            return Ok(Access::Authenticated);
        }
        if !crate::services::admin::users::requester_is_admin(state, &auth.user_id).await? {
            return Err(ApiError::with_code(
                400,
                "M_UNKNOWN",
                "Must be a server admin to bypass quarantine",
            ));
        }
        tracing::info!(user = %auth.user_id, "an administrator bypasses the media quarantine");
        Ok(Access::Administrator)
    }
}

async fn serve(
    state: &crate::State,
    server: &str,
    id: &str,
    name: Option<&str>,
    access: Access,
    wait: Duration,
) -> Result<Response, ApiError> {
    let location = state.media.locate(server, id)?;
    let client = state.federation.as_ref().map(|f| f.client().as_ref());
    let content = state.media.open(&location, client, access, wait).await?;
    let content_type =
        content.content_type.clone().unwrap_or_else(|| "application/octet-stream".to_owned());
    let name = name.map(str::to_owned).or_else(|| content.upload_name.clone());
    let disposition = match name {
        // Only a plain name goes into the header; anything else is left out.
        Some(name) if name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') => {
            format!("attachment; filename=\"{name}\"")
        }
        _ => "attachment".to_owned(),
    };
    let body = Body::new(content.into_body(bytes::Bytes::new(), bytes::Bytes::new()));
    Ok(media_response(content_type, disposition, body))
}

/// A media answer: the content with its type and disposition, sandboxed.
fn media_response(content_type: String, disposition: String, body: Body) -> Response {
    (
        [
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CONTENT_DISPOSITION, disposition),
            (
                http::header::HeaderName::from_static("content-security-policy"),
                "sandbox; default-src 'none'".to_owned(),
            ),
        ],
        body,
    )
        .into_response()
}

async fn download(
    State(state): AppState,
    Params((server, id)): Params<(String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    serve(&state, &server, &id, None, Access::Legacy, query.wait()).await
}

async fn download_named(
    State(state): AppState,
    Params((server, id, name)): Params<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    serve(&state, &server, &id, Some(&name), Access::Legacy, query.wait()).await
}

async fn download_authed(
    State(state): AppState,
    auth: Auth,
    Params((server, id)): Params<(String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    let access = query.authenticated_access(&state, &auth).await?;
    serve(&state, &server, &id, None, access, query.wait()).await
}

async fn download_authed_named(
    State(state): AppState,
    auth: Auth,
    Params((server, id, name)): Params<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    let access = query.authenticated_access(&state, &auth).await?;
    serve(&state, &server, &id, Some(&name), access, query.wait()).await
}

/// The query of the thumbnail endpoints (client and federation).
#[derive(Debug, Deserialize)]
pub(crate) struct ThumbnailQuery {
    width: u32,
    height: u32,
    method: Option<String>,
    /// Animated thumbnails are not made: a still one answers (as the spec allows).
    #[serde(default)]
    #[allow(dead_code)]
    animated: Option<bool>,
    /// How long to wait for content not uploaded yet.
    timeout_ms: Option<u64>,
}

impl ThumbnailQuery {
    /// The size and method to answer with.
    pub(crate) fn target(&self) -> Result<Target, ApiError> {
        if self.width == 0 || self.height == 0 {
            return Err(ApiError::invalid_param("width and height must be at least 1"));
        }
        let method = match self.method.as_deref() {
            None => Method::Scale,
            Some(text) => Method::parse(text)
                .ok_or_else(|| ApiError::invalid_param("method must be crop or scale"))?,
        };
        Ok(Target::for_request(self.width, self.height, method))
    }

    pub(crate) fn wait(&self) -> Duration {
        self.timeout_ms.map_or(DEFAULT_UPLOAD_WAIT, Duration::from_millis)
    }
}

/// A thumbnail of `server`'s `id`, as a response.
async fn serve_thumbnail(
    state: &crate::State,
    server: &str,
    id: &str,
    query: &ThumbnailQuery,
    access: Access,
) -> Result<Response, ApiError> {
    let target = query.target()?;
    let location = state.media.locate(server, id)?;
    let client = state.federation.as_ref().map(|f| f.client().as_ref());
    let made = state.media.thumbnail(&location, client, access, query.wait(), target).await?;
    let disposition = format!("inline; filename=\"thumbnail.{}\"", extension(made.content_type));
    Ok(media_response(made.content_type.to_owned(), disposition, Body::from(made.bytes)))
}

/// The file extension of a thumbnail's content type.
pub(crate) fn extension(content_type: &str) -> &'static str {
    if content_type == "image/png" { "png" } else { "jpg" }
}

async fn thumbnail(
    State(state): AppState,
    Params((server, id)): Params<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> Result<Response, ApiError> {
    serve_thumbnail(&state, &server, &id, &query, Access::Legacy).await
}

async fn thumbnail_authed(
    State(state): AppState,
    _auth: Auth,
    Params((server, id)): Params<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> Result<Response, ApiError> {
    serve_thumbnail(&state, &server, &id, &query, Access::Authenticated).await
}
