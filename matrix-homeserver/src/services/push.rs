//! Pushers and the push sender (client-server API "Push Notifications", push gateway API).
//!
//! Pushers are stored per `(user, app_id, pushkey)` ([`matrix_storage::Pusher`]); only `http`
//! pushers are taken (`email` needs a validated address this server does not keep), with a
//! gateway URL that is `http(s)` and ends in `/_matrix/push/v1/notify`, at most
//! `limits.max_pushers_per_user` per user.
//!
//! Delivery: the stored notifications ([`super::rooms::notify`]) are the queue. Each pusher
//! has a stored cursor (set at the stream head when the pusher is made: it gets what comes
//! after); one task walks every pusher's notifications after its cursor, `POST`s each to the
//! gateway (`event_id_only` or full format), and moves the cursor on in storage. A failed
//! `POST` (no answer, not 2xx) is tried again after a stored backoff (1 s doubling to one
//! hour); after [`MAX_FAILURES`] tries the notification is skipped. Pushkeys the gateway names
//! in `rejected` lose their pusher. A restart resumes from the stored cursors. Gateway hosts
//! that resolve to private, loopback or link-local addresses are refused unless
//! `limits.allow_private_push_gateways` is set.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use matrix_storage::{ChangeSet, NOTIFICATIONS_KEPT, Notification, PushCursor, Pusher, StreamPos};
use serde_json::{Map, Value, json};

use super::rooms::Rooms;
use crate::config::default_ip_blocklist;
use crate::error::ApiError;

