//! The one integration-test binary of matrix-storage: the conformance suite on every backend,
//! reopening, the crash test and the model-based test.

mod backup;
mod crash;
mod model;
mod old_snapshots;
mod postgres;
mod purge;
mod shared;

/// Reopens a sled store just closed in this process: sled releases its file lock when its
/// background flusher lets go of the last handle, which can take a moment.
async fn reopen(path: &std::path::Path) -> matrix_storage::sled::SledStore {
    let options = matrix_storage::sled::SledOptions::default();
    for _ in 0..200 {
        match matrix_storage::sled::SledStore::open(path, &options) {
            Ok(store) => return store,
            Err(e) if e.kind() == matrix_storage::ErrorKind::Locked => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("reopening failed: {e}"),
        }
    }
    panic!("the store stayed locked for 2 s after closing");
}

/// [`reopen`], for code that is not async.
fn reopen_blocking(path: &std::path::Path) -> matrix_storage::sled::SledStore {
    let options = matrix_storage::sled::SledOptions::default();
    for _ in 0..200 {
        match matrix_storage::sled::SledStore::open(path, &options) {
            Ok(store) => return store,
            Err(e) if e.kind() == matrix_storage::ErrorKind::Locked => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("reopening failed: {e}"),
        }
    }
    panic!("the store stayed locked for 2 s after closing");
}

mod memory {
    matrix_storage::storage_conformance!(async {
        std::sync::Arc::new(matrix_storage::memory::MemoryStore::new())
            as std::sync::Arc<dyn matrix_storage::Storage>
    });
}

mod sled {
    matrix_storage::storage_conformance!(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = matrix_storage::sled::SledStore::open(
            dir.path(),
            &matrix_storage::sled::SledOptions::default(),
        )
        .expect("opens");
        // The directory lives as long as the test process; sled keeps files open.
        std::mem::forget(dir);
        std::sync::Arc::new(store) as std::sync::Arc<dyn matrix_storage::Storage>
    });
}

mod fjall {
    matrix_storage::storage_conformance!(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = matrix_storage::fjall::FjallStore::open(
            dir.path(),
            &matrix_storage::fjall::FjallOptions::default(),
        )
        .expect("opens");
        std::mem::forget(dir);
        std::sync::Arc::new(store) as std::sync::Arc<dyn matrix_storage::Storage>
    });
}

/// The fjall store keeps everything across a close and a reopen, and refuses a second
/// process.
mod fjall_reopen {
    use matrix_storage::ErrorKind;
    use matrix_storage::fjall::{FjallOptions, FjallStore};

    #[test]
    fn a_directory_in_use_is_said_so() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let _first = FjallStore::open(dir.path(), &FjallOptions::default()).expect("opens");
        let error = FjallStore::open(dir.path(), &FjallOptions::default()).expect_err("locked");
        assert_eq!(error.kind(), ErrorKind::Locked);
        assert!(error.to_string().contains("in use by another process"), "{error}");
    }

    /// A sled store copies into a new fjall store, which then holds what it held; a copy into
    /// a store that holds something is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sled_store_copies_into_fjall() {
        use matrix_storage::sled::{SledOptions, SledStore};
        use matrix_storage::{AccountStore, ChangeSet, Storage, User};
        let user = |id: &str| User {
            user_id: id.to_owned(),
            password_hash: None,
            admin: false,
            deactivated: false,
        };
        let (from, to) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let sled = SledStore::open(from.path(), &SledOptions::default()).expect("opens");
        let mut changes = ChangeSet::new();
        changes.new_users.push(user("@a:x"));
        sled.apply(changes).await.expect("applies");
        let copied = sled.copy_to(to.path(), &FjallOptions::default()).expect("copies");
        assert!(copied >= 2, "the user and the schema mark at least: {copied}");
        let fjall = FjallStore::open(to.path(), &FjallOptions::default()).expect("opens");
        assert_eq!(fjall.user("@a:x").await.expect("reads"), Some(user("@a:x")));
        let mut changes = ChangeSet::new();
        changes.new_users.push(user("@b:x"));
        fjall.apply(changes).await.expect("the copy takes writes");
        drop(fjall);
        let error = sled.copy_to(to.path(), &FjallOptions::default()).expect_err("not empty");
        assert_eq!(error.kind(), ErrorKind::Conflict);
        let fjall = FjallStore::open(to.path(), &FjallOptions::default()).expect("opens");
        assert!(fjall.user("@b:x").await.expect("reads").is_some(), "left as it was");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_keeps_everything() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().to_owned();
        matrix_storage::conformance::reopen_keeps_everything(|| {
            let path = path.clone();
            async move {
                let store = FjallStore::open(&path, &FjallOptions::default()).expect("reopens");
                std::sync::Arc::new(store) as std::sync::Arc<dyn matrix_storage::Storage>
            }
        })
        .await;
    }
}

