//! Media (Synapse's media admin API, the media of one user, and the users' media
//! statistics): lists, quarantine, protection, deletion, the purge of other servers' media.
//! What is done to the rows and files is [`crate::services::media::manage`]'s.
//!
//! This server keeps no last-access times: `last_access_ts` reads `null`, and what Synapse
//! selects by last access (`before_ts` of deletions and of the remote media purge) is
//! selected by the time the item was stored here.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use matrix_storage::StreamPos;
use ruma::{RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::history::HistoryPages;
use super::{backwards, flag, page, users};
use crate::State;
use crate::error::ApiError;
use crate::services::media::manage::origin_of;

/// Timeline events read at once while a room's media is listed.
const SCAN_BATCH: usize = 200;

/// Timestamps before this are refused as Synapse refuses them (seconds given for
/// milliseconds, "from the year 1970").
const EARLIEST_TS: i64 = 30_000_000_000;

/// The query of `GET`/`DELETE /_synapse/admin/v1/users/{userId}/media`, as strings.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UserMediaParams {
    from: Option<String>,
    limit: Option<String>,
    order_by: Option<String>,
    dir: Option<String>,
}

/// A media item of a user's list.
#[derive(Debug, Serialize)]
pub(crate) struct UserMedia {
    created_ts: i64,
    last_access_ts: Option<i64>,
    media_id: String,
    media_length: u64,
    media_type: String,
    quarantined_by: Option<String>,
    safe_from_quarantine: bool,
    upload_name: Option<String>,
}

/// One page of a user's media.
#[derive(Debug, Serialize)]
pub(crate) struct UserMediaPage {
    media: Vec<UserMedia>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<usize>,
    total: usize,
}

/// What a deletion answers.
#[derive(Debug, Serialize)]
pub(crate) struct Deleted {
    deleted_media: Vec<String>,
    total: usize,
}

impl Deleted {
    fn of(deleted_media: Vec<String>) -> Self {
        let total = deleted_media.len();
        Deleted { deleted_media, total }
    }
}

/// The content type shown for an item stored without one.
const DEFAULT_TYPE: &str = "application/octet-stream";

/// The local user's media as `params` select and order them: the page, and how many there
/// are in all.
async fn select_user_media(
    state: &State,
    user_id: &UserId,
    params: &UserMediaParams,
) -> Result<(Vec<matrix_storage::Media>, usize, usize), ApiError> {
    users::local_user(state, user_id).await?;
    let (from, limit) = page(params.from.as_deref(), params.limit.as_deref())?;
    // Neither given: newest first (Synapse's default); otherwise `dir` defaults to `f`.
    let backwards = match (params.order_by.as_deref(), params.dir.as_deref()) {
        (None, None) => true,
        (_, dir) => backwards(dir)?,
    };
    let key: fn(&matrix_storage::Media, &matrix_storage::Media) -> std::cmp::Ordering =
        match params.order_by.as_deref().unwrap_or("created_ts") {
            "media_id" => |a, b| a.media_id.cmp(&b.media_id),
            "upload_name" => |a, b| a.upload_name.cmp(&b.upload_name),
            "created_ts" => |a, b| a.created_ts.cmp(&b.created_ts),
            // Not kept: equal for every item, so by media id.
            "last_access_ts" => |_, _| std::cmp::Ordering::Equal,
            "media_length" => |a, b| a.size.cmp(&b.size),
            "media_type" => |a, b| {
                let (a, b) = (a.content_type.as_deref(), b.content_type.as_deref());
                a.unwrap_or(DEFAULT_TYPE).cmp(b.unwrap_or(DEFAULT_TYPE))
            },
            "quarantined_by" => |a, b| a.quarantined_by.cmp(&b.quarantined_by),
            "safe_from_quarantine" => |a, b| a.safe_from_quarantine.cmp(&b.safe_from_quarantine),
            other => {
                return Err(ApiError::invalid_param(format!("unknown order_by {other:?}")));
            }
        };
    let mut rows = state.media.rows_where(Some(user_id.as_str()), |_| true).await?;
    // Ties by ascending media id whatever the direction, as Synapse orders them.
    rows.sort_by(|a, b| {
        let primary = if backwards { key(b, a) } else { key(a, b) };
        primary.then_with(|| a.media_id.cmp(&b.media_id))
    });
    let total = rows.len();
    let page: Vec<_> = rows.into_iter().skip(from).take(limit).collect();
    Ok((page, from, total))
}

