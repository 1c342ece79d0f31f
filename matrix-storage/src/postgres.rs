//! The PostgreSQL backend (sqlx): for larger deployments, and for several processes on one
//! database.
//!
//! **Schema:** versioned migrations (`migrations/` in this crate) run when the store opens;
//! a database that has migrations this build does not know was written by a newer version and
//! is refused ([`ErrorKind::Corrupt`]). [`PostgresOptions::schema`] puts the tables in a
//! schema of their own.
//!
//! **Durability:** a change set is one transaction; [`Storage::apply`] returns once `COMMIT`
//! returned, with `synchronous_commit = on` set on every connection, so an acknowledged change
//! set is in PostgreSQL's write-ahead log on disk. PostgreSQL groups the WAL flushes of
//! concurrent commits by itself. The transaction runs in a task of its own, so a caller that
//! stops waiting never leaves it half done.
//!
//! **Several processes** may serve one database (and schema) at once; nothing of the
//! store's correctness lives in one process's memory:
//! - *Stream order.* Positions come from the database: each change set that takes positions
//!   reserves a run of them in `stream_alloc` / `stream_reservations`, and
//!   [`RoomStore::stream_position`] is computed from PostgreSQL's own view of which of those
//!   transactions still run: one below the lowest position whose transaction may still
//!   commit, whichever process writes it (the rule and why it holds: `postgres/stream.rs`).
//!   A failed transaction leaves a gap, never a late event. A change set reserves one run
//!   for everything in it that takes a position: timeline events, account-data writes,
//!   device-list changes, to-device messages and receipts, in that order. Snapshot ids,
//!   interned ids and outbound queue ids come from sequences and rows too.
//! - *Rooms.* A change set that says what it built on ([`crate::RoomChanges::expected`])
//!   locks the room's row first and compares: another writer's change in between is an
//!   [`ErrorKind::Conflict`], and the writer rebuilds on what is there now.
//! - *Wake-ups.* After a change set that took positions committed, its store notifies the
//!   schema's channel (from a task, outside the transaction); each store listens on a connection of its own and publishes other processes' commits
//!   through [`Storage::foreign_writes`]; [`Storage::stream_changes`] says whom they concern.
//! - *Migrations* run under an advisory lock on the schema, so processes that start together
//!   migrate once ([`PostgresOptions::lock_timeout`] bounds the wait).
//!
//! **One-time keys** are claimed ([`Storage::claim_key`]) by one statement that locks the
//! first key with `FOR UPDATE SKIP LOCKED` and deletes it: each key is handed out once, also
//! when several processes share the database, and the claim is committed when it returns.
//! A change set that records a client transaction id already stored fails on the table's
//! primary key ([`ErrorKind::Conflict`]) and rolls back whole.
//!
//! **State snapshots** are the layered records of `layers.rs` over interned ids, as in
//! the sled backend (`postgres/snapshots.rs`), read through a cache of decoded records.

mod apply;
mod apply_domains;
mod auth_chain;
mod backfill;
mod backup;
mod domains;
mod moderation;
mod presence;
mod purge;
mod push;
mod registration_tokens;
mod relations;
mod scheduled;
mod search;
mod snapshots;
mod stream;
mod user_data;
mod user_directory;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Row};

use self::stream::SharedStream;
use crate::layers::LayerCache;
use crate::{
    AccountStore, Applied, AuthChainEntry, ChangeSet, ClaimedKey, DehydratedDevice, Device,
    Direction, ErrorKind, EventStatus, EventStore, KeyStore, OurKey, OutboundItem, Profile,
    QueueStore, RemoteKey, Result, RetryState, RoomInfo, RoomStore, SnapshotId, StateEntry,
    StateStore, Storage, StorageError, StoredEvent, StreamChanges, StreamItem, StreamPos,
    TokenOwner, User,
};