/// Runs the state tests of the conformance suite on stores made by `$make`.
macro_rules! state_tests {
    ($make:expr) => {
        crate::state_tests!(@tests $make; state_deltas_and_lookups, long_delta_chains,
            removed_then_set_again, long_chains_across_compactions, branches_from_one_parent,
            a_parent_deep_in_a_chain);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: Option<std::sync::Arc<dyn matrix_storage::Storage>> = $make.await;
                if let Some(store) = store {
                    matrix_storage::conformance::$name(store).await;
                }
            }
        )*
    };
}
pub(crate) use state_tests;

/// The state tests on a sled store whose snapshot cache holds records of at most two entries:
/// the others are searched in place.
mod sled_small_cache {
    crate::state_tests!(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut options = matrix_storage::sled::SledOptions::default();
        options.snapshot_cache_entries = 16;
        let store = matrix_storage::sled::SledStore::open(dir.path(), &options).expect("opens");
        std::mem::forget(dir);
        Some(std::sync::Arc::new(store) as std::sync::Arc<dyn matrix_storage::Storage>)
    });
}

/// The sled store keeps everything across a close and a reopen, and refuses a store written
/// by a newer schema.
mod sled_reopen {
    use matrix_storage::ErrorKind;
    use matrix_storage::sled::{SledOptions, SledStore};

    /// A second store on a directory in use is refused with a message saying so.
    #[test]
    fn a_directory_in_use_is_said_so() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let _first = SledStore::open(dir.path(), &SledOptions::default()).expect("opens");
        let error = SledStore::open(dir.path(), &SledOptions::default()).expect_err("locked");
        assert_eq!(error.kind(), ErrorKind::Locked);
        assert!(error.to_string().contains("in use by another process"), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_keeps_everything() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().to_owned();
        matrix_storage::conformance::reopen_keeps_everything(|| {
            let path = path.clone();
            async move {
                std::sync::Arc::new(crate::reopen(&path).await)
                    as std::sync::Arc<dyn matrix_storage::Storage>
            }
        })
        .await;
    }

    /// Opens, retrying while a handle closed a moment ago still holds sled's file lock.
    fn open_when_unlocked(path: &std::path::Path) -> matrix_storage::Result<SledStore> {
        for _ in 0..200 {
            match SledStore::open(path, &SledOptions::default()) {
                Err(e) if e.kind() == ErrorKind::Locked => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
        panic!("the store stayed locked for 2 s");
    }

    /// Opens the store's tree with sled itself (once the store let go of its lock), runs
    /// `f` on it and flushes.
    fn raw<T>(path: &std::path::Path, f: impl FnOnce(&sled::Tree) -> T) -> T {
        let db = (0..200)
            .find_map(|_| {
                sled::open(path).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    None
                })
            })
            .expect("raw open");
        let out = f(&db.open_tree("matrix").expect("tree"));
        db.flush().expect("flushes");
        out
    }

    /// A raw key: the table byte, then each part length-prefixed (as the store encodes them).
    fn raw_key(table: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut key = vec![table];
        for part in parts {
            key.extend_from_slice(&(part.len() as u32).to_be_bytes());
            key.extend_from_slice(part);
        }
        key
    }