/// `GET /_synapse/admin/v1/users/{userId}/media`.
pub(crate) async fn user_media(
    state: &State,
    user_id: &UserId,
    params: &UserMediaParams,
) -> Result<UserMediaPage, ApiError> {
    let (rows, from, total) = select_user_media(state, user_id, params).await?;
    let end = from + rows.len();
    let media = rows
        .into_iter()
        .map(|row| UserMedia {
            created_ts: row.created_ts,
            last_access_ts: None,
            media_id: row.media_id,
            media_length: row.size,
            media_type: row.content_type.unwrap_or_else(|| DEFAULT_TYPE.to_owned()),
            quarantined_by: row.quarantined_by,
            safe_from_quarantine: row.safe_from_quarantine,
            upload_name: row.upload_name,
        })
        .collect();
    Ok(UserMediaPage { media, next_token: (end < total).then_some(end), total })
}

/// `DELETE /_synapse/admin/v1/users/{userId}/media`: the page the same parameters list.
pub(crate) async fn delete_user_media(
    state: &State,
    user_id: &UserId,
    params: &UserMediaParams,
) -> Result<Deleted, ApiError> {
    let (rows, _, _) = select_user_media(state, user_id, params).await?;
    let keys: Vec<String> = rows.into_iter().map(|row| row.media_id).collect();
    Ok(Deleted::of(state.media.delete_rows(&keys).await?))
}

/// The `mxc://` URIs of a room's events.
#[derive(Debug, Default, Serialize)]
pub(crate) struct RoomMedia {
    local: Vec<String>,
    remote: Vec<String>,
}

/// The media the events of a room (its timeline and its backfilled history, redacted
/// events too) refer to by `content.url` or `content.info.thumbnail_url`, as
/// `(server, media_id)`, sorted. Encrypted events show none, as in Synapse.
async fn media_in_room(
    state: &State,
    room_id: &RoomId,
) -> Result<BTreeSet<(String, String)>, ApiError> {
    let storage = state.rooms.storage();
    if storage.room(room_id.as_str()).await?.is_none() {
        return Err(ApiError::not_found("Room not found"));
    }
    let mut found = BTreeSet::new();
    let mut pages = HistoryPages::before(room_id.as_str(), StreamPos(u64::MAX), SCAN_BATCH);
    while let Some(ids) = pages.next(storage.as_ref()).await? {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        collect_mxcs(state, &ids, &mut found).await?;
    }
    Ok(found)
}

async fn collect_mxcs(
    state: &State,
    event_ids: &[&str],
    found: &mut BTreeSet<(String, String)>,
) -> Result<(), ApiError> {
    for event in state.rooms.storage().events(event_ids).await? {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&event.json) else {
            continue;
        };
        let content = &json["content"];
        for uri in [&content["url"], &content["info"]["thumbnail_url"]] {
            if let Some(parsed) = uri.as_str().and_then(parse_mxc) {
                found.insert(parsed);
            }
        }
    }
    Ok(())
}

/// `(server, media_id)` of an `mxc://server/media_id` URI.
fn parse_mxc(uri: &str) -> Option<(String, String)> {
    let (server, media_id) = uri.strip_prefix("mxc://")?.split_once('/')?;
    let plain = !server.is_empty() && !media_id.is_empty() && !media_id.contains('/');
    plain.then(|| (server.to_owned(), media_id.to_owned()))
}

