//! Online backups of a PostgreSQL store, and their restore into a new database.
//!
//! **Consistency without stopping writers.** A backup reads every table in one
//! `REPEATABLE READ, READ ONLY` transaction: one snapshot of the database, so the copy is a
//! state the database was in, while the store's writers go on (PostgreSQL's snapshots take no
//! lock that a writer waits for). Each table goes out with `COPY ... TO STDOUT (FORMAT
//! binary)` into a file of its own, its rows counted in the same snapshot. Sequences are not
//! transactional: their values are read after the snapshot was taken, so they are at least
//! what the copied rows used (a restored sequence may skip some numbers, never repeat one).
//!
//! **What is left out.** `stream_reservations`: the runs of stream positions reserved by
//! transactions still running when the snapshot was taken. Their transaction ids mean nothing
//! in another database; their positions are gaps in the copy (as a failed change set's are),
//! and `stream_alloc` (copied) never hands them out again. And sqlx's `_sqlx_migrations`: the
//! restore writes its own by running the migrations.
//!
//! **Layout** (in the backup's directory): `postgres-backup.txt`, a line-oriented list of what
//! the copy holds (format, schema version, each table with its row count and columns, each
//! sequence's value), written last (a backup without it is not finished); and
//! `tables/NAME.copy`, each table in PostgreSQL's binary `COPY` format.
//!
//! **Restore** ([`PostgresStore::restore`]) goes into a schema without data: it runs the
//! migrations up to the backup's schema version, loads every table with `COPY ... FROM
//! STDIN` in one transaction (in the order of their foreign keys; all or nothing), checks each
//! table's row count, sets the sequences, and commits. Opening the store afterwards runs the
//! migrations a newer build adds, as for any database of that version.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use futures_util::StreamExt as _;
use sqlx::{Connection as _, PgConnection, Row as _};
use tokio::io::AsyncWriteExt as _;

use super::{
    Doing, LOCK_SPACE, PostgresOptions, PostgresStore, connect_options, latest_version, migrate,
    schema_name, take_lock, to_u64,
};
use crate::{ErrorKind, Result, StorageError, StoreSummary, state_hash};

/// The format of the list; restore refuses others.
const FORMAT: u64 = 1;

/// The list's file name in a backup's store directory.
const LIST: &str = "postgres-backup.txt";

/// The tables' directory in a backup's store directory.
const TABLES: &str = "tables";

/// Tables a backup leaves out (see the module docs).
const LEFT_OUT: [&str; 2] = ["_sqlx_migrations", "stream_reservations"];

/// The largest list a restore reads.
const MAX_LIST_BYTES: u64 = 16 * 1024 * 1024;

fn io(what: String, error: std::io::Error) -> StorageError {
    StorageError::with_source(ErrorKind::Unavailable, format!("backup: {what}"), error)
}

fn damaged(what: impl std::fmt::Display) -> StorageError {
    StorageError::new(ErrorKind::Corrupt, format!("the backup is damaged: {what}"))
}

/// A name as the list and the statements carry it: ours are lowercase ASCII words.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// What a backup holds, as its list says.
#[derive(Debug, Default, PartialEq, Eq)]
struct List {
    /// The schema version (the last migration) the tables are of.
    version: i64,
    /// Each table: its rows and its columns, in order.
    tables: BTreeMap<String, (u64, Vec<String>)>,
    /// Each sequence's last value (`None`: never used).
    sequences: BTreeMap<String, Option<i64>>,
}

impl List {
    fn write(&self) -> String {
        let mut text =
            format!("matrix-storage postgres backup {FORMAT}\nschema {}\n", self.version);
        for (name, (rows, columns)) in &self.tables {
            let _ = writeln!(text, "table {name} {rows} {}", columns.join(","));
        }
        for (name, value) in &self.sequences {
            match value {
                Some(value) => {
                    let _ = writeln!(text, "sequence {name} {value}");
                }
                None => {
                    let _ = writeln!(text, "sequence {name} -");
                }
            }
        }
        text
    }