/// The migrations, in order: `(version, description, SQL)`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "domains", include_str!("../migrations/0002_domains.sql")),
    (3, "layers", include_str!("../migrations/0003_layers.sql")),
    (4, "user data", include_str!("../migrations/0004_user_data.sql")),
    (5, "shared", include_str!("../migrations/0005_shared.sql")),
    (6, "backfill", include_str!("../migrations/0006_backfill.sql")),
    (7, "auth chain", include_str!("../migrations/0007_auth_chain.sql")),
    (8, "presence", include_str!("../migrations/0008_presence.sql")),
    (9, "media", include_str!("../migrations/0009_media.sql")),
    (10, "dehydrated devices", include_str!("../migrations/0010_dehydrated.sql")),
    (11, "push", include_str!("../migrations/0011_push.sql")),
    (12, "relations", include_str!("../migrations/0012_relations.sql")),
    (13, "user directory", include_str!("../migrations/0013_user_directory.sql")),
    (15, "search and reports", include_str!("../migrations/0015_search.sql")),
    (17, "scheduled", include_str!("../migrations/0017_scheduled.sql")),
    (18, "appservice cursors", include_str!("../migrations/0018_appservice.sql")),
    (20, "search postings", include_str!("../migrations/0020_search_postings.sql")),
    (21, "appservice room lists", include_str!("../migrations/0021_appservice_room_list.sql")),
    (22, "registration tokens", include_str!("../migrations/0022_registration_tokens.sql")),
    (23, "media administration", include_str!("../migrations/0023_media_admin.sql")),
    (24, "user moderation", include_str!("../migrations/0024_moderation.sql")),
];

/// The first key of our migration lock ("MXST"); the second is a hash of the schema.
const LOCK_SPACE: i32 = 0x4d58_5354;

/// Options of the PostgreSQL backend.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// A connection URL: `postgres://user@host:port/database` (or `host=/run/postgresql` for
    /// a socket).
    pub url: String,
    /// The schema for the tables (created if missing); `None` uses the server's search path.
    /// Only ASCII letters, digits and `_`.
    pub schema: Option<String>,
    /// The most connections the pool opens.
    pub max_connections: u32,
    /// Connections the pool keeps open when idle.
    pub min_connections: u32,
    /// How long a query waits for a free connection before it fails.
    pub acquire_timeout: Duration,
    /// How long opening waits for another store that is creating or migrating the same
    /// schema (or for a store of an earlier version, which held this lock while open).
    pub lock_timeout: Duration,
    /// The `application_name` of the store's connections, as `pg_stat_activity` shows them.
    pub application_name: String,
    /// How many decoded state entries the snapshot cache keeps (about 50 bytes each, plus the
    /// names they share), and how many key and event names.
    pub snapshot_cache_entries: u64,
    /// The schema version to migrate to, for tests of older schemas (see
    /// [`PostgresOptions::at_schema_version`]); `None`: the newest.
    schema_version: Option<i64>,
}

impl PostgresOptions {
    /// Options for the database at `url`, with default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            schema: None,
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(10),
            application_name: "matrix-storage".to_owned(),
            snapshot_cache_entries: 1 << 20,
            schema_version: None,
        }
    }

    /// The same options migrating only up to schema version `version` (a migration's
    /// number): a store as an older release left it, for tests of what a newer release does
    /// with it (a restore of an older backup). Not for use in a server: this build's code
    /// expects its newest schema.
    #[doc(hidden)]
    pub fn at_schema_version(mut self, version: i64) -> Self {
        self.schema_version = Some(version);
        self
    }

    /// The same options with the tables in `schema`.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Positions, the head, and wake-ups between processes.
    stream: Arc<SharedStream>,
    /// Decoded snapshot records.
    snapshots: Arc<LayerCache>,
}

/// Maps a sqlx error; `doing` says what failed ("reading an event").
pub(crate) fn db_error(doing: &str, error: sqlx::Error) -> StorageError {
    let kind = match &error {
        sqlx::Error::Database(e) => match e.code().as_deref() {
            Some("23505") => ErrorKind::Conflict,
            Some("23503") => ErrorKind::MissingReference,
            // Undefined table or column: not the schema this build reads.
            Some("42P01" | "42703") => ErrorKind::Corrupt,
            _ => ErrorKind::Unavailable,
        },
        sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => ErrorKind::Corrupt,
        _ => ErrorKind::Unavailable,
    };
    StorageError::with_source(kind, format!("PostgreSQL, {doing}: {error}"), error)
}

/// `?` for sqlx results, naming what was being done.
pub(crate) trait Doing<T> {
    fn doing(self, what: &str) -> Result<T>;
}

impl<T> Doing<T> for std::result::Result<T, sqlx::Error> {
    fn doing(self, what: &str) -> Result<T> {
        self.map_err(|e| db_error(what, e))
    }
}

