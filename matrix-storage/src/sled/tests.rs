//! Unit tests of the embedded store that need its internals (the flusher, the tables), on
//! each engine.

use super::*;

fn account_data(kind: &str) -> ChangeSet {
    let mut changes = ChangeSet::new();
    changes.account_data.push(("@a:x".to_owned(), None, kind.to_owned(), b"{}".to_vec()));
    changes
}

/// An engine to open stores on.
#[derive(Clone, Copy, Debug)]
enum Engine {
    Sled,
    #[cfg(feature = "fjall")]
    Fjall,
}

impl Engine {
    fn open(self, path: &Path) -> Result<SledStore> {
        match self {
            Engine::Sled => SledStore::open(path, &SledOptions::default()),
            #[cfg(feature = "fjall")]
            Engine::Fjall => SledStore::open(path, &FjallOptions::default()),
        }
    }

    /// Opens, waiting while a store closed a moment ago still holds the directory's lock.
    fn reopen(self, path: &Path) -> SledStore {
        for _ in 0..100 {
            if let Ok(store) = self.open(path) {
                return store;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the store stayed locked for 2 s after closing");
    }
}

/// `#[tokio::test]`s running `$test(engine)` on each engine.
macro_rules! on_each_engine {
    ($($test:ident),* $(,)?) => {
        mod sled_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Engine::Sled).await;
                }
            )*
        }
        #[cfg(feature = "fjall")]
        mod fjall_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Engine::Fjall).await;
                }
            )*
        }
    };
}

on_each_engine!(
    a_failed_flush_stops_claims,
    a_failed_flush_stops_the_store,
    an_older_store_gets_its_inbox_indexed,
    an_older_store_gets_its_media_indexed,
    an_older_store_gets_its_unread_counts_indexed
);

/// A store written before the unread counts' running totals: its `(user, room, position)`
/// entries are replaced by the totals once, when it is opened, and count as before.
async fn an_older_store_gets_its_unread_counts_indexed(engine: Engine) {
    use crate::{NotificationStore, ReadUpTo};
    let dir = tempfile::tempdir().expect("a directory");
    let store = engine.open(dir.path()).expect("opens");
    let mut changes = ChangeSet::new();
    for (pos, room, thread, highlight) in [
        (3, "!a:x", None, true),
        (4, "!b:x", None, false),
        (5, "!a:x", Some("$t"), false),
        (6, "!a:x", None, false),
        (8, "!a:x", Some("$t"), true),
    ] {
        changes.notifications.push(crate::Notification {
            user_id: "@u:x".to_owned(),
            pos: StreamPos(pos),
            room_id: room.to_owned(),
            event_id: format!("$e{pos}"),
            thread_id: thread.map(str::to_owned),
            highlight,
            actions: b"[]".to_vec(),
            ts: 1,
        });
    }
    store.apply(changes).await.expect("acknowledged");
    let read = ReadUpTo { main: StreamPos(3), ..ReadUpTo::default() };
    let before = store.unread_counts("@u:x", "!a:x", &read).await.expect("counts");
    assert_eq!((before.main.notifications, before.threads["$t"].highlights), (1, 1));
    // As an older version left it: entries keyed `(user, room, position)` with no value, and
    // no mark.
    let mut older: Vec<(Vec<u8>, Option<::sled::IVec>)> = Vec::new();
    for entry in store.tree.scan_prefix([NOTIFICATION_ROOM]) {
        older.push((entry.expect("reads").0.to_vec(), None));
    }
    for (room, pos) in [("!a:x", 3u64), ("!b:x", 4), ("!a:x", 5), ("!a:x", 6), ("!a:x", 8)] {
        let key = crate::codec::Enc::table(NOTIFICATION_ROOM).str("@u:x").str(room).u64(pos);
        older.push((key.done(), Some(::sled::IVec::from(&b""[..]))));
    }
    older.push((meta(push::COUNTS_INDEXED), None));
    store.tree.apply(older).expect("writes");
    push::index_counts(&store.tree, || Ok(())).expect("indexes");
    assert_eq!(store.unread_counts("@u:x", "!a:x", &read).await.expect("counts"), before);
    let other = store.unread_counts("@u:x", "!b:x", &read).await.expect("counts");
    assert_eq!(other.main.notifications, 1);
    assert_eq!(store.tree.scan_prefix([NOTIFICATION_ROOM]).count(), 5, "the older entries gone");
    assert!(store.tree.get(meta(push::COUNTS_INDEXED)).expect("reads").is_some(), "once");
}

