//! Media of other servers: fetched once over federation
//! (`GET /_matrix/federation/v1/media/download/{mediaId}`), bounded by our upload limit,
//! then kept under its content hash and answered like ours. An answer naming where the
//! content is (a `Location`) is followed with a plain GET, within the same bounds
//! ([`matrix_federation::media::location`]: a few redirects at most, never to the local
//! network).
//!
//! The federation transport reads an answer whole (bounded by the upload limit and a little
//! more), so a fetch holds at most that much in memory once; it is then written to disk
//! through the same hashing sink as an upload.

use matrix_federation::FederationError;
use matrix_federation::client::FederationClient;
use matrix_federation::media::MediaBody;
use matrix_federation::media::location::{self, FollowOptions};
use matrix_storage::ChangeSet;

use super::files::Sink;
use super::{Location, Media};
use crate::error::ApiError;

/// What the answer may carry beyond the content: its headers and JSON part.
const ANSWER_OVERHEAD: usize = 64 << 10;

/// Fetches the media item at `location` from `origin`, keeps it (content, then metadata),
/// and answers its row. Nothing is kept when the answer is not the spec's, or its content is
/// over the upload limit (502 `M_TOO_LARGE`).
pub(super) async fn fetch(
    media: &Media,
    client: &FederationClient,
    origin: &str,
    location: &Location,
) -> Result<matrix_storage::Media, ApiError> {
    let limit = usize::try_from(media.max_bytes).unwrap_or(usize::MAX);
    let answer = client
        .media_download(origin, &location.media_id, limit.saturating_add(ANSWER_OVERHEAD))
        .await
        .map_err(|e| match e {
            FederationError::Status { status: 404, .. } => {
                ApiError::not_found(format!("{origin} has no such media"))
            }
            FederationError::Status { status: 504, .. } => ApiError::with_code(
                504,
                "M_NOT_YET_UPLOADED",
                format!("{origin} has not received the content of this media yet"),
            ),
            other => other.into(),
        })?;
    let content = match answer.content {
        MediaBody::Content(content) => content,
        MediaBody::Location(url) => {
            let Some(fetcher) = &media.url_fetcher else {
                return Err(ApiError::bad_gateway(format!(
                    "{origin} answered with a redirect, which this server does not follow"
                )));
            };
            let options = FollowOptions::default();
            location::follow(fetcher.as_ref(), &url, limit, options).await.map_err(|e| match e {
                FederationError::TooLarge { .. } => too_large(origin, limit),
                FederationError::Status { status: 404, .. } => {
                    ApiError::not_found(format!("the media {origin} pointed to is not there"))
                }
                other => ApiError::bad_gateway(format!("the media {origin} pointed to: {other}")),
            })?
        }
    };
    if content.bytes.len() > limit {
        return Err(too_large(origin, limit));
    }
    let content_type = content.content_type.filter(|t| plain_header(t));
    let upload_name = content.content_disposition.as_deref().and_then(filename_of);
    let mut sink = Sink::new(&media.files).await?;
    sink.write(&content.bytes).await?;
    let (sha256, size) = sink.finish(&media.files).await?;
    let mut row = matrix_storage::Media {
        media_id: location.key.clone(),
        content_type,
        size,
        upload_name,
        uploader: origin.to_owned(),
        created_ts: crate::services::rooms::now_ms(),
        sha256: Some(sha256),
        authenticated: media.authenticated_only,
        quarantined_by: None,
        safe_from_quarantine: false,
    };
    let _turn = media.usage.lock().await;
    media.adopt_content(&mut row).await?;
    let mut changes = ChangeSet::new();
    changes.media.push(row.clone());
    media.storage.apply(changes).await?;
    Ok(row)
}

fn too_large(origin: &str, limit: usize) -> ApiError {
    ApiError::with_code(
        502,
        "M_TOO_LARGE",
        format!("the media of {origin} is over this server's limit of {limit} bytes"),
    )
}

/// Whether `value` may be sent on as a header value: short, printable ASCII.
fn plain_header(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// The `filename` of a `Content-Disposition` value (`inline; filename="cat.png"`), if plain.
fn filename_of(disposition: &str) -> Option<String> {
    disposition.split(';').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("filename") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (plain_header(value) && value.len() <= 200).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_read_from_a_disposition() {
        assert_eq!(filename_of("inline; filename=\"cat.png\"").as_deref(), Some("cat.png"));
        assert_eq!(filename_of("attachment; FileName=a.txt").as_deref(), Some("a.txt"));
        assert_eq!(filename_of("attachment"), None);
        assert_eq!(filename_of("inline; filename=\"\u{7}\""), None);
    }
}
