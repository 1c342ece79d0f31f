//! Registration tokens: stored, replaced, listed in byte order, deleted.

use super::{Store, apply};
use crate::{ChangeSet, RegistrationToken};

/// Tokens round-trip with every field (set and unset), replace each other by token, list in
/// byte order and go when deleted.
pub async fn registration_tokens_round_trip(store: Store) {
    let token = |name: &str, uses: Option<u64>, expiry: Option<u64>| RegistrationToken {
        token: name.to_owned(),
        uses_allowed: uses,
        pending: 1,
        completed: 2,
        expiry_time: expiry,
    };
    assert_eq!(store.registration_token("abc").await.expect("reads"), None);
    assert!(store.registration_tokens().await.expect("reads").is_empty());
    let mut changes = ChangeSet::new();
    changes.registration_tokens = vec![
        token("b", Some(5), None),
        token("a.long-token_~", None, Some(1_700_000_000_000)),
        token("B", None, None),
    ];
    apply(&store, changes).await;
    assert_eq!(
        store.registration_token("a.long-token_~").await.expect("reads"),
        Some(token("a.long-token_~", None, Some(1_700_000_000_000)))
    );
    let names =
        |tokens: Vec<RegistrationToken>| tokens.into_iter().map(|t| t.token).collect::<Vec<_>>();
    assert_eq!(
        names(store.registration_tokens().await.expect("reads")),
        ["B", "a.long-token_~", "b"]
    );

    let mut used = token("b", Some(5), None);
    used.completed = 3;
    used.pending = 0;
    let mut changes = ChangeSet::new();
    changes.registration_tokens = vec![used.clone()];
    changes.deleted_registration_tokens = vec!["B".to_owned(), "not-there".to_owned()];
    apply(&store, changes).await;
    assert_eq!(store.registration_token("b").await.expect("reads"), Some(used));
    assert_eq!(store.registration_token("B").await.expect("reads"), None);
    assert_eq!(names(store.registration_tokens().await.expect("reads")), ["a.long-token_~", "b"]);

    // `token` has one pending and two completed uses.
    assert!(token("t", Some(4), Some(100)).valid_at(99));
    assert!(!token("t", Some(4), Some(100)).valid_at(100), "expired");
    assert!(!token("t", Some(3), None).valid_at(0), "pending and completed use it up");
    assert!(token("t", None, None).valid_at(u64::MAX));
}
