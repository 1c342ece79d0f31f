//! The PostgreSQL backend: the conformance suite, reopening, and bad input (a newer schema, an
//! unreachable server, lost connections). Several stores on one database: `shared.rs`. The server comes from
//! `DATABASE_URL`; without it these tests pass without running, and say so once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use matrix_storage::postgres::{PostgresOptions, PostgresStore};
use matrix_storage::{ChangeSet, ErrorKind, RoomStore, Storage, User};

/// The server's URL, or `None` (said once on stderr, past the test harness's capture).
pub(crate) fn database_url() -> Option<String> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        SAID.call_once(|| {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the PostgreSQL tests of matrix-storage need DATABASE_URL \
                 (e.g. postgres://postgres@127.0.0.1:5432/test); it is not set"
            );
        });
    }
    url
}

/// A schema no other test uses.
pub(crate) fn fresh_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("t{}_{nanos}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

pub(crate) async fn open(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::open(&PostgresOptions::new(url).with_schema(schema))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at DATABASE_URL opens: {e}"))
}

mod conformance {
    matrix_storage::storage_conformance!(optional: async {
        let url = super::database_url()?;
        let store = super::open(&url, &super::fresh_schema()).await;
        Some(std::sync::Arc::new(store) as std::sync::Arc<dyn matrix_storage::Storage>)
    });
}

/// The state tests on a store whose snapshot cache holds records of at most two entries:
/// the others are read by queries.
mod small_cache {
    crate::state_tests!(async {
        let url = super::database_url()?;
        let mut options = super::PostgresOptions::new(url).with_schema(super::fresh_schema());
        options.snapshot_cache_entries = 16;
        let store = super::PostgresStore::open(&options).await.expect("opens");
        Some(std::sync::Arc::new(store) as std::sync::Arc<dyn matrix_storage::Storage>)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_everything() {
    let Some(url) = database_url() else { return };
    let schema = fresh_schema();
    matrix_storage::conformance::reopen_keeps_everything(|| {
        let (url, schema) = (url.clone(), schema.clone());
        async move { Arc::new(open(&url, &schema).await) as Arc<dyn Storage> }
    })
    .await;
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(url) = database_url() else { return };
    let schema = fresh_schema();
    let store = open(&url, &schema).await;
    store.close().await;
    let mut admin = sqlx_connect(&url).await;
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\"._sqlx_migrations (version, description, success, checksum, \
         execution_time) VALUES (99, 'from the future', true, '\\x00', 0)"
    ))
    .execute(&mut admin)
    .await
    .expect("pretends a newer version migrated");
    let err = PostgresStore::open(&PostgresOptions::new(&url).with_schema(&schema))
        .await
        .expect_err("a newer schema");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("newer version"), "{err}");
}

pub(crate) async fn sqlx_connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(url).await.expect("connects")
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let err = PostgresStore::open(&PostgresOptions::new("postgres://nobody@127.0.0.1:1/none"))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("connecting"), "{err}");
}

#[tokio::test]
async fn bad_options_are_refused() {
    let err = PostgresStore::open(&PostgresOptions::new("not a url")).await.expect_err("url");
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
    let err = PostgresStore::open(
        &PostgresOptions::new("postgres://127.0.0.1:1/x").with_schema("a\"; DROP TABLE x; --"),
    )
    .await
    .expect_err("schema name");
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
}

fn user(n: u32) -> ChangeSet {
    let mut changes = ChangeSet::new();
    changes.new_users.push(User {
        user_id: format!("@lost{n}:x"),
        password_hash: None,
        admin: false,
        deactivated: false,
    });
    changes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_are_errors_or_heal_and_lose_nothing() {
    let Some(url) = database_url() else { return };
    let schema = fresh_schema();
    let mut options = PostgresOptions::new(&url).with_schema(&schema);
    options.application_name = schema.clone();
    let store = PostgresStore::open(&options).await.expect("opens");
    store.apply(user(0)).await.expect("applies");
    // Cut every connection of this store (its pools' and its listener's).
    let mut admin = sqlx_connect(&url).await;
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1",
    )
    .bind(&schema)
    .fetch_one(&mut admin)
    .await
    .expect("terminates");
    assert!(cut >= 1, "no connection was cut");
    // Each write either fails with a clear error, or the pool reconnects and it lands.
    let mut acknowledged = vec![0];
    for n in 1..20 {
        match store.apply(user(n)).await {
            Ok(_) => acknowledged.push(n),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}"),
        }
    }
    assert!(acknowledged.len() > 10, "the pool did not heal: {acknowledged:?}");
    for n in acknowledged {
        let found = matrix_storage::AccountStore::user(&store, &format!("@lost{n}:x"))
            .await
            .expect("reads");
        assert!(found.is_some(), "acknowledged user {n} lost");
    }
    assert!(store.stream_position().await.is_ok());
}