/// The gateway path every pusher URL must have.
pub(crate) const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// Tries of one notification before it is skipped.
pub(crate) const MAX_FAILURES: u32 = 10;
/// Notifications sent per pusher per round.
const BATCH: usize = 20;
/// How long one gateway request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the push sender task; it ends when the rooms service is gone.
pub(crate) fn start(rooms: &Arc<Rooms>, allow_private: bool) {
    let mut builder =
        reqwest::Client::builder().timeout(TIMEOUT).redirect(reqwest::redirect::Policy::none());
    if !allow_private {
        // The addresses connected to are the ones checked: a name answering a public address
        // to the check and a private one to the connection reaches nothing.
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    let client = builder.build().unwrap_or_default();
    tokio::spawn(run(Arc::downgrade(rooms), rooms.push_wake.clone(), client, allow_private));
}

async fn run(
    rooms: Weak<Rooms>,
    wake: Arc<tokio::sync::Notify>,
    client: reqwest::Client,
    allow_private: bool,
) {
    loop {
        let next = {
            let Some(rooms) = rooms.upgrade() else { return };
            match round(&rooms, &client, allow_private).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!("push sender: {error:?}");
                    Some(Duration::from_secs(5))
                }
            }
        };
        let wait = next.unwrap_or(Duration::from_secs(60)).min(Duration::from_secs(60));
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn now_ms() -> u64 {
    u64::try_from(super::rooms::now_ms()).unwrap_or(0)
}

/// One pass over every pusher; answers how soon a retry is due, if one is.
async fn round(
    rooms: &Rooms,
    client: &reqwest::Client,
    allow_private: bool,
) -> Result<Option<Duration>, ApiError> {
    let storage = rooms.storage();
    let mut next: Option<Duration> = None;
    for pusher in storage.all_pushers().await? {
        let Some(mut cursor) =
            storage.push_cursor(&pusher.user_id, &pusher.app_id, &pusher.pushkey).await?
        else {
            continue;
        };
        let now = now_ms();
        if cursor.retry_at > now {
            let wait = Duration::from_millis(cursor.retry_at - now);
            next = Some(next.map_or(wait, |n| n.min(wait)));
            continue;
        }
        let pending = storage.notifications_after(&pusher.user_id, cursor.pos, BATCH).await?;
        for notification in &pending {
            match deliver(rooms, client, allow_private, &pusher, notification).await {
                Delivered::Yes { rejected } => {
                    cursor.pos = notification.pos;
                    cursor.failures = 0;
                    cursor.retry_at = 0;
                    if rejected {
                        let mut changes = ChangeSet::new();
                        let key =
                            (pusher.user_id.clone(), pusher.app_id.clone(), pusher.pushkey.clone());
                        changes.deleted_pushers.push(key.clone());
                        changes.deleted_push_cursors.push(key);
                        storage.apply(changes).await?;
                        break;
                    }
                }
                Delivered::No => {
                    cursor.failures += 1;
                    if cursor.failures >= MAX_FAILURES {
                        cursor.pos = notification.pos;
                        cursor.failures = 0;
                        cursor.retry_at = 0;
                    } else {
                        let backoff = 1000u64 << cursor.failures.min(12);
                        cursor.retry_at = now_ms() + backoff.min(3_600_000);
                        let wait = Duration::from_millis(backoff);
                        next = Some(next.map_or(wait, |n| n.min(wait)));
                    }
                }
            }
            let still = storage.pushers(&pusher.user_id).await?;
            if !still.iter().any(|p| p.app_id == pusher.app_id && p.pushkey == pusher.pushkey) {
                break;
            }
            let mut changes = ChangeSet::new();
            changes.push_cursors.push(cursor.clone());
            storage.apply(changes).await?;
            if cursor.retry_at > 0 {
                break;
            }
        }
        if pending.len() == BATCH {
            next = Some(Duration::ZERO);
        }
    }
    Ok(next)
}

enum Delivered {
    Yes { rejected: bool },
    No,
}

/// The `tweaks` of a notification's actions.
fn tweaks(actions: &[u8]) -> Map<String, Value> {
    let mut tweaks = Map::new();
    let Ok(Value::Array(actions)) = serde_json::from_slice::<Value>(actions) else { return tweaks };
    for action in actions {
        if let Some(name) = action.get("set_tweak").and_then(Value::as_str) {
            let value = action.get("value").cloned().unwrap_or(Value::Bool(true));
            tweaks.insert(name.to_owned(), value);
        }
    }
    tweaks
}

async fn deliver(
    rooms: &Rooms,
    client: &reqwest::Client,
    allow_private: bool,
    pusher: &Pusher,
    n: &Notification,
) -> Delivered {
    let Ok(data) = serde_json::from_slice::<Value>(&pusher.data) else { return Delivered::No };
    let Some(url) = data["data"]["url"].as_str() else { return Delivered::No };
    let Ok(url) = url::Url::parse(url) else { return Delivered::No };
    if !allow_private && !public_host(&url).await {
        return Delivered::No;
    }
    let mut device_data = data["data"].as_object().cloned().unwrap_or_default();
    device_data.remove("url");
    let event_id_only = data["data"]["format"].as_str() == Some("event_id_only");
    let unread = unread_total(rooms, &n.user_id).await.unwrap_or(1);
    let mut notification = json!({
        "event_id": n.event_id,
        "room_id": n.room_id,
        "counts": {"unread": unread},
        "prio": if n.highlight { "high" } else { "low" },
        "devices": [{
            "app_id": pusher.app_id,
            "pushkey": pusher.pushkey,
            "data": device_data,
            "tweaks": tweaks(&n.actions),
        }],
    });
    if !event_id_only && let Ok(Some(pdu)) = rooms.pdu(&n.event_id).await {
        notification["type"] = json!(pdu.kind());
        notification["sender"] = json!(pdu.sender());
        let content: Value = serde_json::from_slice(&{
            let mut out = Vec::new();
            pdu.content().write_canonical(&mut out);
            out
        })
        .unwrap_or(Value::Null);
        notification["content"] = content;
        if pdu.kind() == "m.room.member" {
            notification["user_is_target"] = json!(pdu.state_key() == Some(n.user_id.as_str()));
        }
    }
    let sent = client.post(url).json(&json!({"notification": notification})).send().await;
    let Ok(answer) = sent else { return Delivered::No };
    if !answer.status().is_success() {
        return Delivered::No;
    }
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    let rejected = body["rejected"]
        .as_array()
        .is_some_and(|r| r.iter().any(|k| k.as_str() == Some(pusher.pushkey.as_str())));
    Delivered::Yes { rejected }
}

/// The push client's resolver: the system's, refusing a name with any blocked address.
#[derive(Debug)]
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let blocklist = default_ip_blocklist();
            // Port 0: the client uses the URL's port.
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty()
                || addrs.iter().any(|a| blocklist.iter().any(|net| net.contains(a.ip())))
            {
                return Err(
                    format!("{host} resolves to an address push gateways may not have").into()
                );
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether every address the URL's host resolves to is public.
async fn public_host(url: &url::Url) -> bool {
    let blocklist = default_ip_blocklist();
    let Some(host) = url.host_str() else { return false };
    let port = url.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let Ok(addrs) = tokio::net::lookup_host((host, port)).await else { return false };
    let addrs: Vec<_> = addrs.collect();
    !addrs.is_empty() && addrs.iter().all(|a| !blocklist.iter().any(|net| net.contains(a.ip())))
}

/// The user's unread notifications across the rooms of their recent notifications.
async fn unread_total(rooms: &Rooms, user: &str) -> Result<u64, ApiError> {
    let Ok(user_id) = ruma::UserId::parse(user) else { return Ok(0) };
    let recent = rooms.storage().notifications(user, None, NOTIFICATIONS_KEPT, false).await?;
    let distinct: BTreeSet<&str> = recent.iter().map(|n| n.room_id.as_str()).collect();
    let mut total = 0;
    for room in distinct {
        total += rooms.unread(room, &user_id).await?.total().notifications;
    }
    Ok(total)
}

/// Checks a gateway URL: `http(s)`, with the path [`NOTIFY_PATH`].
pub(crate) fn check_url(url: &str) -> Result<(), ApiError> {
    let parsed =
        url::Url::parse(url).map_err(|_| ApiError::invalid_param("data.url is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::invalid_param("data.url must be an http or https URL"));
    }
    if parsed.path() != NOTIFY_PATH {
        return Err(ApiError::invalid_param(format!("data.url must have the path {NOTIFY_PATH}")));
    }
    Ok(())
}

/// A new pusher's cursor: it gets what comes after `head`.
pub(crate) fn cursor_at(pusher: &Pusher, head: StreamPos) -> PushCursor {
    PushCursor {
        user_id: pusher.user_id.clone(),
        app_id: pusher.app_id.clone(),
        pushkey: pusher.pushkey.clone(),
        pos: head,
        failures: 0,
        retry_at: 0,
    }
}

#[cfg(test)]
mod resolver_tests {
    use reqwest::dns::Resolve as _;

    use super::PublicOnly;

    /// The push client never connects to a name of this host or the local networks, whatever
    /// the check before it saw.
    #[tokio::test]
    async fn the_push_resolver_refuses_local_names() {
        for host in ["localhost", "127.0.0.1", "10.0.0.1"] {
            let name: reqwest::dns::Name = host.parse().expect("a name");
            assert!(PublicOnly.resolve(name).await.is_err(), "{host}");
        }
    }
}