    fn parse(text: &str) -> Result<List> {
        let mut lines = text.lines();
        match lines.next() {
            Some(first) if first == format!("matrix-storage postgres backup {FORMAT}") => {}
            Some(first) if first.starts_with("matrix-storage postgres backup ") => {
                return Err(damaged(format!("{first:?} is a format this version does not read")));
            }
            _ => return Err(damaged(format!("{LIST} does not start as a backup's list"))),
        }
        let mut list = List::default();
        for line in lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["schema", version] => {
                    list.version = version
                        .parse()
                        .map_err(|_| damaged(format!("a bad schema version {version:?}")))?;
                }
                ["table", name, rows, columns] if is_name(name) => {
                    let rows = rows
                        .parse()
                        .map_err(|_| damaged(format!("a bad row count in {line:?}")))?;
                    let columns: Vec<String> = columns.split(',').map(str::to_owned).collect();
                    if !columns.iter().all(|c| is_name(c)) {
                        return Err(damaged(format!("a bad column name in {line:?}")));
                    }
                    list.tables.insert((*name).to_owned(), (rows, columns));
                }
                ["sequence", name, value] if is_name(name) => {
                    let value = match *value {
                        "-" => None,
                        n => Some(
                            n.parse()
                                .map_err(|_| damaged(format!("a bad sequence value {line:?}")))?,
                        ),
                    };
                    list.sequences.insert((*name).to_owned(), value);
                }
                _ => return Err(damaged(format!("{LIST} has a line it should not: {line:?}"))),
            }
        }
        if list.version <= 0 || list.tables.is_empty() {
            return Err(damaged(format!("{LIST} names no schema version or no tables")));
        }
        Ok(list)
    }
}

/// The tables of the current schema (but those left out) and their columns, in order
/// (generated columns, which `COPY FROM` cannot set, left out).
async fn tables(connection: &mut PgConnection) -> Result<BTreeMap<String, Vec<String>>> {
    let rows = sqlx::query(
        "SELECT c.table_name::text, c.column_name::text FROM information_schema.columns c \
         JOIN information_schema.tables t \
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
           AND c.is_generated = 'NEVER' \
         ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(&mut *connection)
    .await
    .doing("listing the tables")?;
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let table: String = row.try_get(0).doing("listing the tables")?;
        let column: String = row.try_get(1).doing("listing the tables")?;
        if LEFT_OUT.contains(&table.as_str()) {
            continue;
        }
        if !is_name(&table) || !is_name(&column) {
            return Err(StorageError::new(
                ErrorKind::Corrupt,
                format!(
                    "the schema holds a table or column this store did not make: {table}.{column}"
                ),
            ));
        }
        tables.entry(table).or_default().push(column);
    }
    Ok(tables)
}

/// The schema version the current schema's tables are of (the last migration that ran), or
/// `None` when no migration ran in it.
async fn schema_version(connection: &mut PgConnection) -> Result<Option<i64>> {
    let migrated: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *connection)
    .await
    .doing("looking for the migrations")?;
    if !migrated {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *connection)
        .await
        .doing("reading the schema version")
}

