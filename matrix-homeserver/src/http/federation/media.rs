//! `/_matrix/federation/v1/media/*`: our media (never what we fetched from others) for other
//! servers, as the spec's `multipart/mixed` answer: an empty JSON object, then the content.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use matrix_federation::media::{MediaContent, encode, pick_boundary};

use super::Peer;
use crate::error::ApiError;
use crate::http::media::{ThumbnailQuery, extension};
use crate::http::{Params, Query};

type AppState = State<Arc<crate::State>>;

/// `GET /_matrix/federation/v1/media/download/{mediaId}`.
pub(super) async fn download(
    State(state): AppState,
    Params(id): Params<String>,
    _peer: Peer,
) -> Result<Response, ApiError> {
    let file = state.media.download(&id).await?;
    let disposition = match file.upload_name.filter(|n| plain_name(n)) {
        Some(name) => format!("attachment; filename=\"{name}\""),
        None => "attachment".to_owned(),
    };
    let content = MediaContent {
        content_type: Some(
            file.content_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
        ),
        content_disposition: Some(disposition),
        bytes: file.bytes,
    };
    multipart(&content)
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`.
pub(super) async fn thumbnail(
    State(state): AppState,
    Params(id): Params<String>,
    Query(query): Query<ThumbnailQuery>,
    _peer: Peer,
) -> Result<Response, ApiError> {
    let target = query.target()?;
    let server_name = state.rooms.server_name().as_str().to_owned();
    let location = state.media.locate(&server_name, &id)?;
    let limit = state.config.limits.max_media_bytes;
    let made = state.media.thumbnail(&location, None, false, limit, target).await?;
    let content = MediaContent {
        content_type: Some(made.content_type.to_owned()),
        content_disposition: Some(format!(
            "inline; filename=\"thumbnail.{}\"",
            extension(made.content_type)
        )),
        bytes: made.bytes.into(),
    };
    multipart(&content)
}

/// Whether a file name may go into a header as it is.
fn plain_name(name: &str) -> bool {
    name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// The two-part answer carrying `content`.
fn multipart(content: &MediaContent) -> Result<Response, ApiError> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|_| ApiError::unknown("no randomness available"))?;
    let boundary = pick_boundary(&random, &content.bytes);
    let (content_type, body) = encode(content, &boundary);
    Ok(([(http::header::CONTENT_TYPE, content_type)], body).into_response())
}
