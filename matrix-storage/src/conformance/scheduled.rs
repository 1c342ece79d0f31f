//! The conformance tests of OpenID tokens and delayed events.

use super::{Store, apply};
use crate::{ChangeSet, DelayedEvent, OpenIdToken};

fn s(text: &str) -> String {
    text.to_owned()
}

fn delayed(user: &str, id: &str, scheduled_at: u64, delay_ms: u64) -> DelayedEvent {
    DelayedEvent {
        user_id: s(user),
        delay_id: s(id),
        device_id: s("D"),
        room_id: s("!r:x"),
        kind: s("m.room.message"),
        state_key: (id == "state").then(|| s("")),
        content: format!(r#"{{"body":"{id} \u00e9"}}"#).into_bytes(),
        delay_ms,
        scheduled_at,
    }
}

/// OpenID tokens: stored by hash, read back also once expired, listed as expired from their
/// expiry on, deleted.
pub async fn openid_tokens_expire(store: Store) {
    assert_eq!(store.openid_token("h1").await.expect("reads"), None);
    let mut changes = ChangeSet::new();
    changes.openid_tokens = vec![
        (s("h1"), OpenIdToken { user_id: s("@a:x"), expires_ts: 1_000 }),
        (s("h2"), OpenIdToken { user_id: s("@b:x"), expires_ts: 2_000 }),
        (s("h3"), OpenIdToken { user_id: s("@a:x"), expires_ts: u64::from(u32::MAX) * 1000 }),
    ];
    apply(&store, changes).await;
    let token = store.openid_token("h1").await.expect("reads").expect("stored");
    assert_eq!(token, OpenIdToken { user_id: s("@a:x"), expires_ts: 1_000 });
    assert!(store.expired_openid_tokens(999, 10).await.expect("reads").is_empty());
    assert_eq!(store.expired_openid_tokens(1_000, 10).await.expect("reads"), vec![s("h1")]);
    let mut both = store.expired_openid_tokens(5_000, 10).await.expect("reads");
    both.sort();
    assert_eq!(both, vec![s("h1"), s("h2")]);
    assert_eq!(store.expired_openid_tokens(5_000, 1).await.expect("reads").len(), 1, "bounded");
    let mut changes = ChangeSet::new();
    changes.deleted_openid_tokens = vec![s("h1"), s("h2"), s("never")];
    apply(&store, changes).await;
    assert_eq!(store.openid_token("h1").await.expect("reads"), None);
    assert!(store.expired_openid_tokens(5_000, 10).await.expect("reads").is_empty());
    assert!(store.openid_token("h3").await.expect("reads").is_some());
}

/// Delayed events: by owner and id, per owner by send time, everybody's due first; a
/// replacement (a restart) moves its send time; deletions.
pub async fn delayed_events_by_owner_and_time(store: Store) {
    assert_eq!(store.delayed_event("@a:x", "1").await.expect("reads"), None);
    assert!(store.next_delayed_events(10).await.expect("reads").is_empty());
    let mut changes = ChangeSet::new();
    changes.delayed_events = vec![
        delayed("@a:x", "1", 100, 500),
        delayed("@a:x", "state", 100, 50),
        delayed("@b:x", "1", 120, 10),
        delayed("@ab:x", "9", 0, 10_000),
    ];
    apply(&store, changes).await;
    let one = store.delayed_event("@a:x", "1").await.expect("reads").expect("stored");
    assert_eq!(one, delayed("@a:x", "1", 100, 500));
    assert_eq!(one.send_ts(), 600);
    assert_eq!(store.delayed_event("@b:x", "state").await.expect("reads"), None);
    let ids = |events: Vec<DelayedEvent>| {
        events.into_iter().map(|e| format!("{}/{}", e.user_id, e.delay_id)).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.delayed_events_of("@a:x").await.expect("reads")),
        vec!["@a:x/state", "@a:x/1"],
        "by send time, and only the owner's (not @ab:x's)"
    );
    assert_eq!(
        ids(store.next_delayed_events(10).await.expect("reads")),
        vec!["@b:x/1", "@a:x/state", "@a:x/1", "@ab:x/9"]
    );
    assert_eq!(ids(store.next_delayed_events(2).await.expect("reads")).len(), 2);

    // A restart replaces the record: its old place in the order is gone.
    let mut changes = ChangeSet::new();
    changes.delayed_events = vec![delayed("@b:x", "1", 20_000, 10)];
    changes.deleted_delayed_events = vec![(s("@a:x"), s("state")), (s("@a:x"), s("none"))];
    apply(&store, changes).await;
    assert_eq!(
        ids(store.next_delayed_events(10).await.expect("reads")),
        vec!["@a:x/1", "@ab:x/9", "@b:x/1"]
    );
    assert_eq!(ids(store.delayed_events_of("@a:x").await.expect("reads")), vec!["@a:x/1"]);
    let mut changes = ChangeSet::new();
    changes.deleted_delayed_events = vec![(s("@a:x"), s("1")), (s("@b:x"), s("1"))];
    apply(&store, changes).await;
    assert_eq!(ids(store.next_delayed_events(10).await.expect("reads")), vec!["@ab:x/9"]);
}

/// What `reopen_keeps_everything` writes of this domain.
pub(super) fn fill(changes: &mut ChangeSet) {
    changes.openid_tokens.push((s("oh"), OpenIdToken { user_id: s("@a:x"), expires_ts: 1_234 }));
    changes.delayed_events.push(delayed("@a:x", "state", 7, 8));
}

/// What `reopen_keeps_everything` reads back of this domain.
pub(super) async fn everything(store: &Store) -> Vec<String> {
    vec![
        format!("{:?}", store.openid_token("oh").await.expect("reads")),
        format!("{:?}", store.next_delayed_events(10).await.expect("reads")),
    ]
}