/// A store written before `MEDIA_INDEX` existed: its media records (some of the first
/// schema's, without hash, mark, quarantine or protection) are indexed by uploader and by
/// content once, when it is opened.
async fn an_older_store_gets_its_media_indexed(engine: Engine) {
    let dir = tempfile::tempdir().expect("a directory");
    let store = engine.open(dir.path()).expect("opens");
    let media = |key: &str, uploader: &str, sha256: Option<&str>| crate::Media {
        media_id: key.to_owned(),
        content_type: None,
        size: 3,
        upload_name: None,
        uploader: uploader.to_owned(),
        created_ts: 1,
        sha256: sha256.map(str::to_owned),
        authenticated: false,
        quarantined_by: None,
        safe_from_quarantine: false,
    };
    let mut changes = ChangeSet::new();
    changes.media = vec![media("m1", "@a:x", Some("h")), media("o.org/m2", "o.org", Some("h"))];
    store.apply(changes).await.expect("acknowledged");
    // As an older version left it: no index entries, no mark, and a record of the first
    // schema.
    let mut forget: Vec<(Vec<u8>, Option<::sled::IVec>)> = Vec::new();
    for entry in store.tree.scan_prefix([MEDIA_INDEX]) {
        forget.push((entry.expect("reads").0.to_vec(), None));
    }
    forget.push((meta(media::MEDIA_INDEX_BUILT), None));
    let first_schema =
        crate::codec::Enc::default().opt_str(None).u64(3).opt_str(None).str("@a:x").i64(1).done();
    forget.push((
        crate::codec::Enc::table(MEDIA).str("m0").done(),
        Some(::sled::IVec::from(first_schema)),
    ));
    store.tree.apply(forget).expect("writes");
    assert!(crate::MediaStore::media_of(&store, "@a:x", "", 10).await.expect("reads").is_empty());
    media::index_media(&store.tree, || Ok(())).expect("indexes");
    let of_a = crate::MediaStore::media_of(&store, "@a:x", "", 10).await.expect("reads");
    assert_eq!(of_a, vec![media("m0", "@a:x", None), media("m1", "@a:x", Some("h"))]);
    let of_h = crate::MediaStore::media_with_content(&store, "h", "", 10).await.expect("reads");
    let keys: Vec<&str> = of_h.iter().map(|m| m.media_id.as_str()).collect();
    assert_eq!(keys, vec!["m1", "o.org/m2"]);
    assert!(store.tree.get(meta(media::MEDIA_INDEX_BUILT)).expect("reads").is_some(), "once");
}

/// A store written before [`INBOX_LOG`] existed: its queued to-device messages are indexed
/// by position once, when it is opened.
async fn an_older_store_gets_its_inbox_indexed(engine: Engine) {
    let dir = tempfile::tempdir().expect("a directory");
    let store = engine.open(dir.path()).expect("opens");
    let mut changes = ChangeSet::new();
    for (device, n) in [("D", 1), ("E", 2), ("D", 3)] {
        changes.to_device.push(crate::NewToDevice {
            user_id: "@a:x".to_owned(),
            device_id: device.to_owned(),
            sender: "@b:x".to_owned(),
            kind: "m.test".to_owned(),
            content: format!("{{\"n\":{n}}}").into_bytes(),
        });
    }
    store.apply(changes).await.expect("acknowledged");
    let head = crate::RoomStore::stream_position(&store).await.expect("reads");
    let indexed =
        crate::InboxStore::to_device_range(&store, StreamPos(0), head, 10).await.expect("reads");
    assert_eq!(indexed.len(), 3);
    // As an older version left it: no log entries, no mark.
    let mut forget: Vec<(Vec<u8>, Option<::sled::IVec>)> = Vec::new();
    for entry in store.tree.scan_prefix([INBOX_LOG]) {
        forget.push((entry.expect("reads").0.to_vec(), None));
    }
    forget.push((meta(INBOX_LOG_BUILT), None));
    store.tree.apply(forget).expect("writes");
    assert!(
        crate::InboxStore::to_device_range(&store, StreamPos(0), head, 10)
            .await
            .expect("reads")
            .is_empty()
    );
    index_inbox(&store.tree, || Ok(())).expect("indexes");
    assert_eq!(
        crate::InboxStore::to_device_range(&store, StreamPos(0), head, 10).await.expect("reads"),
        indexed
    );
    assert!(store.tree.get(meta(INBOX_LOG_BUILT)).expect("reads").is_some(), "once");
}

/// After a failed flush, a claim is refused like any write.
async fn a_failed_flush_stops_claims(engine: Engine) {
    let dir = tempfile::tempdir().expect("a directory");
    let store = engine.open(dir.path()).expect("opens");
    let mut changes = ChangeSet::new();
    changes.one_time_keys = ["alg:1", "alg:2"]
        .map(|id| crate::OneTimeKey {
            user_id: "@a:x".to_owned(),
            device_id: "D".to_owned(),
            key_id: id.to_owned(),
            key: b"{}".to_vec(),
        })
        .to_vec();
    store.apply(changes).await.expect("acknowledged");

    store.flusher.fail_next_flush();
    let failed = store.claim_key("@a:x", "D", "alg").await.expect_err("the flush failed");
    assert_eq!(failed.kind(), ErrorKind::Unavailable);
    assert!(store.claim_key("@a:x", "D", "alg").await.is_err(), "nothing more is taken");
    assert!(crate::E2eeStore::one_time_key_counts(&store, "@a:x", "D").await.is_err());
}

#[test]
fn tables_are_distinct() {
    let distinct: BTreeSet<u8> = TABLES.into_iter().collect();
    assert_eq!(distinct.len(), TABLES.len());
}

/// A failed flush: its writer is told, and the store stops serving (fail-stop), so the
/// change it applied in memory is never read and nothing later is acknowledged; a
/// reopened store has what was acknowledged before.
async fn a_failed_flush_stops_the_store(engine: Engine) {
    let dir = tempfile::tempdir().expect("a directory");
    let store = engine.open(dir.path()).expect("opens");
    store.apply(account_data("x.before")).await.expect("acknowledged");

    store.flusher.fail_next_flush();
    let failed = store.apply(account_data("x.failed")).await.expect_err("the flush failed");
    assert_eq!(failed.kind(), ErrorKind::Unavailable);
    let read = store.account_data("@a:x", None, "x.failed").await;
    assert!(read.is_err(), "the unflushed change is not served: {read:?}");
    assert!(store.account_data("@a:x", None, "x.before").await.is_err());
    assert!(store.apply(account_data("x.after")).await.is_err(), "nothing more is taken");

    drop(store);
    let store = engine.reopen(dir.path());
    let before = store.account_data("@a:x", None, "x.before").await.expect("reads");
    assert!(before.is_some(), "what was acknowledged survives");
    assert!(store.account_data("@a:x", None, "x.after").await.expect("reads").is_none());
}
