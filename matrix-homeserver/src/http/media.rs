//! Media: upload (the legacy path clients still use), download and thumbnails (legacy and
//! authenticated; only the authenticated paths fetch other servers' media), the upload
//! limit, and URL previews (routes only when they are enabled).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;

use super::{Auth, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;
use crate::services::media::thumbnail::{Method, Target};
use crate::services::rate_limit::Action;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes(previews: bool) -> Routes {
    let router = Router::new()
        .route("/_matrix/media/v3/upload", route(post(upload)))
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

async fn upload(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> JsonResult {
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.limiter.check(Action::MediaUpload, auth.user_id.as_str())?;
    let limit = state.config.limits.max_media_bytes;
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    state.media.check_quota(auth.user_id.as_str(), declared.unwrap_or(0)).await?;
    // Read as it comes and written straight to storage: memory holds one frame at a time,
    // and the whole body must arrive before the deadline.
    let timeout = std::time::Duration::from_secs(state.config.http.media_upload_timeout_secs);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut upload = state.media.begin().await?;
    let mut body = request.into_body();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ApiError::body_timeout()),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ApiError::bad_json("the upload could not be read")),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if upload.size().saturating_add(data.len() as u64) > limit as u64 {
                return Err(ApiError::too_large(limit));
            }
            upload.write(&data).await?;
        }
    }
    let id = upload.finish(auth.user_id.as_str(), content_type, query.filename).await?;
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
    state.limiter.check(Action::UrlPreview, auth.user_id.as_str())?;
    let store = crate::services::url_preview::ImageStore {
        media: &state.media,
        server_name: state.rooms.server_name().as_str(),
        max_media_bytes: state.config.limits.max_media_bytes,
    };
    Ok(Json(previews.preview(&url, auth.user_id.as_str(), store).await?))
}

async fn config(State(state): AppState, _auth: Auth) -> JsonResult {
    Ok(Json(json!({"m.upload.size": state.config.limits.max_media_bytes})))
}

/// `media_id` of `server`: ours, or (when `fetch`) another server's, fetched once over
/// federation and kept.
async fn content(
    state: &crate::State,
    server: &str,
    id: &str,
    fetch: bool,
) -> Result<crate::services::media::File, ApiError> {
    let location = state.media.locate(server, id)?;
    let client = state.federation.as_ref().map(|f| f.client().as_ref());
    state.media.content(&location, client, fetch, state.config.limits.max_media_bytes).await
}

async fn serve(
    state: &crate::State,
    server: &str,
    id: &str,
    name: Option<&str>,
    fetch: bool,
) -> Result<Response, ApiError> {
    let file = content(state, server, id, fetch).await?;
    let content_type = file.content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    let name = name.map(str::to_owned).or(file.upload_name);
    let disposition = match name {
        // Only a plain name goes into the header; anything else is left out.
        Some(name) if name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') => {
            format!("attachment; filename=\"{name}\"")
        }
        _ => "attachment".to_owned(),
    };
    Ok(media_response(content_type, disposition, file.bytes))
}

/// A media answer: the content with its type and disposition, sandboxed.
fn media_response(content_type: String, disposition: String, bytes: bytes::Bytes) -> Response {
    (
        [
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CONTENT_DISPOSITION, disposition),
            (
                http::header::HeaderName::from_static("content-security-policy"),
                "sandbox; default-src 'none'".to_owned(),
            ),
        ],
        Body::from(bytes),
    )
        .into_response()
}

// The legacy paths serve our media and what was fetched before; only the authenticated
// paths fetch from other servers (as the spec asks since v1.11).

async fn download(
    State(state): AppState,
    Params((server, id)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    serve(&state, &server, &id, None, false).await
}

async fn download_named(
    State(state): AppState,
    Params((server, id, name)): Params<(String, String, String)>,
) -> Result<Response, ApiError> {
    serve(&state, &server, &id, Some(&name), false).await
}

async fn download_authed(
    State(state): AppState,
    _auth: Auth,
    Params((server, id)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    serve(&state, &server, &id, None, true).await
}

async fn download_authed_named(
    State(state): AppState,
    _auth: Auth,
    Params((server, id, name)): Params<(String, String, String)>,
) -> Result<Response, ApiError> {
    serve(&state, &server, &id, Some(&name), true).await
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
}

/// A thumbnail of `server`'s `id`, as a response.
async fn serve_thumbnail(
    state: &crate::State,
    server: &str,
    id: &str,
    query: &ThumbnailQuery,
    fetch: bool,
) -> Result<Response, ApiError> {
    let target = query.target()?;
    let location = state.media.locate(server, id)?;
    let client = state.federation.as_ref().map(|f| f.client().as_ref());
    let limit = state.config.limits.max_media_bytes;
    let made = state.media.thumbnail(&location, client, fetch, limit, target).await?;
    let disposition = format!("inline; filename=\"thumbnail.{}\"", extension(made.content_type));
    Ok(media_response(made.content_type.to_owned(), disposition, made.bytes.into()))
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
    serve_thumbnail(&state, &server, &id, &query, false).await
}

async fn thumbnail_authed(
    State(state): AppState,
    _auth: Auth,
    Params((server, id)): Params<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> Result<Response, ApiError> {
    serve_thumbnail(&state, &server, &id, &query, true).await
}