/// What the store holds, read on `connection` (one snapshot when it is in a transaction of
/// REPEATABLE READ): the stream position (the last handed out), the events, and each room's
/// current snapshot.
async fn counts(connection: &mut PgConnection) -> Result<(u64, u64, Vec<(String, Option<i64>)>)> {
    const DOING: &str = "summarising the store";
    let position: i64 = sqlx::query_scalar("SELECT next - 1 FROM stream_alloc")
        .fetch_one(&mut *connection)
        .await
        .doing(DOING)?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *connection)
        .await
        .doing(DOING)?;
    let rooms = sqlx::query("SELECT room_id, current_state FROM rooms")
        .fetch_all(&mut *connection)
        .await
        .doing(DOING)?
        .iter()
        .map(|row| Ok((row.try_get(0).doing(DOING)?, row.try_get(1).doing(DOING)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((to_u64(position.max(0))?, to_u64(events)?, rooms))
}

impl PostgresStore {
    /// The summary from `counts`: each room's state read whole (snapshots never change once
    /// committed, so the pool reads the same as the snapshot that named them).
    async fn summary_of(
        &self,
        (position, events, rooms): (u64, u64, Vec<(String, Option<i64>)>),
    ) -> Result<StoreSummary> {
        let mut summary = StoreSummary::new("postgres");
        summary.stream_position = position;
        summary.events = events;
        for (room_id, snapshot) in rooms {
            let state = match snapshot {
                Some(id) => self.full_state(to_u64(id)?).await?,
                None => Vec::new(),
            };
            summary.rooms.insert(room_id, state_hash(&state));
        }
        Ok(summary)
    }

    /// What a backup records of this store (see [`StoreSummary`]): its stream position (the
    /// last handed out), its events, and each room's current state hashed.
    pub(super) async fn summarize(&self) -> Result<StoreSummary> {
        let mut connection = self.pool.acquire().await.doing("summarising the store")?;
        let counts = counts(&mut connection).await?;
        drop(connection);
        self.summary_of(counts).await
    }

    /// Writes a consistent copy of the store into `dir` (new, or empty) while it goes on
    /// serving reads and writes, and answers the copy's summary (see the module docs).
    pub(super) async fn backup_to(&self, dir: &Path) -> Result<StoreSummary> {
        crate::backup::check_empty(dir)?;
        let tables_dir = dir.join(TABLES);
        tokio::fs::create_dir_all(&tables_dir)
            .await
            .map_err(|e| io(format!("creating {}", tables_dir.display()), e))?;
        let mut connection = self.pool.acquire().await.doing("starting the backup")?;
        let mut tx = connection
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .doing("starting the backup's transaction")?;
        // The first statement takes the snapshot; everything after reads the same.
        let counts = counts(&mut tx).await?;
        let version = schema_version(&mut tx).await?.ok_or_else(|| {
            StorageError::new(ErrorKind::Corrupt, "the store's schema has no migrations")
        })?;
        let mut list = List { version, ..List::default() };
        for (table, columns) in tables(&mut tx).await? {
            let doing = format!("copying the table {table}");
            let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{table}\""))
                .fetch_one(&mut *tx)
                .await
                .doing(&doing)?;
            let path = tables_dir.join(format!("{table}.copy"));
            let file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| io(format!("creating {}", path.display()), e))?;
            let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
            let statement =
                format!("COPY \"{table}\" ({}) TO STDOUT (FORMAT binary)", quoted(&columns));
            let mut stream = tx.copy_out_raw(&statement).await.doing(&doing)?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.doing(&doing)?;
                out.write_all(&chunk)
                    .await
                    .map_err(|e| io(format!("writing {}", path.display()), e))?;
            }
            drop(stream);
            out.flush().await.map_err(|e| io(format!("writing {}", path.display()), e))?;
            out.into_inner()
                .sync_all()
                .await
                .map_err(|e| io(format!("syncing {}", path.display()), e))?;
            list.tables.insert(table, (to_u64(rows)?, columns));
        }
        // After the snapshot: at least what its rows used.
        let sequences = sqlx::query(
            "SELECT sequencename::text, last_value FROM pg_sequences \
             WHERE schemaname = current_schema()",
        )
        .fetch_all(&mut *tx)
        .await
        .doing("reading the sequences")?;
        for row in sequences {
            let name: String = row.try_get(0).doing("reading the sequences")?;
            let value: Option<i64> = row.try_get(1).doing("reading the sequences")?;
            if is_name(&name) {
                list.sequences.insert(name, value);
            }
        }
        tx.commit().await.doing("ending the backup's transaction")?;
        drop(connection);

        let summary = self.summary_of(counts).await?;
        let partial = dir.join(format!("{LIST}.partial"));
        write_synced(&partial, list.write().as_bytes()).await?;
        tokio::fs::rename(&partial, dir.join(LIST))
            .await
            .map_err(|e| io(format!("finishing {LIST}"), e))?;
        if let Ok(directory) = tokio::fs::File::open(dir).await {
            let _ = directory.sync_all().await;
        }
        Ok(summary)
    }

    /// Restores the backup in `dir` (made by [`Storage::backup`](crate::Storage::backup) of a
    /// PostgreSQL store) into the database and schema of `options`, which must hold no data
    /// (no table of this store, or only empty ones, as a store opened once and never written
    /// leaves them). All or nothing: a restore that fails leaves the tables empty. Open the
    /// store afterwards, as usual, to use it (and to run the migrations a newer build adds).
    ///
    /// Errors: a damaged or unfinished backup, or one of a newer schema, is
    /// [`ErrorKind::Corrupt`]; a database that holds data is [`ErrorKind::Conflict`].
    pub async fn restore(options: &PostgresOptions, dir: &Path) -> Result<()> {
        let list = read_list(dir)?;
        if list.version > latest_version() {
            return Err(StorageError::new(
                ErrorKind::Corrupt,
                format!(
                    "the backup's schema is version {}; this build knows up to {}",
                    list.version,
                    latest_version()
                ),
            ));
        }
        for table in list.tables.keys() {
            let path = dir.join(TABLES).join(format!("{table}.copy"));
            if !path.is_file() {
                return Err(damaged(format!("{} is missing", path.display())));
            }
        }
        let connect = connect_options(options)?;
        let mut admin = PgConnection::connect_with(&connect).await.doing("connecting")?;
        let schema = schema_name(&mut admin, options).await?;
        take_lock(&mut admin, &schema, options.lock_timeout).await?;
        let restored = restore_locked(&mut admin, options, dir, &list).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(LOCK_SPACE)
            .bind(&schema)
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
        restored
    }
}