/// `GET /_synapse/admin/v1/room/{roomId}/media`.
pub(crate) async fn room_media(state: &State, room_id: &RoomId) -> Result<RoomMedia, ApiError> {
    let ours = state.media.server_name();
    let mut listed = RoomMedia::default();
    for (server, media_id) in media_in_room(state, room_id).await? {
        let uri = format!("mxc://{server}/{media_id}");
        if server == ours { listed.local.push(uri) } else { listed.remote.push(uri) }
    }
    Ok(listed)
}

/// The storage key of `server`'s `media_id` (not checked: only looked up).
fn key_of(ours: &str, server: &str, media_id: &str) -> String {
    if server == ours { media_id.to_owned() } else { format!("{server}/{media_id}") }
}

/// `POST /_synapse/admin/v1/room/{roomId}/media/quarantine`: the media of the room's events
/// that this server holds (ours, and other servers' fetched here).
pub(crate) async fn quarantine_room(
    state: &State,
    admin: &UserId,
    room_id: &RoomId,
) -> Result<usize, ApiError> {
    let ours = state.media.server_name();
    let keys: Vec<String> = media_in_room(state, room_id)
        .await?
        .into_iter()
        .map(|(server, media_id)| key_of(ours, &server, &media_id))
        .collect();
    state.media.set_quarantine(&keys, Some(admin.as_str())).await
}

/// `POST /_synapse/admin/v1/user/{userId}/media/quarantine`: what a local user uploaded.
pub(crate) async fn quarantine_user(
    state: &State,
    admin: &UserId,
    user_id: &UserId,
) -> Result<usize, ApiError> {
    users::local_user(state, user_id).await?;
    let rows = state.media.rows_where(Some(user_id.as_str()), |_| true).await?;
    let keys: Vec<String> = rows.into_iter().map(|row| row.media_id).collect();
    state.media.set_quarantine(&keys, Some(admin.as_str())).await
}

/// A media row this server holds, or 404.
async fn held(
    state: &State,
    server: &str,
    media_id: &str,
) -> Result<matrix_storage::Media, ApiError> {
    let location = state.media.locate(server, media_id)?;
    state.media.row(&location).await?.ok_or_else(|| ApiError::not_found("Unknown media"))
}

/// `POST /_synapse/admin/v1/media/quarantine/{server}/{mediaId}` (`by`: the administrator)
/// and `.../unquarantine/...` (`None`).
pub(crate) async fn quarantine_one(
    state: &State,
    by: Option<&UserId>,
    server: &str,
    media_id: &str,
) -> Result<(), ApiError> {
    let row = held(state, server, media_id).await?;
    state.media.set_quarantine(&[row.media_id], by.map(UserId::as_str)).await?;
    Ok(())
}

/// `POST /_synapse/admin/v1/media/protect/{mediaId}` and `.../unprotect/...`: our media.
pub(crate) async fn protect(
    state: &State,
    media_id: &str,
    protected: bool,
) -> Result<(), ApiError> {
    let location = state.media.locate(state.media.server_name(), media_id)?;
    state.media.set_protected(&location, protected).await
}

/// Quarantine changes one page of `quarantine_changes` holds (Synapse's).
const CHANGES_PAGE: usize = 100;

/// A quarantine change as the admin API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ShownChange {
    origin: String,
    media_id: String,
    quarantined: bool,
}

/// One page of quarantine changes.
#[derive(Debug, Serialize)]
pub(crate) struct QuarantineChanges {
    next_batch: u64,
    changes: Vec<ShownChange>,
}

