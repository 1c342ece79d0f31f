//! The conformance tests of media metadata: content hashes and the authenticated mark, and
//! the pending media ids of asynchronous uploads (completed exactly once, kept per creator).

use super::{Store, apply};
use crate::{ChangeSet, ErrorKind, Media, PendingMedia};

fn pending(media_id: &str, creator: &str, expires_ts: i64) -> PendingMedia {
    PendingMedia {
        media_id: media_id.to_owned(),
        creator: creator.to_owned(),
        created_ts: 1,
        expires_ts,
    }
}

fn uploaded(media_id: &str, sha256: &str) -> Media {
    Media {
        media_id: media_id.to_owned(),
        content_type: Some("text/plain".to_owned()),
        size: 5,
        upload_name: Some("a.txt".to_owned()),
        uploader: "@a:x".to_owned(),
        created_ts: 9,
        sha256: Some(sha256.to_owned()),
        authenticated: true,
    }
}

/// Media rows keep their content hash and authenticated mark; a later row of the same id (a
/// remote item fetched again) replaces the earlier.
pub async fn media_rows_keep_hash_and_mark(store: Store) {
    let mut row = uploaded("m1", "ab12");
    let mut changes = ChangeSet::new();
    changes.media.push(row.clone());
    apply(&store, changes).await;
    assert_eq!(store.media("m1").await.expect("reads"), Some(row.clone()));
    row.sha256 = None;
    row.authenticated = false;
    let mut changes = ChangeSet::new();
    changes.media.push(row.clone());
    apply(&store, changes).await;
    assert_eq!(store.media("m1").await.expect("reads"), Some(row));
}

/// Pending media ids: listed by id and per creator (sorted), completed exactly once (a second
/// completion, one of an id never created, or one id twice in a change set is a conflict that
/// writes nothing), and forgotten when deleted.
pub async fn pending_media_completes_once(store: Store) {
    let mut changes = ChangeSet::new();
    changes.pending_media =
        vec![pending("p2", "@a:x", 100), pending("p1", "@a:x", 200), pending("p3", "@b:x", 300)];
    apply(&store, changes).await;
    assert_eq!(store.pending_media("p1").await.expect("reads"), Some(pending("p1", "@a:x", 200)));
    assert_eq!(store.pending_media("nope").await.expect("reads"), None);
    let of_a = store.pending_media_of("@a:x").await.expect("reads");
    assert_eq!(of_a, vec![pending("p1", "@a:x", 200), pending("p2", "@a:x", 100)]);
    assert_eq!(store.pending_media_of("@c:x").await.expect("reads"), vec![]);

    // Uploading p1: its row and the end of its pending entry, in one change set.
    let mut upload = ChangeSet::new();
    upload.media.push(uploaded("p1", "cafe"));
    upload.completed_pending_media.push("p1".to_owned());
    apply(&store, upload.clone()).await;
    assert_eq!(store.pending_media("p1").await.expect("reads"), None);
    assert_eq!(store.media("p1").await.expect("reads"), Some(uploaded("p1", "cafe")));

    // Again: a conflict, and the row is left as the first upload wrote it.
    let mut again = upload;
    again.media[0].sha256 = Some("beef".to_owned());
    let error = store.apply(again).await.expect_err("uploaded already");
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(store.media("p1").await.expect("reads"), Some(uploaded("p1", "cafe")));

    for completed in [vec!["never"], vec!["p2", "p2"]] {
        let mut changes = ChangeSet::new();
        changes.media.push(uploaded("p2", "0000"));
        changes.completed_pending_media = completed.iter().map(|s| (*s).to_owned()).collect();
        let error = store.apply(changes).await.expect_err("not pending");
        assert_eq!(error.kind(), ErrorKind::Conflict, "{completed:?}");
        assert_eq!(store.media("p2").await.expect("reads"), None, "nothing written");
    }
    assert!(store.pending_media("p2").await.expect("reads").is_some());

    // Forgetting: a missing id is skipped.
    let mut changes = ChangeSet::new();
    changes.deleted_pending_media = vec!["p2".to_owned(), "never".to_owned()];
    apply(&store, changes).await;
    assert_eq!(store.pending_media_of("@a:x").await.expect("reads"), vec![]);
    assert_eq!(
        store.pending_media_of("@b:x").await.expect("reads"),
        vec![pending("p3", "@b:x", 300)]
    );
}