/// The migrations built in, up to `upto` (a restore first makes the schema of its backup).
#[derive(Debug)]
struct Embedded {
    upto: i64,
}

/// The newest schema version this build knows.
fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<
        Box<
            dyn Future<Output = std::result::Result<Vec<Migration>, sqlx::error::BoxDynError>>
                + Send,
        >,
    > {
        let upto = self.upto;
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .filter(|m| m.0 <= upto)
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

fn migration_error(error: sqlx::migrate::MigrateError) -> StorageError {
    use sqlx::migrate::MigrateError;
    match error {
        MigrateError::VersionMissing(version) => StorageError::new(
            ErrorKind::Corrupt,
            format!(
                "the database was written by a newer version (migration {version} is unknown to \
                 this build, which knows up to {})",
                latest_version()
            ),
        ),
        MigrateError::VersionMismatch(version) => StorageError::new(
            ErrorKind::Corrupt,
            format!("migration {version} in the database differs from this build's"),
        ),
        MigrateError::Dirty(version) => StorageError::new(
            ErrorKind::Corrupt,
            format!("migration {version} failed part-way earlier; repair the database first"),
        ),
        MigrateError::Execute(e) => db_error("migrating the schema", e),
        other => StorageError::with_source(ErrorKind::Unavailable, "migrating the schema", other),
    }
}

fn invalid(message: String) -> StorageError {
    StorageError::new(ErrorKind::InvalidOptions, message)
}

/// How the store's connections connect: `options`' URL, with commits on disk and the tables
/// in `options.schema` (checked) if set.
fn connect_options(options: &PostgresOptions) -> Result<PgConnectOptions> {
    let connect: PgConnectOptions = options
        .url
        .parse()
        .map_err(|e| invalid(format!("the PostgreSQL URL does not parse: {e}")))?;
    // Acknowledged means on disk, whatever the server's default.
    let mut settings = vec![("synchronous_commit", "on".to_owned())];
    if let Some(schema) = &options.schema {
        if schema.is_empty() || !schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid(format!(
                "the schema name {schema:?} is not made of ASCII letters, digits and _"
            )));
        }
        settings.push(("search_path", schema.clone()));
    }
    Ok(connect
        .options(settings.iter().map(|(k, v)| (*k, v.as_str())))
        .application_name(&options.application_name))
}

/// The schema the store's tables are in: `options.schema`, or the connection's current one.
async fn schema_name(connection: &mut PgConnection, options: &PostgresOptions) -> Result<String> {
    match &options.schema {
        Some(schema) => Ok(schema.clone()),
        None => sqlx::query_scalar("SELECT COALESCE(current_schema(), 'public')")
            .fetch_one(connection)
            .await
            .doing("reading the schema"),
    }
}

impl PostgresStore {
    /// Connects, creates the schema if asked and runs the migrations (under a lock, so that
    /// processes starting together migrate once). An unreachable server is
    /// [`ErrorKind::Unavailable`]; a database written by a newer version is
    /// [`ErrorKind::Corrupt`]; bad options are [`ErrorKind::InvalidOptions`].
    pub async fn open(options: &PostgresOptions) -> Result<Self> {
        let connect = connect_options(options)?;
        let mut admin = PgConnection::connect_with(&connect).await.doing("connecting")?;
        let schema = schema_name(&mut admin, options).await?;
        take_lock(&mut admin, &schema, options.lock_timeout).await?;
        let prepared = prepare(&mut admin, options).await;
        // Released whatever happened (closing the session would release it too).
        let _ = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(LOCK_SPACE)
            .bind(&schema)
            .execute(&mut admin)
            .await;
        let (instance, head) = prepared?;
        let _ = admin.close().await;

        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(options.min_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .doing("connecting the pool")?;
        // Reservations (and notifications) are committed on connections of their own (see
        // `postgres/stream.rs`).
        let reserve = PgPoolOptions::new()
            .max_connections(3)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            // No ping before each use (one round trip less per change set): a connection
            // found broken fails its one statement, and the change set with it.
            .test_before_acquire(false)
            .connect_lazy_with(connect.clone().options([("synchronous_commit", "off")]));
        let listen = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        let channel: String = format!("mxst_{schema}").chars().take(63).collect();
        let stream = SharedStream::start(reserve, listen, instance, channel, head).await?;
        Ok(PostgresStore {
            pool,
            stream,
            snapshots: Arc::new(LayerCache::new(options.snapshot_cache_entries)),
        })
    }

    /// Closes the pools and stops listening to other processes.
    pub async fn close(&self) {
        self.stream.close().await;
        self.pool.close().await;
    }
}

/// Under the migration lock: creates the schema, migrates, forgets the reservations of
/// transactions that ended (another process's crash leaves some), and returns this store's
/// instance id and the stream head.
async fn prepare(admin: &mut PgConnection, options: &PostgresOptions) -> Result<(i64, u64)> {
    migrate(admin, options, options.schema_version.unwrap_or_else(latest_version)).await?;
    stream::forget_finished(admin).await?;
    let instance: i64 = sqlx::query_scalar("SELECT nextval('store_instances')")
        .fetch_one(&mut *admin)
        .await
        .doing("numbering the store")?;
    let head = stream::head(&mut *admin).await?;
    Ok((instance, head))
}

/// Creates the schema if asked and runs the migrations up to `upto` (under the caller's lock).
async fn migrate(admin: &mut PgConnection, options: &PostgresOptions, upto: i64) -> Result<()> {
    if let Some(schema) = &options.schema {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut *admin)
            .await
            .doing("creating the schema")?;
    }
    let mut migrator = Migrator::new(Embedded { upto }).await.map_err(migration_error)?;
    // Our own lock keeps other stores of this schema out while it migrates.
    migrator.set_locking(false);
    migrator.run(&mut *admin).await.map_err(migration_error)
}