/// `GET /_synapse/admin/v1/media/quarantine_changes`: the changes after `from` (default 0),
/// oldest first, 100 at most.
pub(crate) async fn quarantine_changes(
    state: &State,
    from: Option<&str>,
) -> Result<QuarantineChanges, ApiError> {
    let from = match from {
        None => 0,
        Some(from) => from
            .parse::<u64>()
            .map_err(|_| ApiError::invalid_param("`from` must be a non-negative integer"))?,
    };
    let (changes, next_batch) = state.media.quarantine_changes(from, CHANGES_PAGE).await?;
    let ours = state.media.server_name();
    let changes = changes
        .into_iter()
        .map(|change| {
            let (origin, media_id) = origin_of(ours, &change.key);
            ShownChange {
                origin: origin.to_owned(),
                media_id: media_id.to_owned(),
                quarantined: change.quarantined,
            }
        })
        .collect();
    Ok(QuarantineChanges { next_batch, changes })
}

/// A media item as `GET /_synapse/admin/v1/media/{origin}/{mediaId}` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct MediaInfo {
    media_origin: String,
    user_id: Option<String>,
    media_id: String,
    media_type: String,
    media_length: u64,
    upload_name: Option<String>,
    created_ts: i64,
    filesystem_id: Option<String>,
    url_cache: Option<String>,
    last_access_ts: Option<i64>,
    quarantined_by: Option<String>,
    authenticated: bool,
    safe_from_quarantine: bool,
    sha256: Option<String>,
}

/// `GET /_synapse/admin/v1/media/{origin}/{mediaId}`: ours, or another server's fetched
/// here; anything else 404.
pub(crate) async fn media_info(
    state: &State,
    origin: &str,
    media_id: &str,
) -> Result<MediaInfo, ApiError> {
    let row = held(state, origin, media_id).await?;
    let local = origin == state.media.server_name();
    Ok(MediaInfo {
        media_origin: origin.to_owned(),
        user_id: local.then(|| row.uploader.clone()),
        media_id: media_id.to_owned(),
        media_type: row.content_type.unwrap_or_else(|| DEFAULT_TYPE.to_owned()),
        media_length: row.size,
        upload_name: row.upload_name,
        created_ts: row.created_ts,
        filesystem_id: row.sha256.clone(),
        url_cache: None,
        last_access_ts: None,
        quarantined_by: row.quarantined_by,
        authenticated: row.authenticated,
        safe_from_quarantine: row.safe_from_quarantine,
        sha256: row.sha256,
    })
}

/// `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`: our media only (400 for
/// another server's), 404 when there is no such item.
pub(crate) async fn delete_one(
    state: &State,
    server: &str,
    media_id: &str,
) -> Result<Deleted, ApiError> {
    if server != state.media.server_name() {
        return Err(ApiError::invalid_param("Can only delete local media"));
    }
    let row = held(state, server, media_id).await?;
    Ok(Deleted::of(state.media.delete_rows(&[row.media_id]).await?))
}

/// A timestamp parameter: a non-negative integer (400 `M_INVALID_PARAM` otherwise).
fn timestamp(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            v.parse::<i64>().ok().filter(|ts| *ts >= 0).ok_or_else(|| {
                ApiError::invalid_param(format!("`{name}` must be a non-negative integer"))
            })
        })
        .transpose()
}

/// `before_ts` of the deletions: required, in milliseconds.
fn before_ts(value: Option<&str>) -> Result<i64, ApiError> {
    let ts = timestamp("before_ts", value)?
        .ok_or_else(|| ApiError::missing_param("Missing integer query parameter 'before_ts'"))?;
    if ts < EARLIEST_TS {
        return Err(ApiError::invalid_param(
            "Query parameter before_ts you provided is from the year 1970. Double check that \
             you are providing a timestamp in milliseconds.",
        ));
    }
    Ok(ts)
}

/// The query of `POST /_synapse/admin/v1/media/delete`, as strings.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeleteOldParams {
    before_ts: Option<String>,
    size_gt: Option<String>,
    keep_profiles: Option<String>,
}