    fn schema_key() -> Vec<u8> {
        raw_key(b'M', &[b"schema"])
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        drop(open_when_unlocked(dir.path()).expect("opens"));
        raw(dir.path(), |tree| {
            tree.insert(schema_key(), 99u64.to_be_bytes().to_vec()).expect("writes");
        });
        let err = open_when_unlocked(dir.path()).expect_err("newer schema");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("newer version"), "{err}");
    }

    /// A store written by schema 1 (account data without stream positions) opens, reads as
    /// before, is marked with the current schema (3), and its old items take positions when
    /// rewritten.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn schema_1_store_opens() {
        use matrix_storage::{AccountDataStore, ChangeSet, RoomStore, Storage, StreamPos};
        let dir = tempfile::tempdir().expect("a temporary directory");
        raw(dir.path(), |tree| {
            tree.insert(schema_key(), 1u64.to_be_bytes().to_vec()).expect("writes");
            // ACCOUNT_DATA (user, no room, type) -> content, as schema 1 wrote it.
            let mut key = raw_key(b'A', &[b"@a:x"]);
            key.push(0);
            key.extend_from_slice(&raw_key(b'A', &[b"m.old"])[1..]);
            tree.insert(key, b"{\"old\":1}".to_vec()).expect("writes");
        });
        let store = crate::reopen(dir.path()).await;
        let old = store.account_data("@a:x", None, "m.old").await.expect("reads");
        assert_eq!(old.as_deref(), Some(&b"{\"old\":1}"[..]));
        assert_eq!(store.all_account_data("@a:x").await.expect("reads").len(), 1);
        let head = store.stream_position().await.expect("reads");
        assert_eq!(head, StreamPos(0));
        assert!(
            store.account_data_changes("@a:x", StreamPos(0), head).await.expect("reads").is_empty(),
            "items written before schema 2 have no position"
        );
        let mut changes = ChangeSet::new();
        changes.account_data = vec![("@a:x".into(), None, "m.old".into(), b"{}".to_vec())];
        store.apply(changes).await.expect("applies");
        let head = store.stream_position().await.expect("reads");
        let changed = store.account_data_changes("@a:x", StreamPos(0), head).await;
        assert_eq!(changed.expect("reads").len(), 1);
        drop(store);

        let schema = raw(dir.path(), |tree| tree.get(schema_key()).expect("reads"));
        assert_eq!(schema.as_deref(), Some(&3u64.to_be_bytes()[..]), "marked schema 3");
    }

    /// A store whose snapshots schema 2 wrote (delta chains, a whole copy every 64) reads
    /// them as they were, takes new (layered) snapshots on them, and keeps both across a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn schema_2_snapshots_read_and_grow() {
        let chains = crate::old_snapshots::OldChains::new();
        let dir = tempfile::tempdir().expect("a temporary directory");
        drop(open_when_unlocked(dir.path()).expect("opens"));
        raw(dir.path(), |tree| {
            let u64_value = |n: u64| n.to_be_bytes().to_vec();
            let with_u64 = |table: u8, n: u64| [&[table][..], &n.to_be_bytes()].concat();
            let mut writes = vec![
                (schema_key(), u64_value(2)),
                (raw_key(b'M', &[b"next_key"]), u64_value(chains.keys.len() as u64 + 1)),
                (raw_key(b'M', &[b"next_event"]), u64_value(chains.events.len() as u64 + 1)),
                (raw_key(b'M', &[b"next_snapshot"]), u64_value(chains.snapshots.len() as u64)),
            ];
            // Interned ids start at 1.
            for (i, (kind, state_key)) in chains.keys.iter().enumerate() {
                let parts: [&[u8]; 2] = [kind.as_bytes(), state_key.as_bytes()];
                writes.push((raw_key(b'K', &parts), u64_value(i as u64 + 1)));
                writes.push((with_u64(b'k', i as u64 + 1), raw_key(0, &parts)[1..].to_vec()));
            }
            for (i, event) in chains.events.iter().enumerate() {
                writes.push((raw_key(b'N', &[event.as_bytes()]), u64_value(i as u64 + 1)));
                writes.push((
                    with_u64(b'n', i as u64 + 1),
                    raw_key(0, &[event.as_bytes()])[1..].to_vec(),
                ));
            }
            for (id, snapshot) in chains.snapshots.iter().enumerate() {
                let mut value = vec![u8::from(snapshot.parent.is_some())];
                for n in
                    [snapshot.parent.unwrap_or(0), snapshot.depth, snapshot.entries.len() as u64]
                {
                    value.extend_from_slice(&n.to_be_bytes());
                }
                for &(key, event) in &snapshot.entries {
                    value.extend_from_slice(&(key + 1).to_be_bytes());
                    value.extend_from_slice(&event.map_or(0, |e| e + 1).to_be_bytes());
                }
                writes.push((with_u64(b'S', id as u64), value));
            }
            for (key, value) in writes {
                tree.insert(key, value).expect("writes");
            }
        });
        let store = crate::reopen(dir.path()).await;
        let grown = crate::old_snapshots::check_and_grow(&store, &chains).await;
        drop(store);

        let store = crate::reopen(dir.path()).await;
        for (id, state) in &grown {
            crate::old_snapshots::check(&store, *id, state).await;
        }
        for id in [0, 64, 70, 100, 150, 152] {
            crate::old_snapshots::check(&store, id, &chains.states[id as usize]).await;
        }
        drop(store);
        let schema = raw(dir.path(), |tree| tree.get(schema_key()).expect("reads"));
        assert_eq!(schema.as_deref(), Some(&3u64.to_be_bytes()[..]), "marked schema 3");
    }

    /// The stream head survives a reopen when the entries that took the last positions are
    /// gone (delivered messages, deleted account data): positions are never handed out twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_head_survives_without_its_entries() {
        use matrix_storage::{ChangeSet, NewToDevice, RoomStore, Storage, StreamPos};
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = crate::reopen(dir.path()).await;
        let mut changes = ChangeSet::new();
        changes.account_data = vec![("@a:x".into(), None, "t".into(), b"{}".to_vec())];
        changes.to_device = vec![NewToDevice {
            user_id: "@a:x".into(),
            device_id: "D".into(),
            sender: "@b:x".into(),
            kind: "m.room_key".into(),
            content: b"{}".to_vec(),
        }];
        store.apply(changes).await.expect("applies");
        let head = store.stream_position().await.expect("reads");
        assert_eq!(head, StreamPos(2));
        let mut changes = ChangeSet::new();
        changes.deleted_account_data = vec![("@a:x".into(), None, "t".into())];
        changes.to_device_delivered = vec![("@a:x".into(), "D".into(), head)];
        store.apply(changes).await.expect("applies");
        drop(store);

        let store = crate::reopen(dir.path()).await;
        assert_eq!(store.stream_position().await.expect("reads"), head);
        let mut changes = ChangeSet::new();
        changes.device_list_changes = vec!["@a:x".into()];
        store.apply(changes).await.expect("applies");
        assert_eq!(store.stream_position().await.expect("reads"), StreamPos(3));
    }

    /// A claimed key stays claimed across a reopen, and a fallback key stays used.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_survive_a_reopen() {
        use matrix_storage::{ChangeSet, E2eeStore, FallbackKey, OneTimeKey, Storage};
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = crate::reopen(dir.path()).await;
        let mut changes = ChangeSet::new();
        changes.one_time_keys = vec![OneTimeKey {
            user_id: "@a:x".into(),
            device_id: "D".into(),
            key_id: "alg:1".into(),
            key: b"{}".to_vec(),
        }];
        changes.fallback_keys = vec![FallbackKey {
            user_id: "@a:x".into(),
            device_id: "D".into(),
            algorithm: "alg".into(),
            key_id: "alg:F".into(),
            key: b"{}".to_vec(),
            used: false,
        }];
        store.apply(changes).await.expect("applies");
        let first = store.claim_key("@a:x", "D", "alg").await.expect("claims").expect("a key");
        assert!(!first.fallback);
        let second = store.claim_key("@a:x", "D", "alg").await.expect("claims").expect("a key");
        assert!(second.fallback);
        drop(store);

        let store = crate::reopen(dir.path()).await;
        assert!(store.one_time_key_counts("@a:x", "D").await.expect("reads").is_empty());
        assert!(store.fallback_keys("@a:x", "D").await.expect("reads")[0].used);
    }

    /// A record that does not decode is an error of kind Corrupt that says what it was, for
    /// reads and for claims; nothing panics.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_records_are_errors() {
        use matrix_storage::{E2eeStore, ReceiptStore, RoomStore, Storage};
        let dir = tempfile::tempdir().expect("a temporary directory");
        drop(crate::reopen(dir.path()).await);
        raw(dir.path(), |tree| {
            // FALLBACK_KEY (user, device, algorithm) -> a value too short.
            tree.insert(raw_key(b'w', &[b"@a:x", b"D", b"alg"]), vec![0, 0]).expect("writes");
            // RECEIPT_LOG (room, position) -> not a receipt key.
            let mut key = raw_key(b'c', &[b"!r"]);
            key.extend_from_slice(&1u64.to_be_bytes());
            tree.insert(key, vec![9]).expect("writes");
        });
        let store = crate::reopen(dir.path()).await;
        let err = store.fallback_keys("@a:x", "D").await.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("fallback key"), "{err}");
        let err = store.claim_key("@a:x", "D", "alg").await.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        let upto = matrix_storage::StreamPos(5);
        let err = store.receipts("!r", matrix_storage::StreamPos(0), upto).await;
        assert_eq!(err.expect_err("corrupt").kind(), ErrorKind::Corrupt);
        assert!(store.stream_position().await.is_ok(), "the store still serves");
    }

    /// Auth-chain index records that do not decode (links cut short, a chain past `u32`, an
    /// event id that is not UTF-8) or a key whose number is cut short are errors of kind
    /// Corrupt naming the entry; the entries before them still read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_auth_chain_records_are_errors() {
        use matrix_storage::{AuthChainEntry, ChangeSet, EventStore, Storage};
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = crate::reopen(dir.path()).await;
        let mut changes = ChangeSet::new();
        changes.auth_chain = vec![AuthChainEntry {
            room_id: "!r".into(),
            index: 0,
            event_id: "$0".into(),
            chain: 1,
            seq: 1,
            links: vec![(2, 3)],
        }];
        store.apply(changes).await.expect("applies");
        drop(store);
        // AUTH_CHAIN (room, number as u32) -> chain, seq, link count, links (LEB128), event id.
        let key = |room: &[u8], index: u32| {
            let mut key = raw_key(b'i', &[room]);
            key.extend_from_slice(&index.to_be_bytes());
            key
        };
        raw(dir.path(), |tree| {
            // Three links announced, one given.
            tree.insert(key(b"!r", 1), vec![1, 2, 3, 1, 1]).expect("writes");
            // A chain of 2^35.
            tree.insert(key(b"!s", 0), vec![0x80, 0x80, 0x80, 0x80, 0x80, 1, 1, 0])
                .expect("writes");
            // An event id that is not UTF-8.
            tree.insert(key(b"!t", 0), vec![1, 1, 0, 0xff]).expect("writes");
            // A number cut short.
            let mut short = raw_key(b'i', &[b"!u"]);
            short.extend_from_slice(&[0, 1]);
            tree.insert(short, vec![1, 1, 0]).expect("writes");
        });
        let store = crate::reopen(dir.path()).await;
        let err = store.auth_chain_index("!r", 0, 10).await.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("auth-chain index entry 1 of room !r"), "{err}");
        let before = store.auth_chain_index("!r", 0, 1).await.expect("the entry before reads");
        assert_eq!(before[0].links, vec![(2, 3)]);
        for room in ["!s", "!t"] {
            let err = store.auth_chain_index(room, 0, 10).await.expect_err("corrupt");
            assert_eq!(err.kind(), ErrorKind::Corrupt);
            assert!(err.to_string().contains(&format!("entry 0 of room {room}")), "{err}");
        }
        let err = store.auth_chain_index("!u", 0, 10).await.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("auth-chain index key of room !u"), "{err}");
    }

    /// Corrupt records of cross-signing signatures, backup versions and pushers are errors
    /// naming the record, for reads and for writes that read them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_user_data_records_are_errors() {
        use matrix_storage::{
            ChangeSet, CrossSigningStore, KeyBackupStore, NewBackupSession, PusherStore, Storage,
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        drop(crate::reopen(dir.path()).await);
        raw(dir.path(), |tree| {
            // KEY_SIGNATURE (target user, target key, signer, signer key) -> not a string.
            let key = raw_key(b'j', &[b"@a:x", b"D", b"@a:x", b"ed25519:S"]);
            tree.insert(key, vec![0, 0, 0, 9]).expect("writes");
            // BACKUP_VERSION (user, version 1) -> a value too short.
            let mut key = raw_key(b'B', &[b"@a:x"]);
            key.extend_from_slice(&1u64.to_be_bytes());
            tree.insert(key, vec![1, 2]).expect("writes");
            // PUSHER (user, app, pushkey) -> a value too short.
            tree.insert(raw_key(b'g', &[b"@a:x", b"app", b"key"]), vec![0]).expect("writes");
        });
        let store = crate::reopen(dir.path()).await;
        let err = store.key_signatures("@a:x").await.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("signature on keys of @a:x"), "{err}");
        let err = store.backup_version("@a:x", "1").await.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("backup version 1 of @a:x"), "{err}");
        let err = store.latest_backup_version("@a:x").await.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        let mut changes = ChangeSet::new();
        changes.backup_sessions.push(NewBackupSession {
            user_id: "@a:x".into(),
            version: "1".into(),
            room_id: "!r".into(),
            session_id: "s".into(),
            data: b"{}".to_vec(),
        });
        let err = store.apply(changes).await.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("backup version 1 of @a:x"), "{err}");
        let err = store.pushers("@a:x").await.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("pusher of @a:x"), "{err}");
        assert_eq!(store.all_pushers().await.expect_err("corrupt").kind(), ErrorKind::Corrupt);
        assert!(store.pushers("@b:x").await.expect("reads").is_empty(), "the store still serves");
    }
}
