//! What the binary's test files share: the binary, a server started from a config, a
//! PostgreSQL schema of a run's own.

#![allow(dead_code, reason = "each test file uses what it needs")]

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) fn homeserver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_homeserver"))
}

/// A server started with `config` (RUST_LOG unset): the child, the lines of its stderr, and
/// the lines it said up to "serving" (it is ready then; at most 30 s).
pub(crate) fn start(config: &Path) -> (Child, Lines<BufReader<ChildStderr>>, Vec<String>) {
    let mut child = homeserver()
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut said = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let ready = line.contains("serving");
        said.push(line);
        if ready {
            break;
        }
    }
    (child, lines, said)
}

/// A connection URL for a PostgreSQL schema of this run's own in `DATABASE_URL`'s database
/// (made, with the tables, by opening a store there once, which writes no data; the URL's
/// `options[search_path]` puts the binary's connections in it), or `None` when
/// `DATABASE_URL` is not set.
pub(crate) async fn postgres_schema_url(prefix: &str) -> Option<String> {
    let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty())?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let schema = format!("{prefix}_{}_{nanos}", std::process::id());
    let options = matrix_storage::postgres::PostgresOptions::new(url.clone()).with_schema(&schema);
    matrix_storage::postgres::PostgresStore::open(&options)
        .await
        .expect("PostgreSQL at DATABASE_URL opens (to make the run's schema)")
        .close()
        .await;
    let separator = if url.contains('?') { '&' } else { '?' };
    eprintln!("{prefix} (postgres): schema {schema}");
    Some(format!("{url}{separator}options[search_path]={schema}"))
}