/// `"a", "b"` for the columns `a`, `b`.
fn quoted(columns: &[String]) -> String {
    columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
}

async fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| io(format!("creating {}", path.display()), e))?;
    file.write_all(bytes).await.map_err(|e| io(format!("writing {}", path.display()), e))?;
    file.sync_all().await.map_err(|e| io(format!("syncing {}", path.display()), e))
}

fn read_list(dir: &Path) -> Result<List> {
    use std::io::Read as _;
    let path = dir.join(LIST);
    let file = std::fs::File::open(&path).map_err(|_| {
        damaged(format!("{} has no {LIST}: it is not a finished PostgreSQL backup", dir.display()))
    })?;
    let mut text = String::new();
    file.take(MAX_LIST_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| damaged(format!("{} cannot be read: {e}", path.display())))?;
    List::parse(&text)
}

/// The restore under the schema's lock (see [`PostgresStore::restore`]).
async fn restore_locked(
    admin: &mut PgConnection,
    options: &PostgresOptions,
    dir: &Path,
    list: &List,
) -> Result<()> {
    if let Some(found) = schema_version(admin).await?
        && found != list.version
    {
        return Err(StorageError::new(
            ErrorKind::Conflict,
            format!(
                "the database's schema is version {found} and the backup's {}; restore into a \
                 new database (or schema)",
                list.version
            ),
        ));
    }
    migrate(admin, options, list.version).await?;
    let found = tables(admin).await?;
    for (table, (_, columns)) in &list.tables {
        match found.get(table) {
            Some(here) if here == columns => {}
            Some(_) => {
                return Err(damaged(format!(
                    "the table {table} has other columns than at schema version {}",
                    list.version
                )));
            }
            None => {
                return Err(damaged(format!(
                    "no table {table} at schema version {}",
                    list.version
                )));
            }
        }
    }
    if let Some(missing) = found.keys().find(|t| !list.tables.contains_key(*t)) {
        return Err(damaged(format!("the table {missing} is not in the backup")));
    }
    let mut tx = admin.begin().await.doing("starting the restore's transaction")?;
    // Rows a migration seeds (the stream counter) give way to the copy's; any other row
    // means the database is in use.
    for table in found.keys() {
        let seeded = table == "stream_alloc";
        let holds: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM \"{table}\")"))
            .fetch_one(&mut *tx)
            .await
            .doing("looking for data")?;
        if holds && !seeded {
            return Err(StorageError::new(
                ErrorKind::Conflict,
                format!(
                    "the database already holds data (in {table}); restore into a new database \
                     (or schema)"
                ),
            ));
        }
    }
    let all: Vec<String> = found.keys().map(|t| format!("\"{t}\"")).collect();
    sqlx::query(&format!("TRUNCATE {}", all.join(", ")))
        .execute(&mut *tx)
        .await
        .doing("emptying the tables")?;
    for table in load_order(&mut tx, found.keys().cloned().collect()).await? {
        let (rows, columns) = &list.tables[&table];
        let doing = format!("restoring the table {table}");
        let path = dir.join(TABLES).join(format!("{table}.copy"));
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| damaged(format!("{} cannot be read: {e}", path.display())))?;
        let statement =
            format!("COPY \"{table}\" ({}) FROM STDIN (FORMAT binary)", quoted(columns));
        let mut copy = tx.copy_in_raw(&statement).await.doing(&doing)?;
        if let Err(e) = copy.read_from(tokio::io::BufReader::with_capacity(1 << 20, file)).await {
            let _ = copy.abort("the backup's file could not be read").await;
            return Err(damaged(format!("{}: {e}", path.display())));
        }
        let copied = copy.finish().await.map_err(|e| {
            // PostgreSQL refused the data: the file is not what this schema reads.
            damaged(format!("{} does not load: {e}", path.display()))
        })?;
        if copied != *rows {
            return Err(damaged(format!(
                "{} holds {copied} rows; the backup's list says {rows}",
                path.display()
            )));
        }
    }
    for (sequence, value) in &list.sequences {
        let Some(value) = value else { continue };
        sqlx::query("SELECT setval(quote_ident($1)::regclass, $2, true)")
            .bind(sequence)
            .bind(value)
            .execute(&mut *tx)
            .await
            .doing(&format!("setting the sequence {sequence}"))?;
    }
    tx.commit().await.doing("committing the restore")
}

