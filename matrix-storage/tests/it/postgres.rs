//! The PostgreSQL backend: the conformance suite, reopening, and bad input (a newer schema, an
//! unreachable server, a second writer, lost connections). The server comes from
//! `DATABASE_URL`; without it these tests pass without running, and say so once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

async fn sqlx_connect(url: &str) -> sqlx::PgConnection {
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

#[tokio::test]
async fn a_second_writer_is_refused_while_the_first_is_open() {
    let Some(url) = database_url() else { return };
    let schema = fresh_schema();
    let first = open(&url, &schema).await;
    let mut options = PostgresOptions::new(&url).with_schema(&schema);
    options.lock_timeout = Duration::from_millis(200);
    let err = PostgresStore::open(&options).await.expect_err("the first holds the lock");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("another process"), "{err}");
    first.close().await;
    PostgresStore::open(&options).await.expect("opens once the first closed");
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
    // Cut every pool connection of this store (not the one holding the writer lock).
    let mut admin = sqlx_connect(&url).await;
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1 \
         AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
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
