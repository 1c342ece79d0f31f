//! The one integration-test binary of matrix-storage: the conformance suite on every backend,
//! reopening, the crash test and the model-based test.

mod crash;
mod model;
mod postgres;

/// Reopens a sled store just closed in this process: sled releases its file lock when its
/// background flusher lets go of the last handle, which can take a moment.
async fn reopen(path: &std::path::Path) -> matrix_storage::sled::SledStore {
    let options = matrix_storage::sled::SledOptions::default();
    for _ in 0..200 {
        match matrix_storage::sled::SledStore::open(path, &options) {
            Ok(store) => return store,
            Err(e) if e.kind() == matrix_storage::ErrorKind::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
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

/// The sled store keeps everything across a close and a reopen, and refuses a store written
/// by a newer schema.
mod sled_reopen {
    use matrix_storage::ErrorKind;
    use matrix_storage::sled::{SledOptions, SledStore};

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
                Err(e) if e.kind() == ErrorKind::Unavailable => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
        panic!("the store stayed locked for 2 s");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        drop(open_when_unlocked(dir.path()).expect("opens"));
        {
            let db = (0..200)
                .find_map(|_| {
                    sled::open(dir.path()).ok().or_else(|| {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        None
                    })
                })
                .expect("raw open");
            let tree = db.open_tree("matrix").expect("tree");
            let mut key = vec![b'M'];
            key.extend_from_slice(&6u32.to_be_bytes());
            key.extend_from_slice(b"schema");
            tree.insert(key, 99u64.to_be_bytes().to_vec()).expect("writes");
            db.flush().expect("flushes");
        }
        let err = open_when_unlocked(dir.path()).expect_err("newer schema");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("newer version"), "{err}");
    }
}