/// A connection with the tables of `schema` on its search path.
pub(crate) async fn connect_in(url: &str, schema: &str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("the URL parses");
    sqlx::PgConnection::connect_with(&options.options([("search_path", schema)]))
        .await
        .expect("connects")
}

/// A database at schema 1 (written by the previous version) upgrades: what it held stays,
/// its account data (which has no stream positions) is in no range of changes, and the
/// stream continues after its events.
#[tokio::test]
async fn schema_1_upgrades() {
    use matrix_storage::{AccountDataStore as _, EventStore as _, StreamPos};
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use std::borrow::Cow;
    let Some(url) = database_url() else { return };
    let schema = fresh_schema();
    let mut admin = sqlx_connect(&url).await;
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\"")).execute(&mut admin).await.expect("schema");
    let mut old = connect_in(&url, &schema).await;
    let first = Migration::new(
        1,
        Cow::Borrowed("initial"),
        MigrationType::Simple,
        Cow::Borrowed(include_str!("../../migrations/0001_initial.sql")),
        false,
    );
    let migrator = Migrator {
        migrations: Cow::Owned(vec![first]),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    migrator.run(&mut old).await.expect("schema 1");
    for statement in [
        "INSERT INTO rooms VALUES ('!r', '12', NULL, '{}')",
        "INSERT INTO events VALUES ('$old', '!r', '\\x7b7d', 0, 5, NULL, '{}', '{}')",
        "INSERT INTO account_data VALUES ('@a:x', '', 'm.old', '\\x7b7d')",
    ] {
        sqlx::query(statement).execute(&mut old).await.expect("schema 1 data");
    }
    drop(old);

    let store = open(&url, &schema).await;
    assert!(store.event("$old").await.expect("reads").is_some());
    assert_eq!(store.stream_position().await.expect("reads"), StreamPos(5));
    let all = StreamPos(u64::MAX);
    assert_eq!(store.all_account_data("@a:x").await.expect("reads").len(), 1);
    assert!(store.account_data_changes("@a:x", StreamPos(0), all).await.expect("reads").is_empty());
    let mut changes = ChangeSet::new();
    changes.account_data = vec![("@a:x".into(), None, "m.new".into(), b"{}".to_vec())];
    store.apply(changes).await.expect("applies");
    assert_eq!(store.stream_position().await.expect("reads"), StreamPos(6));
    let changed = store.account_data_changes("@a:x", StreamPos(5), all).await.expect("reads");
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].kind, "m.new");
}

/// A database whose snapshots schema 2 wrote (delta chains, a whole copy every 64) is given
/// their stacks by migration 3, reads them as they were, takes new snapshots on them, and
/// reads both again from a store whose cache is too small for them (by queries).
#[tokio::test]
async fn schema_2_snapshots_upgrade() {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use std::borrow::Cow;
    let Some(url) = database_url() else { return };
    let chains = crate::old_snapshots::OldChains::new();
    let schema = fresh_schema();
    let mut admin = sqlx_connect(&url).await;
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\"")).execute(&mut admin).await.expect("schema");
    let mut old = connect_in(&url, &schema).await;
    let migration = |version, name, sql| {
        Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            false,
        )
    };
    let migrator = Migrator {
        migrations: Cow::Owned(vec![
            migration(1, "initial", include_str!("../../migrations/0001_initial.sql")),
            migration(2, "domains", include_str!("../../migrations/0002_domains.sql")),
        ]),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    migrator.run(&mut old).await.expect("schema 2");
    let mut key_ids = Vec::new();
    for (kind, state_key) in &chains.keys {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO state_keys (kind, state_key) VALUES ($1, $2) RETURNING id",
        )
        .bind(kind)
        .bind(state_key)
        .fetch_one(&mut old)
        .await
        .expect("a key");
        key_ids.push(id);
    }
    let mut nids = Vec::new();
    for event in &chains.events {
        let nid: i64 =
            sqlx::query_scalar("INSERT INTO event_nids (event_id) VALUES ($1) RETURNING nid")
                .bind(event)
                .fetch_one(&mut old)
                .await
                .expect("an event");
        nids.push(nid);
    }
    for (id, snapshot) in chains.snapshots.iter().enumerate() {
        sqlx::query("INSERT INTO snapshots (id, parent, depth) VALUES ($1, $2, $3)")
            .bind(id as i64)
            .bind(snapshot.parent.map(|p| p as i64))
            .bind(snapshot.depth as i32)
            .execute(&mut old)
            .await
            .expect("a snapshot");
        for &(key, event) in &snapshot.entries {
            sqlx::query("INSERT INTO snapshot_entries (snapshot, key, event) VALUES ($1, $2, $3)")
                .bind(id as i64)
                .bind(key_ids[key as usize])
                .bind(event.map(|e| nids[e as usize]))
                .execute(&mut old)
                .await
                .expect("an entry");
        }
    }
    sqlx::query("SELECT setval('snapshot_ids', $1)")
        .bind(chains.snapshots.len() as i64 - 1)
        .execute(&mut old)
        .await
        .expect("the sequence");
    drop(old);

    let store = open(&url, &schema).await;
    let grown = crate::old_snapshots::check_and_grow(&store, &chains).await;
    store.close().await;

    let mut options = PostgresOptions::new(&url).with_schema(&schema);
    options.snapshot_cache_entries = 16;
    let store = PostgresStore::open(&options).await.expect("reopens");
    for (id, state) in &grown {
        crate::old_snapshots::check(&store, *id, state).await;
    }
    for id in [0, 63, 64, 70, 100, 128, 150, 151, 152] {
        crate::old_snapshots::check(&store, id, &chains.states[id as usize]).await;
    }
}