/// Takes the session's advisory lock on `schema`, waiting up to `timeout`.
async fn take_lock(connection: &mut PgConnection, schema: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_SPACE)
            .bind(schema)
            .fetch_one(&mut *connection)
            .await
            .doing("taking the migration lock")?;
        if locked {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StorageError::new(
                ErrorKind::Unavailable,
                "another process has been creating or migrating this PostgreSQL schema for \
                 too long, or a process of an earlier version (which kept the database to \
                 itself) still has it open: stop it before this version migrates the schema",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| StorageError::new(ErrorKind::Corrupt, "a negative id"))
}

fn status_code(status: EventStatus) -> i16 {
    match status {
        EventStatus::Accepted => 0,
        EventStatus::Outlier => 1,
        EventStatus::Rejected => 2,
        EventStatus::SoftFailed => 3,
    }
}

fn status_of(code: i16) -> Result<EventStatus> {
    Ok(match code {
        0 => EventStatus::Accepted,
        1 => EventStatus::Outlier,
        2 => EventStatus::Rejected,
        3 => EventStatus::SoftFailed,
        _ => return Err(StorageError::new(ErrorKind::Corrupt, "unknown event status")),
    })
}

fn stream_item(row: &PgRow) -> Result<StreamItem> {
    Ok(StreamItem {
        pos: StreamPos(to_u64(row.try_get(0).doing("reading the stream")?)?),
        room_id: row.try_get(1).doing("reading the stream")?,
        event_id: row.try_get(2).doing("reading the stream")?,
    })
}

fn pairs(rows: Vec<PgRow>, doing: &str) -> Result<Vec<(String, String)>> {
    rows.iter()
        .map(|row| Ok((row.try_get(0).doing(doing)?, row.try_get(1).doing(doing)?)))
        .collect()
}