/// `POST /_synapse/admin/v1/media/delete`: our media stored before `before_ts`, larger than
/// `size_gt`, not protected, and (`keep_profiles`, the default) not the avatar of a user of
/// this server or of a room here.
pub(crate) async fn delete_old(
    state: &State,
    params: &DeleteOldParams,
) -> Result<Deleted, ApiError> {
    let before = before_ts(params.before_ts.as_deref())?;
    let size_gt = match params.size_gt.as_deref() {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::invalid_param("`size_gt` must be a non-negative integer"))?,
    };
    let keep_profiles = flag("keep_profiles", params.keep_profiles.as_deref())?.unwrap_or(true);
    let avatars = if keep_profiles { avatars(state).await? } else { HashSet::new() };
    let ours = state.media.server_name().to_owned();
    let rows = state
        .media
        .rows_where(None, |row| {
            !row.media_id.contains('/')
                && row.created_ts < before
                && row.size > size_gt
                && !row.safe_from_quarantine
                && !avatars.contains(&format!("mxc://{ours}/{}", row.media_id))
        })
        .await?;
    let keys: Vec<String> = rows.into_iter().map(|row| row.media_id).collect();
    Ok(Deleted::of(state.media.delete_rows(&keys).await?))
}

/// The avatars in use: of this server's users' profiles, and of the rooms here.
async fn avatars(state: &State) -> Result<HashSet<String>, ApiError> {
    let storage = state.rooms.storage();
    let mut found = HashSet::new();
    let mut after = String::new();
    loop {
        let batch = storage.users(&after, super::MAX_PAGE).await?;
        for user in &batch {
            if let Some(url) = storage.profile(&user.user_id).await?.and_then(|p| p.avatar_url) {
                found.insert(url);
            }
        }
        match batch.last() {
            Some(last) if batch.len() == super::MAX_PAGE => after.clone_from(&last.user_id),
            _ => break,
        }
    }
    let mut after = String::new();
    loop {
        let batch = storage.room_ids(&after, super::MAX_PAGE).await?;
        for room_id in &batch {
            let Some(info) = storage.room(room_id).await? else { continue };
            let Some(snapshot) = info.current_state else { continue };
            let Some(event_id) = storage.state_get(snapshot, "m.room.avatar", "").await? else {
                continue;
            };
            if let Some(pdu) = state.rooms.pdu(&event_id).await?
                && let Some(url) = pdu.content().get_str("url")
            {
                found.insert(url.to_owned());
            }
        }
        match batch.last() {
            Some(last) if batch.len() == super::MAX_PAGE => after.clone_from(last),
            _ => break,
        }
    }
    Ok(found)
}

/// `POST /_synapse/admin/v1/purge_media_cache`: other servers' media fetched here before
/// `before_ts`, except quarantined items (whose rows keep them from being fetched again
/// unquarantined). Answers how many were deleted.
pub(crate) async fn purge_remote(state: &State, before: Option<&str>) -> Result<usize, ApiError> {
    let before = before_ts(before)?;
    let rows = state
        .media
        .rows_where(None, |row| {
            row.media_id.contains('/') && row.created_ts < before && row.quarantined_by.is_none()
        })
        .await?;
    let keys: Vec<String> = rows.into_iter().map(|row| row.media_id).collect();
    Ok(state.media.delete_rows(&keys).await?.len())
}

/// The query of `GET /_synapse/admin/v1/statistics/users/media`, as strings.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct MediaStatisticsParams {
    from: Option<String>,
    limit: Option<String>,
    order_by: Option<String>,
    dir: Option<String>,
    from_ts: Option<String>,
    until_ts: Option<String>,
    search_term: Option<String>,
}

/// A user's line of the media statistics.
#[derive(Debug, Serialize)]
pub(crate) struct UserMediaStatistics {
    displayname: Option<String>,
    media_count: u64,
    media_length: u64,
    user_id: String,
}

/// One page of the media statistics.
#[derive(Debug, Serialize)]
pub(crate) struct MediaStatistics {
    users: Vec<UserMediaStatistics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<usize>,
    total: usize,
}

