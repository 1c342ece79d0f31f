//! Administrators' decisions about users, and their tokens acting as users: stored,
//! replaced, deleted.

use super::{Store, apply};
use crate::{ChangeSet, PuppetToken, RatelimitOverride, UserModeration};

/// A user's record round-trips with every field, replaces the earlier one, and goes when an
/// empty one is written; tokens round-trip, replace each other by hash and go when deleted.
pub async fn user_moderation_round_trip(store: Store) {
    let record =
        |user: &str, banned: bool, suspended: bool, limit: Option<(u64, u64)>| UserModeration {
            user_id: user.to_owned(),
            shadow_banned: banned,
            suspended,
            ratelimit: limit.map(|(messages_per_second, burst_count)| RatelimitOverride {
                messages_per_second,
                burst_count,
            }),
        };
    assert_eq!(store.user_moderation("@a:s").await.expect("reads"), None);
    let mut changes = ChangeSet::new();
    changes.user_moderation =
        vec![record("@a:s", true, false, Some((0, 0))), record("@b:s", false, true, None)];
    apply(&store, changes).await;
    assert_eq!(
        store.user_moderation("@a:s").await.expect("reads"),
        Some(record("@a:s", true, false, Some((0, 0))))
    );
    assert_eq!(
        store.user_moderation("@b:s").await.expect("reads"),
        Some(record("@b:s", false, true, None))
    );

    let mut changes = ChangeSet::new();
    changes.user_moderation =
        vec![record("@a:s", false, true, Some((5, 300))), record("@b:s", false, false, None)];
    apply(&store, changes).await;
    assert_eq!(
        store.user_moderation("@a:s").await.expect("reads"),
        Some(record("@a:s", false, true, Some((5, 300))))
    );
    assert_eq!(store.user_moderation("@b:s").await.expect("reads"), None, "empty: deleted");

    let token = |hash: &str, until: Option<u64>| PuppetToken {
        token_hash: hash.to_owned(),
        user_id: "@a:s".to_owned(),
        issued_by: "@admin:s".to_owned(),
        valid_until_ms: until,
    };
    assert_eq!(store.puppet_token("h1").await.expect("reads"), None);
    let mut changes = ChangeSet::new();
    changes.puppet_tokens = vec![token("h1", None), token("h2", Some(1_700_000_000_000))];
    apply(&store, changes).await;
    assert_eq!(store.puppet_token("h1").await.expect("reads"), Some(token("h1", None)));
    assert_eq!(
        store.puppet_token("h2").await.expect("reads"),
        Some(token("h2", Some(1_700_000_000_000)))
    );
    let mut changes = ChangeSet::new();
    changes.puppet_tokens = vec![token("h1", Some(7))];
    changes.deleted_puppet_tokens = vec!["h2".to_owned(), "not-there".to_owned()];
    apply(&store, changes).await;
    assert_eq!(store.puppet_token("h1").await.expect("reads"), Some(token("h1", Some(7))));
    assert_eq!(store.puppet_token("h2").await.expect("reads"), None);
    // Neither kind of record is the other's.
    assert_eq!(store.user_moderation("h1").await.expect("reads"), None);
    assert_eq!(store.puppet_token("@a:s").await.expect("reads"), None);
}