#[async_trait]
impl Storage for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    /// One snapshot of the database copied table by table, writers going on (see
    /// `postgres/backup.rs`).
    async fn backup(&self, dir: &std::path::Path) -> Result<crate::StoreSummary> {
        self.backup_to(dir).await
    }

    async fn summary(&self) -> Result<crate::StoreSummary> {
        self.summarize().await
    }

    async fn apply(&self, changes: ChangeSet) -> Result<Applied> {
        // In a task of its own: a caller that stops waiting cannot cut the transaction short
        // between its commit and the release of its stream positions.
        let store = self.clone();
        tokio::spawn(async move { apply::apply(&store.pool, &store.stream, changes).await })
            .await
            .map_err(|e| {
            StorageError::with_source(ErrorKind::Unavailable, "the writing task failed", e)
        })?
    }

    async fn purge_room(&self, room_id: &str) -> Result<Vec<String>> {
        self.purge(room_id).await
    }

    async fn purge_events(&self, room_id: &str, event_ids: &[String]) -> Result<usize> {
        self.purge_some(room_id, event_ids).await
    }

    async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<ClaimedKey>> {
        domains::claim_key_task(self, user_id, device_id, algorithm).await
    }

    fn foreign_writes(&self) -> Option<tokio::sync::watch::Receiver<StreamPos>> {
        Some(self.stream.foreign_writes())
    }

    async fn stream_changes(&self, after: StreamPos, upto: StreamPos) -> Result<StreamChanges> {
        const DOING: &str = "reading what changed on the stream";
        let mut changes = StreamChanges::default();
        if upto <= after {
            return Ok(changes);
        }
        let (after, upto) = (to_i64(after.0), to_i64(upto.0));
        changes.receipt_rooms = sqlx::query_scalar(
            "SELECT DISTINCT room_id COLLATE \"C\" FROM receipts WHERE pos > $1 AND pos <= $2 \
             ORDER BY 1",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        changes.users = sqlx::query_scalar(
            "SELECT user_id COLLATE \"C\" FROM account_data WHERE pos > $1 AND pos <= $2 \
             UNION SELECT user_id COLLATE \"C\" FROM to_device WHERE pos > $1 AND pos <= $2 \
             ORDER BY 1",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        Ok(changes)
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM events WHERE event_id = $1",
            auth_chain::EVENT_COLUMNS
        ))
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading an event")?;
        row.as_ref().map(auth_chain::stored_event).transpose()
    }

    async fn auth_chain(&self, event_ids: &[&str]) -> Result<Vec<String>> {
        let ids: Vec<&str> = event_ids.to_vec();
        sqlx::query_scalar(
            "WITH RECURSIVE chain(id) AS ( \
                SELECT unnest(auth_events) FROM events WHERE event_id = ANY($1) \
                UNION \
                SELECT unnest(e.auth_events) FROM chain c JOIN events e ON e.event_id = c.id \
            ) SELECT id FROM chain ORDER BY id COLLATE \"C\"",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .doing("walking an auth chain")
    }

    async fn redaction_of(&self, event_id: &str) -> Result<Option<String>> {
        domains::redaction_of(&self.pool, event_id).await
    }

    async fn events(&self, event_ids: &[&str]) -> Result<Vec<StoredEvent>> {
        auth_chain::events(&self.pool, event_ids).await
    }

    async fn auth_chain_index(
        &self,
        room_id: &str,
        from: u32,
        limit: usize,
    ) -> Result<Vec<AuthChainEntry>> {
        auth_chain::range(&self.pool, room_id, from, limit).await
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    async fn state_get(
        &self,
        snapshot: SnapshotId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<String>> {
        self.lookup(snapshot.0, kind, state_key).await
    }

    async fn state_full(&self, snapshot: SnapshotId) -> Result<Vec<StateEntry>> {
        self.full_state(snapshot.0).await
    }
}

#[async_trait]
impl RoomStore for PostgresStore {
    async fn room(&self, room_id: &str) -> Result<Option<RoomInfo>> {
        const DOING: &str = "reading a room";
        let row = sqlx::query(
            "SELECT version, current_state, forward_extremities FROM rooms WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await
        .doing(DOING)?;
        let Some(row) = row else { return Ok(None) };
        let state: Option<i64> = row.try_get(1).doing(DOING)?;
        let mut forward_extremities: Vec<String> = row.try_get(2).doing(DOING)?;
        forward_extremities.sort();
        Ok(Some(RoomInfo {
            version: row.try_get(0).doing(DOING)?,
            current_state: state.map(to_u64).transpose()?.map(SnapshotId),
            forward_extremities,
        }))
    }

    async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT membership FROM memberships WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .doing("reading a membership")
    }

    async fn rooms_of_user(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        const DOING: &str = "reading a user's rooms";
        let rows = sqlx::query(
            "SELECT room_id, membership FROM memberships WHERE user_id = $1 \
             ORDER BY room_id COLLATE \"C\"",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        pairs(rows, DOING)
    }

    async fn members(&self, room_id: &str) -> Result<Vec<(String, String)>> {
        const DOING: &str = "reading a room's members";
        let rows = sqlx::query(
            "SELECT user_id, membership FROM memberships WHERE room_id = $1 \
             ORDER BY user_id COLLATE \"C\"",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        pairs(rows, DOING)
    }

    async fn stream_position(&self) -> Result<StreamPos> {
        Ok(StreamPos(stream::head(&self.pool).await?))
    }

    async fn forgotten(&self, room_id: &str, user_id: &str) -> Result<bool> {
        domains::forgotten(&self.pool, room_id, user_id).await
    }

    async fn stream_range(
        &self,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<StreamItem>> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT stream, room_id, event_id FROM events WHERE stream > $1 AND stream <= $2 \
             ORDER BY stream LIMIT $3",
        )
        .bind(to_i64(after.0))
        .bind(to_i64(upto.0))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .doing("reading the stream")?;
        rows.iter().map(stream_item).collect()
    }

    async fn timeline(
        &self,
        room_id: &str,
        from: StreamPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<StreamItem>> {
        let query = match direction {
            Direction::Backwards => {
                "SELECT stream, room_id, event_id FROM events \
                 WHERE room_id = $1 AND stream < $2 ORDER BY stream DESC LIMIT $3"
            }
            Direction::Forwards => {
                "SELECT stream, room_id, event_id FROM events \
                 WHERE room_id = $1 AND stream > $2 ORDER BY stream LIMIT $3"
            }
        };
        let rows = sqlx::query(query)
            .bind(room_id)
            .bind(to_i64(from.0))
            .bind(to_i64(limit as u64))
            .fetch_all(&self.pool)
            .await
            .doing("reading a timeline")?;
        rows.iter().map(stream_item).collect()
    }

    async fn backfilled(
        &self,
        room_id: &str,
        from: crate::BackfillPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<crate::BackfillItem>> {
        backfill::backfilled(&self.pool, room_id, from, direction, limit).await
    }

    async fn backfill_position(&self, event_id: &str) -> Result<Option<crate::BackfillPos>> {
        backfill::position(&self.pool, event_id).await
    }

    async fn room_ids(&self, after: &str, limit: usize) -> Result<Vec<String>> {
        const DOING: &str = "listing rooms";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        sqlx::query_scalar(
            "SELECT room_id FROM rooms WHERE room_id COLLATE \"C\" > $1 \
             ORDER BY room_id COLLATE \"C\" LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)
    }
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn users(&self, after: &str, limit: usize) -> Result<Vec<User>> {
        const DOING: &str = "listing users";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT user_id, password_hash, admin, deactivated FROM users \
             WHERE user_id COLLATE \"C\" > $1 ORDER BY user_id COLLATE \"C\" LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(User {
                    user_id: row.try_get(0).doing(DOING)?,
                    password_hash: row.try_get(1).doing(DOING)?,
                    admin: row.try_get(2).doing(DOING)?,
                    deactivated: row.try_get(3).doing(DOING)?,
                })
            })
            .collect()
    }
    async fn user(&self, user_id: &str) -> Result<Option<User>> {
        const DOING: &str = "reading a user";
        let row =
            sqlx::query("SELECT password_hash, admin, deactivated FROM users WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .doing(DOING)?;
        row.map(|row| {
            Ok(User {
                user_id: user_id.to_owned(),
                password_hash: row.try_get(0).doing(DOING)?,
                admin: row.try_get(1).doing(DOING)?,
                deactivated: row.try_get(2).doing(DOING)?,
            })
        })
        .transpose()
    }

    async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>> {
        let name: Option<Option<String>> = sqlx::query_scalar(
            "SELECT display_name FROM devices WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a device")?;
        Ok(name.map(|display_name| Device {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            display_name,
        }))
    }

    async fn devices(&self, user_id: &str) -> Result<Vec<Device>> {
        const DOING: &str = "reading devices";
        let rows = sqlx::query(
            "SELECT device_id, display_name FROM devices WHERE user_id = $1 \
             ORDER BY device_id COLLATE \"C\"",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(Device {
                    user_id: user_id.to_owned(),
                    device_id: row.try_get(0).doing(DOING)?,
                    display_name: row.try_get(1).doing(DOING)?,
                })
            })
            .collect()
    }

    async fn dehydrated_device(&self, user_id: &str) -> Result<Option<DehydratedDevice>> {
        const DOING: &str = "reading a dehydrated device";
        let row =
            sqlx::query("SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .doing(DOING)?;
        row.map(|row| {
            Ok(DehydratedDevice {
                user_id: user_id.to_owned(),
                device_id: row.try_get(0).doing(DOING)?,
                device_data: row.try_get(1).doing(DOING)?,
            })
        })
        .transpose()
    }

    async fn token(&self, token: &str) -> Result<Option<TokenOwner>> {
        const DOING: &str = "reading an access token";
        let row = sqlx::query("SELECT user_id, device_id FROM access_tokens WHERE token = $1")
            .bind(token)
            .fetch_optional(&self.pool)
            .await
            .doing(DOING)?;
        row.map(|row| {
            Ok(TokenOwner {
                user_id: row.try_get(0).doing(DOING)?,
                device_id: row.try_get(1).doing(DOING)?,
            })
        })
        .transpose()
    }

    async fn profile(&self, user_id: &str) -> Result<Option<Profile>> {
        domains::profile(&self.pool, user_id).await
    }

    async fn transaction_id(
        &self,
        user_id: &str,
        device_id: &str,
        scope: &str,
        txn_id: &str,
    ) -> Result<Option<String>> {
        domains::transaction_id(&self.pool, user_id, device_id, scope, txn_id).await
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn our_keys(&self) -> Result<Vec<OurKey>> {
        const DOING: &str = "reading our keys";
        let rows = sqlx::query(
            "SELECT key_id, seed, expired_ts FROM our_keys ORDER BY key_id COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(OurKey {
                    key_id: row.try_get(0).doing(DOING)?,
                    seed: row.try_get(1).doing(DOING)?,
                    expired_ts: row.try_get(2).doing(DOING)?,
                })
            })
            .collect()
    }

    async fn remote_key(&self, server: &str, key_id: &str) -> Result<Option<RemoteKey>> {
        const DOING: &str = "reading a remote key";
        let row = sqlx::query(
            "SELECT public_key, valid_until_ts FROM remote_keys WHERE server = $1 AND key_id = $2",
        )
        .bind(server)
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .doing(DOING)?;
        row.map(|row| {
            Ok(RemoteKey {
                server: server.to_owned(),
                key_id: key_id.to_owned(),
                public_key: row.try_get(0).doing(DOING)?,
                valid_until_ts: row.try_get(1).doing(DOING)?,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl QueueStore for PostgresStore {
    async fn transaction_seen(&self, origin: &str, txn_id: &str) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM inbound_transactions WHERE origin = $1 AND txn_id = $2)",
        )
        .bind(origin)
        .bind(txn_id)
        .fetch_one(&self.pool)
        .await
        .doing("reading a transaction id")
    }

    async fn outbound(&self, destination: &str, limit: usize) -> Result<Vec<OutboundItem>> {
        const DOING: &str = "reading an outbound queue";
        let rows = sqlx::query(
            "SELECT id, payload FROM outbound_queue WHERE destination = $1 ORDER BY id LIMIT $2",
        )
        .bind(destination)
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                let payload: Vec<u8> = row.try_get(1).doing(DOING)?;
                Ok(OutboundItem {
                    id: to_u64(row.try_get(0).doing(DOING)?)?,
                    payload: Arc::from(payload),
                })
            })
            .collect()
    }

    async fn outbound_destinations(&self) -> Result<Vec<String>> {
        // A skip scan over the primary key (destination, id): one index probe per destination,
        // however long the queues are.
        sqlx::query_scalar(
            "WITH RECURSIVE d (destination) AS ( \
               SELECT min(destination) FROM outbound_queue \
               UNION ALL \
               SELECT (SELECT min(q.destination) FROM outbound_queue q \
                       WHERE q.destination > d.destination) \
               FROM d WHERE d.destination IS NOT NULL) \
             SELECT destination FROM d WHERE destination IS NOT NULL ORDER BY destination",
        )
        .fetch_all(&self.pool)
        .await
        .doing("listing the destinations of outbound queues")
    }

    async fn retry(&self, destination: &str) -> Result<Option<RetryState>> {
        const DOING: &str = "reading a retry state";
        let row = sqlx::query(
            "SELECT failures, retry_after_ts FROM destination_retries WHERE destination = $1",
        )
        .bind(destination)
        .fetch_optional(&self.pool)
        .await
        .doing(DOING)?;
        row.map(|row| {
            let failures: i64 = row.try_get(0).doing(DOING)?;
            Ok(RetryState {
                failures: u32::try_from(failures)
                    .map_err(|_| StorageError::new(ErrorKind::Corrupt, "a failure count"))?,
                retry_after_ts: row.try_get(1).doing(DOING)?,
            })
        })
        .transpose()
    }
}