/// Positions deleted at the head (delivered to-device messages, deleted receipts and account
/// data) are not handed out again after a reopen: a client may hold them in a sync token.
#[tokio::test]
async fn the_head_never_goes_back_after_deletions() {
    use matrix_storage::{NewToDevice, Receipt, ReceiptKey, StreamPos};
    let Some(url) = database_url() else { return };
    let schema = fresh_schema();
    let store = open(&url, &schema).await;
    let mut changes = ChangeSet::new();
    changes.to_device = vec![NewToDevice {
        user_id: "@a:x".into(),
        device_id: "D".into(),
        sender: "@b:x".into(),
        kind: "m.room_key".into(),
        content: b"{}".to_vec(),
    }];
    let key = ReceiptKey {
        room_id: "!r".into(),
        user_id: "@a:x".into(),
        kind: "m.read".into(),
        thread: None,
    };
    changes.receipts =
        vec![Receipt { key: key.clone(), event_id: "$e".into(), event_pos: StreamPos(1), ts: 1 }];
    changes.account_data = vec![("@a:x".into(), None, "t".into(), b"{}".to_vec())];
    store.apply(changes).await.expect("applies");
    let head = store.stream_position().await.expect("reads");
    assert_eq!(head, StreamPos(3));
    let mut changes = ChangeSet::new();
    changes.to_device_delivered = vec![("@a:x".into(), "D".into(), head)];
    changes.deleted_receipts = vec![key];
    changes.deleted_account_data = vec![("@a:x".into(), None, "t".into())];
    store.apply(changes).await.expect("applies");
    store.close().await;

    let store = open(&url, &schema).await;
    assert_eq!(store.stream_position().await.expect("reads"), head);
    let mut changes = ChangeSet::new();
    changes.device_list_changes = vec!["@a:x".into()];
    store.apply(changes).await.expect("applies");
    assert_eq!(store.stream_position().await.expect("reads"), StreamPos(head.0 + 1));
}

