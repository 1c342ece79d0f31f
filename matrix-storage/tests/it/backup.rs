//! Online backups of the embedded store (sled and fjall) while a writer goes on: the copy is
//! the store at one commit boundary, holding every change set acknowledged before the backup
//! began; its summary is the copy's; a directory holding anything is refused. The in-memory
//! store makes none (it says so).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use matrix_storage::sled::SledStore;
use matrix_storage::{ChangeSet, ErrorKind, Storage};

const USER: &str = "@writer:example.org";

/// Change set `i`: a new item `n{i}` and the item `last` overwritten with `i`.
fn write(i: u64) -> ChangeSet {
    let mut changes = ChangeSet::new();
    let content = i.to_string().into_bytes();
    changes.account_data.push((USER.into(), None, format!("n{i}"), content.clone()));
    changes.account_data.push((USER.into(), None, "last".into(), content));
    changes
}

/// What a store holds of the writer's change sets: the `n{i}` numbers, sorted, and `last`.
async fn written(store: &dyn Storage) -> (Vec<u64>, Option<u64>) {
    let items = store.all_account_data(USER).await.expect("reads");
    let number =
        |content: &[u8]| String::from_utf8_lossy(content).parse::<u64>().expect("a number");
    let mut numbers: Vec<u64> = items
        .iter()
        .filter_map(|item| item.kind.strip_prefix('n').map(|_| number(&item.content)))
        .collect();
    numbers.sort_unstable();
    let last = items.iter().find(|item| item.kind == "last").map(|item| number(&item.content));
    (numbers, last)
}

async fn backup_while_writing(open: impl Fn(&Path) -> SledStore) {
    let dir = tempfile::tempdir().expect("a directory");
    let store = Arc::new(open(&dir.path().join("live")));
    // Enough to copy that the copy takes a while.
    for first in (1..=4000u64).step_by(100) {
        let mut changes = ChangeSet::new();
        for i in first..first + 100 {
            changes.account_data.extend(write(i).account_data);
        }
        store.apply(changes).await.expect("applies");
    }
    let acknowledged = Arc::new(AtomicU64::new(4000));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (store, acknowledged, stop) = (store.clone(), acknowledged.clone(), stop.clone());
        async move {
            let mut i = acknowledged.load(Ordering::SeqCst);
            let mut slowest = std::time::Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let started = std::time::Instant::now();
                store.apply(write(i)).await.expect("applies");
                slowest = slowest.max(started.elapsed());
                acknowledged.store(i, Ordering::SeqCst);
            }
            slowest
        }
    });
    // Some writes first, so that the writer runs when the backup begins.
    while acknowledged.load(Ordering::SeqCst) < 4020 {
        tokio::task::yield_now().await;
    }
    let before = acknowledged.load(Ordering::SeqCst);
    let target = dir.path().join("copy");
    let started = std::time::Instant::now();
    let summary = store.backup(&target).await.expect("backs up");
    let took = started.elapsed();
    let after = acknowledged.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let slowest = writer.await.expect("the writer ended");

    let copy = open(&target);
    let (numbers, last) = written(&copy).await;
    let m = *numbers.last().expect("items");
    assert!(
        m >= before,
        "every change set acknowledged before the backup is there ({m} < {before})"
    );
    assert!(m <= after + 1, "nothing after the backup ended ({m} > {after})");
    assert_eq!(numbers, (1..=m).collect::<Vec<_>>(), "a prefix of the change sets, no gaps");
    assert_eq!(last, Some(m), "the overwritten item agrees with the prefix: one commit boundary");
    assert_eq!(copy.summary().await.expect("a summary"), summary);
    assert_eq!(summary.backend, copy.engine_name());
    eprintln!(
        "{}: {before} before, {after} after, the copy at {m}; the backup took {took:?}, the \
         slowest write meanwhile {slowest:?}",
        summary.backend
    );

    // A directory holding anything is refused; nothing in it changes.
    let error = store.backup(&target).await.expect_err("not empty");
    assert_eq!(error.kind(), ErrorKind::Conflict, "{error}");
    // The live store goes on, with everything.
    let (live, _) = written(store.as_ref()).await;
    assert!(live.len() as u64 >= m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_backup_while_writing_is_one_commit_boundary() {
    backup_while_writing(|path| {
        SledStore::open(path, &matrix_storage::sled::SledOptions::default()).expect("opens")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fjall_backup_while_writing_is_one_commit_boundary() {
    backup_while_writing(|path| {
        matrix_storage::fjall::FjallStore::open(
            path,
            &matrix_storage::fjall::FjallOptions::default(),
        )
        .expect("opens")
    })
    .await;
}

#[tokio::test]
async fn the_memory_store_makes_no_backup() {
    let dir = tempfile::tempdir().expect("a directory");
    let store = matrix_storage::memory::MemoryStore::new();
    let error = store.backup(dir.path()).await.expect_err("unsupported");
    assert_eq!(error.kind(), ErrorKind::Unsupported);
}
