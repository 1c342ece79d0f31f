//! The conformance tests of media metadata: content hashes and the authenticated mark, and
//! the pending media ids of asynchronous uploads (completed exactly once, kept per creator).

use super::{Store, apply};
use crate::{ChangeSet, ErrorKind, Media, PendingMedia, QuarantineChange};

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
        quarantined_by: None,
        safe_from_quarantine: false,
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
    row.quarantined_by = Some("@admin:x".to_owned());
    row.safe_from_quarantine = true;
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

fn keys(rows: &[Media]) -> Vec<&str> {
    rows.iter().map(|m| m.media_id.as_str()).collect()
}

/// Media rows listed a page at a time in byte order of their keys: all of them, one
/// uploader's, those of one content hash; a row replaced is listed as it is now, a row
/// deleted nowhere (deleting one that is missing is skipped).
pub async fn media_listed_by_uploader_and_content(store: Store) {
    let mut rows = Vec::new();
    for (key, uploader, sha256) in [
        ("b", "@a:x", "h1"),
        ("a", "@a:x", "h2"),
        ("ZZ", "@b:x", "h1"),
        ("other.org/m1", "other.org", "h1"),
        ("c", "@a:x", "h3"),
    ] {
        let mut row = uploaded(key, sha256);
        row.uploader = uploader.to_owned();
        rows.push(row);
    }
    let mut changes = ChangeSet::new();
    changes.media = rows;
    apply(&store, changes).await;

    let all = store.media_rows("", 10).await.expect("reads");
    assert_eq!(keys(&all), vec!["ZZ", "a", "b", "c", "other.org/m1"]);
    let page = store.media_rows("a", 2).await.expect("reads");
    assert_eq!(keys(&page), vec!["b", "c"]);
    assert_eq!(store.media_rows("other.org/m1", 2).await.expect("reads"), vec![]);
    assert_eq!(store.media_rows("", 0).await.expect("reads"), vec![]);

    let of_a = store.media_of("@a:x", "", 10).await.expect("reads");
    assert_eq!(keys(&of_a), vec!["a", "b", "c"]);
    assert_eq!(of_a[1].uploader, "@a:x");
    assert_eq!(keys(&store.media_of("@a:x", "a", 1).await.expect("reads")), vec!["b"]);
    assert_eq!(
        keys(&store.media_of("other.org", "", 10).await.expect("reads")),
        vec!["other.org/m1"]
    );
    assert_eq!(store.media_of("@nobody:x", "", 10).await.expect("reads"), vec![]);

    let h1 = store.media_with_content("h1", "", 10).await.expect("reads");
    assert_eq!(keys(&h1), vec!["ZZ", "b", "other.org/m1"]);
    assert_eq!(keys(&store.media_with_content("h1", "ZZ", 1).await.expect("reads")), vec!["b"]);

    // Replaced: another uploader and hash, quarantined; listed under the new ones only.
    let mut moved = uploaded("b", "h3");
    moved.uploader = "@b:x".to_owned();
    moved.quarantined_by = Some("@admin:x".to_owned());
    let mut changes = ChangeSet::new();
    changes.media.push(moved.clone());
    apply(&store, changes).await;
    assert_eq!(keys(&store.media_of("@a:x", "", 10).await.expect("reads")), vec!["a", "c"]);
    assert_eq!(
        store.media_of("@b:x", "", 10).await.expect("reads"),
        vec![uploaded_by("ZZ", "@b:x", "h1"), moved.clone()]
    );
    assert_eq!(
        keys(&store.media_with_content("h1", "", 10).await.expect("reads")),
        vec!["ZZ", "other.org/m1"]
    );
    assert_eq!(keys(&store.media_with_content("h3", "", 10).await.expect("reads")), vec!["b", "c"]);

    // Deleted (a missing key is skipped).
    let mut changes = ChangeSet::new();
    changes.deleted_media = vec!["b".to_owned(), "other.org/m1".to_owned(), "never".to_owned()];
    apply(&store, changes).await;
    assert_eq!(store.media("b").await.expect("reads"), None);
    assert_eq!(keys(&store.media_rows("", 10).await.expect("reads")), vec!["ZZ", "a", "c"]);
    assert_eq!(keys(&store.media_of("@b:x", "", 10).await.expect("reads")), vec!["ZZ"]);
    assert_eq!(store.media_of("other.org", "", 10).await.expect("reads"), vec![]);
    assert_eq!(keys(&store.media_with_content("h1", "", 10).await.expect("reads")), vec!["ZZ"]);
    assert_eq!(keys(&store.media_with_content("h3", "", 10).await.expect("reads")), vec!["c"]);
}

fn uploaded_by(media_id: &str, uploader: &str, sha256: &str) -> Media {
    Media { uploader: uploader.to_owned(), ..uploaded(media_id, sha256) }
}

/// Quarantine changes are logged with increasing ids, in the order given, and read a page at
/// a time after an id.
pub async fn quarantine_changes_are_logged(store: Store) {
    assert_eq!(store.last_quarantine_change().await.expect("reads"), 0);
    assert_eq!(store.quarantine_changes(0, 10).await.expect("reads"), vec![]);
    let mut changes = ChangeSet::new();
    changes.quarantine_changes = vec![("b".to_owned(), true), ("other.org/a".to_owned(), true)];
    apply(&store, changes).await;
    let mut changes = ChangeSet::new();
    changes.quarantine_changes = vec![("b".to_owned(), false)];
    apply(&store, changes).await;
    let all = store.quarantine_changes(0, 10).await.expect("reads");
    let seen: Vec<(&str, bool)> = all.iter().map(|c| (c.key.as_str(), c.quarantined)).collect();
    assert_eq!(seen, vec![("b", true), ("other.org/a", true), ("b", false)]);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "{all:?}");
    let last = store.last_quarantine_change().await.expect("reads");
    assert_eq!(last, all[2].id);
    let page = store.quarantine_changes(all[0].id, 1).await.expect("reads");
    assert_eq!(
        page,
        vec![QuarantineChange { id: all[1].id, key: "other.org/a".to_owned(), quarantined: true }]
    );
    assert_eq!(store.quarantine_changes(last, 10).await.expect("reads"), vec![]);
}