/// `GET /_synapse/admin/v1/statistics/users/media`: per local user, the count and bytes of
/// the media they uploaded (stored between `from_ts` and `until_ts`, inclusive).
pub(crate) async fn media_statistics(
    state: &State,
    params: &MediaStatisticsParams,
) -> Result<MediaStatistics, ApiError> {
    let (from, limit) = page(params.from.as_deref(), params.limit.as_deref())?;
    let backwards = backwards(params.dir.as_deref())?;
    let from_ts = timestamp("from_ts", params.from_ts.as_deref())?;
    let until_ts = timestamp("until_ts", params.until_ts.as_deref())?;
    if let (Some(from_ts), Some(until_ts)) = (from_ts, until_ts)
        && until_ts < from_ts
    {
        return Err(ApiError::invalid_param("`until_ts` must not be before `from_ts`"));
    }
    let order_by = params.order_by.as_deref().unwrap_or("user_id");
    if !["user_id", "displayname", "media_length", "media_count"].contains(&order_by) {
        return Err(ApiError::invalid_param(format!("unknown order_by {order_by:?}")));
    }
    let mut per_user: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let rows = state
        .media
        .rows_where(None, |row| {
            !row.media_id.contains('/')
                && row.uploader.starts_with('@')
                && from_ts.is_none_or(|ts| row.created_ts >= ts)
                && until_ts.is_none_or(|ts| row.created_ts <= ts)
        })
        .await?;
    for row in rows {
        let (count, length) = per_user.entry(row.uploader).or_default();
        *count += 1;
        *length = length.saturating_add(row.size);
    }
    let term = params.search_term.as_deref().map(str::to_lowercase);
    let storage = state.rooms.storage();
    let mut lines = Vec::new();
    for (user_id, (media_count, media_length)) in per_user {
        let displayname = storage.profile(&user_id).await?.and_then(|p| p.displayname);
        if let Some(term) = &term {
            let localpart = user_id.trim_start_matches('@').split(':').next().unwrap_or_default();
            let matches = localpart.to_lowercase().contains(term)
                || displayname.as_deref().is_some_and(|d| d.to_lowercase().contains(term));
            if !matches {
                continue;
            }
        }
        lines.push(UserMediaStatistics { displayname, media_count, media_length, user_id });
    }
    lines.sort_by(|a, b| {
        let primary = match order_by {
            "displayname" => a.displayname.cmp(&b.displayname),
            "media_length" => a.media_length.cmp(&b.media_length),
            "media_count" => a.media_count.cmp(&b.media_count),
            _ => std::cmp::Ordering::Equal,
        };
        let primary = if backwards { primary.reverse() } else { primary };
        let tie = a.user_id.cmp(&b.user_id);
        primary.then(if backwards && order_by == "user_id" { tie.reverse() } else { tie })
    });
    let total = lines.len();
    let users: Vec<_> = lines.into_iter().skip(from).take(limit).collect();
    let end = from + users.len();
    Ok(MediaStatistics { users, next_token: (end < total).then_some(end), total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mxc_uris_are_parsed_strictly() {
        assert_eq!(parse_mxc("mxc://a.org/abc"), Some(("a.org".to_owned(), "abc".to_owned())));
        assert_eq!(parse_mxc("mxc://a.org/"), None);
        assert_eq!(parse_mxc("mxc://a.org/x/y"), None);
        assert_eq!(parse_mxc("https://a.org/abc"), None);
        assert_eq!(parse_mxc("mxc:///abc"), None);
    }

    #[test]
    fn timestamps_are_checked() {
        assert!(before_ts(None).is_err());
        assert!(before_ts(Some("1000")).is_err());
        assert!(before_ts(Some("-5")).is_err());
        assert_eq!(before_ts(Some("1700000000000")).ok(), Some(1_700_000_000_000));
    }
}