/// `tables` ordered so that each comes after the tables its foreign keys refer to (a table
/// that refers to itself loads in one statement, which checks at its end).
async fn load_order(
    connection: &mut PgConnection,
    tables: BTreeSet<String>,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c \
         JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE c.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&mut *connection)
    .await
    .doing("reading the foreign keys")?;
    let mut needs: BTreeMap<String, BTreeSet<String>> =
        tables.iter().map(|t| (t.clone(), BTreeSet::new())).collect();
    for row in rows {
        let from: String = row.try_get(0).doing("reading the foreign keys")?;
        let to: String = row.try_get(1).doing("reading the foreign keys")?;
        let (from, to) = (unqualified(&from), unqualified(&to));
        if from != to
            && tables.contains(&to)
            && let Some(set) = needs.get_mut(&from)
        {
            set.insert(to);
        }
    }
    let mut order = Vec::with_capacity(tables.len());
    while !needs.is_empty() {
        let ready: Vec<String> =
            needs.iter().filter(|(_, n)| n.is_empty()).map(|(t, _)| t.clone()).collect();
        if ready.is_empty() {
            return Err(StorageError::new(
                ErrorKind::Corrupt,
                "the tables' foreign keys go round in a cycle",
            ));
        }
        for table in ready {
            needs.remove(&table);
            for set in needs.values_mut() {
                set.remove(&table);
            }
            order.push(table);
        }
    }
    Ok(order)
}

/// `table` for `schema.table` or `"schema".table` (a regclass outside the search path).
fn unqualified(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).trim_matches('"').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_reads_back_what_it_wrote() {
        let mut list = List { version: 22, ..List::default() };
        list.tables.insert("events".into(), (3, vec!["event_id".into(), "json".into()]));
        list.tables.insert("rooms".into(), (0, vec!["room_id".into()]));
        list.sequences.insert("snapshot_ids".into(), Some(41));
        list.sequences.insert("store_instances".into(), None);
        assert_eq!(List::parse(&list.write()).expect("it parses"), list);
    }

    #[test]
    fn a_damaged_list_is_refused() {
        let good = "matrix-storage postgres backup 1\nschema 22\ntable events 3 event_id\n";
        assert!(List::parse(good).is_ok());
        for bad in [
            "",
            "matrix-storage postgres backup 2\nschema 22\ntable events 3 event_id\n",
            "matrix-storage postgres backup 1\ntable events 3 event_id\n",
            "matrix-storage postgres backup 1\nschema 22\n",
            "matrix-storage postgres backup 1\nschema 22\ntable events x event_id\n",
            "matrix-storage postgres backup 1\nschema 22\ntable \"; DROP 3 event_id\n",
            "matrix-storage postgres backup 1\nschema 22\ntable events 3 a;b\n",
            "matrix-storage postgres backup 1\nschema 22\ntable events 3 id\nsurprise\n",
        ] {
            let error = List::parse(bad).expect_err(bad);
            assert_eq!(error.kind(), ErrorKind::Corrupt, "{bad:?}");
        }
    }
}