/// Of many concurrent change sets with one client transaction id, exactly one commits; the
/// others are conflicts and leave nothing; a refused change set records no id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_id_commits_once_under_concurrency() {
    use matrix_storage::{AccountStore as _, EventStore as _, TransactionId};
    let Some(url) = database_url() else { return };
    let store = Arc::new(open(&url, &fresh_schema()).await);
    let txn = |result: &str| TransactionId {
        user_id: "@a:x".into(),
        device_id: "D".into(),
        scope: "send".into(),
        txn_id: "t".into(),
        result: result.into(),
    };
    // Refused for another reason (an unknown user): the id is not recorded.
    let mut refused = user(100);
    refused.updated_users = refused.new_users.split_off(0);
    refused.transaction_ids = vec![txn("$refused")];
    let err = store.apply(refused).await.expect_err("no such user");
    assert_eq!(err.kind(), ErrorKind::MissingReference);
    assert_eq!(store.transaction_id("@a:x", "D", "send", "t").await.expect("reads"), None);

    let mut changes = ChangeSet::new();
    changes.rooms.push(matrix_storage::RoomChanges {
        room_id: "!r".into(),
        create_with_version: Some("12".into()),
        ..Default::default()
    });
    store.apply(changes).await.expect("creates the room");
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut changes = ChangeSet::new();
                changes.events = vec![matrix_storage::NewEvent {
                    event_id: format!("$e{n}"),
                    room_id: "!r".into(),
                    json: Arc::from(&b"{}"[..]),
                    status: matrix_storage::EventStatus::Accepted,
                    auth_events: Vec::new(),
                    prev_events: Vec::new(),
                    in_timeline: true,
                    state_after: None,
                }];
                changes.transaction_ids = vec![txn(&format!("$e{n}"))];
                store.apply(changes).await.map(|_| n)
            })
        })
        .collect();
    let mut committed = Vec::new();
    for task in tasks {
        match task.await.expect("joins") {
            Ok(n) => committed.push(n),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(committed.len(), 1, "{committed:?}");
    let winner = format!("$e{}", committed[0]);
    let recorded = store.transaction_id("@a:x", "D", "send", "t").await.expect("reads");
    assert_eq!(recorded.as_deref(), Some(winner.as_str()));
    for n in 0..16 {
        let stored = store.event(&format!("$e{n}")).await.expect("reads").is_some();
        assert_eq!(stored, n == committed[0], "event {n}");
    }
}

/// A change set that deletes a device and records transaction ids for it behaves as the
/// in-memory backend: ids stored before count (a reused one is a conflict), the device's old
/// ids are gone, the new ones recorded.
#[tokio::test]
async fn transaction_ids_of_a_device_deleted_in_the_same_change_set() {
    use matrix_storage::TransactionId;
    let Some(url) = database_url() else { return };
    let txn = |id: &str| TransactionId {
        user_id: "@a:x".into(),
        device_id: "D".into(),
        scope: "send".into(),
        txn_id: id.into(),
        result: format!("${id}"),
    };
    let postgres: Arc<dyn Storage> = Arc::new(open(&url, &fresh_schema()).await);
    let memory: Arc<dyn Storage> = Arc::new(matrix_storage::memory::MemoryStore::new());
    let mut outcomes = Vec::new();
    for store in [memory, postgres] {
        let mut changes = ChangeSet::new();
        changes.transaction_ids = vec![txn("old")];
        store.apply(changes).await.expect("applies");
        let mut reused = ChangeSet::new();
        reused.deleted_devices = vec![("@a:x".into(), "D".into())];
        reused.transaction_ids = vec![txn("old")];
        let reused = store.apply(reused).await.map(|_| ()).map_err(|e| e.kind());
        let mut changes = ChangeSet::new();
        changes.deleted_devices = vec![("@a:x".into(), "D".into())];
        changes.transaction_ids = vec![txn("new")];
        store.apply(changes).await.expect("applies");
        let mut ids = Vec::new();
        for id in ["old", "new"] {
            ids.push(store.transaction_id("@a:x", "D", "send", id).await.expect("reads"));
        }
        outcomes.push((reused, ids));
    }
    assert_eq!(outcomes[0], (Err(ErrorKind::Conflict), vec![None, Some("$new".to_owned())]));
    assert_eq!(outcomes[0], outcomes[1], "memory, then PostgreSQL");
}

/// Rows the types cannot hold are corrupt data, not a panic.
#[tokio::test]
async fn corrupt_rows_are_corrupt() {
    use matrix_storage::{MediaStore as _, ReceiptStore as _, StreamPos};
    let Some(url) = database_url() else { return };
    let schema = fresh_schema();
    let store = open(&url, &schema).await;
    let mut raw = connect_in(&url, &schema).await;
    for statement in [
        "INSERT INTO media_usage VALUES ('@a:x', -1)",
        "INSERT INTO receipts VALUES ('!r', '@a:x', 'm.read', '', '$e', 1, -1, 2)",
    ] {
        sqlx::query(statement).execute(&mut raw).await.expect("writes");
    }
    let err = store.media_usage("@a:x").await.expect_err("a negative quota");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let err = store.receipts("!r", StreamPos(0), StreamPos(5)).await.expect_err("a negative ts");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let err = store.user_receipts("!r", "@a:x").await.expect_err("a negative ts");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
}

#[tokio::test]
async fn corrupt_user_data_rows_are_corrupt() {
    use matrix_storage::{CrossSigningStore as _, KeyBackupStore as _};
    let Some(url) = database_url() else { return };
    let schema = fresh_schema();
    let store = open(&url, &schema).await;
    let mut raw = connect_in(&url, &schema).await;
    for statement in [
        "INSERT INTO cross_signing_keys VALUES ('@a:x', 'bogus', '\\x7b7d')",
        "INSERT INTO backup_versions VALUES ('@a:x', 1, 'alg', '\\x7b7d', -1, false)",
    ] {
        sqlx::query(statement).execute(&mut raw).await.expect("writes");
    }
    let err = store.cross_signing_keys("@a:x").await.expect_err("an unknown kind");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("@a:x") && err.to_string().contains("bogus"), "{err}");
    let err = store.backup_version("@a:x", "1").await.expect_err("a negative etag");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("backup version 1 of @a:x"), "{err}");
    let err = store.latest_backup_version("@a:x").await.expect_err("a negative etag");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
}
