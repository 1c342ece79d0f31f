//! `/_matrix/federation/v1/media/*`: our media (never what we fetched from others) for other
//! servers, as the spec's `multipart/mixed` answer: an empty JSON object, then the content
//! (streamed from its file).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use matrix_federation::media::{MediaContent, encode, encode_around, pick_boundary};

use super::Peer;
use crate::error::ApiError;
use crate::http::media::{DownloadQuery, ThumbnailQuery, extension};
use crate::http::{Params, Query};
use crate::services::media::Access;

type AppState = State<Arc<crate::State>>;

/// `GET /_matrix/federation/v1/media/download/{mediaId}`.
pub(super) async fn download(
    State(state): AppState,
    Params(id): Params<String>,
    Query(query): Query<DownloadQuery>,
    _peer: Peer,
) -> Result<Response, ApiError> {
    let server_name = state.rooms.server_name().as_str().to_owned();
    let location = state.media.locate(&server_name, &id)?;
    let content = state.media.open(&location, None, Access::Federation, query.wait()).await?;
    let disposition = match content.upload_name.as_deref().filter(|n| plain_name(n)) {
        Some(name) => format!("attachment; filename=\"{name}\""),
        None => "attachment".to_owned(),
    };
    let content_type =
        content.content_type.clone().unwrap_or_else(|| "application/octet-stream".to_owned());
    // The content is streamed, so it cannot be searched for the boundary first: a random one.
    let boundary = random_hex()?;
    let (header, head, tail) = encode_around(Some(&content_type), Some(&disposition), &boundary);
    let body = Body::new(content.into_body(head.into(), tail.into()));
    Ok(([(http::header::CONTENT_TYPE, header)], body).into_response())
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
    let made =
        state.media.thumbnail(&location, None, Access::Federation, query.wait(), target).await?;
    let content = MediaContent {
        content_type: Some(made.content_type.to_owned()),
        content_disposition: Some(format!(
            "inline; filename=\"thumbnail.{}\"",
            extension(made.content_type)
        )),
        bytes: made.bytes.into(),
    };
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|_| ApiError::unknown("no randomness available"))?;
    let boundary = pick_boundary(&random, &content.bytes);
    let (content_type, body) = encode(&content, &boundary);
    Ok(([(http::header::CONTENT_TYPE, content_type)], body).into_response())
}

/// 16 random bytes in hex.
fn random_hex() -> Result<String, ApiError> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|_| ApiError::unknown("no randomness available"))?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether a file name may go into a header as it is.
fn plain_name(name: &str) -> bool {
    name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}
