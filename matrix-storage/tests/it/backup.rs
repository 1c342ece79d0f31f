//! Online backups of the embedded store (sled and fjall) and of PostgreSQL while a writer
//! goes on: the copy is the store at one commit boundary, holding every change set
//! acknowledged before the backup began; its summary is the copy's; a directory holding
//! anything is refused. A PostgreSQL backup restores into a new schema with everything in it
//! (the reopen test of the conformance suite, the reopened store being the restored copy),
//! and a restore into a schema holding data, or from a damaged backup, is refused without a
//! trace. The in-memory store makes none (it says so).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use matrix_storage::postgres::{PostgresOptions, PostgresStore};
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

/// The backup of `store` while a writer goes on, its copy opened by `copy_of`.
async fn backup_while_writing(
    store: Arc<dyn Storage>,
    copy_of: impl AsyncFn(&Path) -> Arc<dyn Storage>,
) {
    let dir = tempfile::tempdir().expect("a directory");
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

    let copy = copy_of(&target).await;
    let (numbers, last) = written(copy.as_ref()).await;
    let m = *numbers.last().expect("items");
    assert!(
        m >= before,
        "every change set acknowledged before the backup is there ({m} < {before})"
    );
    assert!(m <= after + 1, "nothing after the backup ended ({m} > {after})");
    assert_eq!(numbers, (1..=m).collect::<Vec<_>>(), "a prefix of the change sets, no gaps");
    assert_eq!(last, Some(m), "the overwritten item agrees with the prefix: one commit boundary");
    assert_eq!(copy.summary().await.expect("a summary"), summary);
    assert_eq!(summary.backend, copy.backend());
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

fn sled(path: &Path) -> Arc<dyn Storage> {
    Arc::new(SledStore::open(path, &matrix_storage::sled::SledOptions::default()).expect("opens"))
}

fn fjall(path: &Path) -> Arc<dyn Storage> {
    let options = matrix_storage::fjall::FjallOptions::default();
    Arc::new(matrix_storage::fjall::FjallStore::open(path, &options).expect("opens"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_backup_while_writing_is_one_commit_boundary() {
    let dir = tempfile::tempdir().expect("a directory");
    // The copy of a sled store is a fjall store (made by fjall's bulk load).
    backup_while_writing(sled(&dir.path().join("live")), async |path| fjall(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fjall_backup_while_writing_is_one_commit_boundary() {
    let dir = tempfile::tempdir().expect("a directory");
    backup_while_writing(fjall(&dir.path().join("live")), async |path| fjall(path)).await;
}

/// The PostgreSQL store in `schema`, made if new.
fn postgres_options(url: &str, schema: &str) -> PostgresOptions {
    PostgresOptions::new(url).with_schema(schema)
}

/// The backup in `dir` restored into a new schema, opened.
async fn postgres_restored(url: &str, dir: &Path) -> Arc<dyn Storage> {
    let options = postgres_options(url, &crate::postgres::fresh_schema());
    PostgresStore::restore(&options, dir).await.expect("restores");
    Arc::new(PostgresStore::open(&options).await.expect("the restored store opens"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backup_while_writing_is_one_snapshot() {
    let Some(url) = crate::postgres::database_url() else { return };
    let live = crate::postgres::open(&url, &crate::postgres::fresh_schema()).await;
    backup_while_writing(Arc::new(live), async |path| postgres_restored(&url, path).await).await;
}

/// The conformance suite's reopen test, where the store reopened is a backup of the first,
/// restored into a schema of its own: every kind of data, the stream position, and the
/// sequences (queue ids, snapshot ids) going on after the copy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_postgres_backup_keeps_everything() {
    let Some(url) = crate::postgres::database_url() else { return };
    let schema = crate::postgres::fresh_schema();
    let opened = std::sync::atomic::AtomicUsize::new(0);
    let backups = tempfile::tempdir().expect("a directory");
    matrix_storage::conformance::reopen_keeps_everything(|| {
        let (url, schema, first) =
            (url.clone(), schema.clone(), opened.fetch_add(1, Ordering::SeqCst) == 0);
        let dir = backups.path().join("copy");
        async move {
            let live = crate::postgres::open(&url, &schema).await;
            if first {
                return Arc::new(live) as Arc<dyn Storage>;
            }
            let summary = live.backup(&dir).await.expect("backs up");
            live.close().await;
            let copy = postgres_restored(&url, &dir).await;
            assert_eq!(copy.summary().await.expect("a summary"), summary);
            copy
        }
    })
    .await;
}

/// A restore refuses a schema that holds data, and a damaged backup (a table file cut
/// short, a list missing or edited); what it refuses leaves the target as it was, and a good
/// backup restores into it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restore_refuses_data_and_damage_and_leaves_no_trace() {
    let Some(url) = crate::postgres::database_url() else { return };
    let live = crate::postgres::open(&url, &crate::postgres::fresh_schema()).await;
    for i in 1..=50 {
        live.apply(write(i)).await.expect("applies");
    }
    let dir = tempfile::tempdir().expect("a directory");
    let good = dir.path().join("good");
    let summary = live.backup(&good).await.expect("backs up");

    // Into a schema holding data.
    let error =
        PostgresStore::restore(&postgres_options(&url, &crate::postgres::fresh_schema()), &good)
            .await;
    assert!(error.is_ok(), "a new schema takes it: {error:?}");
    let busy = crate::postgres::fresh_schema();
    let other = crate::postgres::open(&url, &busy).await;
    other.apply(write(1)).await.expect("applies");
    let error = PostgresStore::restore(&postgres_options(&url, &busy), &good)
        .await
        .expect_err("the schema holds data");
    assert_eq!(error.kind(), ErrorKind::Conflict, "{error}");
    assert_eq!(written(&other).await, (vec![1], Some(1)), "nothing of it changed");

    // Damaged copies of the good backup.
    let damaged = |name: &str, damage: &dyn Fn(&Path)| {
        let copy = dir.path().join(name);
        copy_dir(&good, &copy);
        damage(&copy);
        copy
    };
    let cut = damaged("cut", &|copy| {
        let file = copy.join("tables/account_data.copy");
        let bytes = std::fs::read(&file).expect("the table's file");
        std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("cut");
    });
    let unlisted = damaged("unlisted", &|copy| {
        std::fs::remove_file(copy.join("postgres-backup.txt")).expect("removed")
    });
    let edited = damaged("edited", &|copy| {
        let list = copy.join("postgres-backup.txt");
        let text = std::fs::read_to_string(&list).expect("the list");
        std::fs::write(&list, text.replace("table account_data ", "table account_data 7"))
            .expect("edited");
    });
    let target = postgres_options(&url, &crate::postgres::fresh_schema());
    for bad in [&cut, &unlisted, &edited] {
        let error = PostgresStore::restore(&target, bad).await.expect_err("damaged");
        assert_eq!(error.kind(), ErrorKind::Corrupt, "{}: {error}", bad.display());
    }
    // Nothing of the failed attempts stayed: the good backup goes into the same schema.
    PostgresStore::restore(&target, &good).await.expect("restores after the failures");
    let copy = PostgresStore::open(&target).await.expect("opens");
    assert_eq!(copy.summary().await.expect("a summary"), summary);
    assert_eq!(written(&copy).await, ((1..=50).collect(), Some(50)));
}

/// A backup of a store at an older schema version (as an older release made it) restores
/// with this one: the restore makes that version's tables, loads them, and opening the
/// store migrates them to the newest schema, with the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_postgres_backup_restores_and_is_migrated() {
    let Some(url) = crate::postgres::database_url() else { return };
    // Version 21: before the registration tokens' table (22) and what came after.
    let old = postgres_options(&url, &crate::postgres::fresh_schema()).at_schema_version(21);
    let live = PostgresStore::open(&old).await.expect("opens at version 21");
    for i in 1..=20 {
        live.apply(write(i)).await.expect("applies");
    }
    let dir = tempfile::tempdir().expect("a directory");
    let summary = live.backup(&dir.path().join("old")).await.expect("backs up");
    let list = std::fs::read_to_string(dir.path().join("old/postgres-backup.txt")).expect("a list");
    assert!(list.contains("\nschema 21\n") && !list.contains("registration_tokens"), "{list}");

    let target = postgres_options(&url, &crate::postgres::fresh_schema());
    PostgresStore::restore(&target, &dir.path().join("old")).await.expect("restores");
    let copy = PostgresStore::open(&target).await.expect("opens, migrating");
    assert_eq!(copy.summary().await.expect("a summary"), summary);
    assert_eq!(written(&copy).await, ((1..=20).collect(), Some(20)));
    // The newest schema's tables are there: a registration token is kept.
    let mut changes = ChangeSet::new();
    changes.registration_tokens.push(matrix_storage::RegistrationToken {
        token: "t".into(),
        uses_allowed: None,
        pending: 0,
        completed: 0,
        expiry_time: None,
    });
    copy.apply(changes).await.expect("the newest schema takes a registration token");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a directory");
    for entry in std::fs::read_dir(from).expect("lists") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copies");
        }
    }
}

#[tokio::test]
async fn the_memory_store_makes_no_backup() {
    let dir = tempfile::tempdir().expect("a directory");
    let store = matrix_storage::memory::MemoryStore::new();
    let error = store.backup(dir.path()).await.expect_err("unsupported");
    assert_eq!(error.kind(), ErrorKind::Unsupported);
}
