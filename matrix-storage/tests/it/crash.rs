//! Crash durability: a child process writes change sets and reports each one acknowledged; it
//! is killed with SIGKILL at varying points; the store then reopens and holds every
//! acknowledged write, consistently (events, their stream positions, the users, pushers and
//! auth-chain index entries written in the same change sets, a stream without gaps). For sled, fjall and PostgreSQL,
//! where positions come from the database and a change set killed after it reserved its
//! position leaves that position a gap (at most one per kill: the writer applies one change
//! set at a time).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use matrix_storage::sled::{SledOptions, SledStore};
use matrix_storage::{Storage, StreamPos};

/// Runs the writer with `args` (then the first event number) six times, killing it each time;
/// returns the numbers acknowledged.
fn write_and_kill(args: &[&str]) -> Vec<u64> {
    let mut next = 0u64;
    let mut acknowledged: Vec<u64> = Vec::new();
    for round in 0..6u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .args(args)
            .arg(next.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the writer starts");
        let stdout = child.stdout.take().expect("piped");
        // Kill after a varying number of acknowledgements (bounded in time as well).
        let kill_after = 5 + round * 17;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < kill_after && Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => {
                    let n: u64 =
                        line.strip_prefix("ack ").and_then(|n| n.parse().ok()).expect("ack line");
                    acknowledged.push(n);
                    seen += 1;
                }
                _ => break,
            }
        }
        child.kill().expect("SIGKILL");
        // Lines written before the kill are acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse().ok()) {
                acknowledged.push(n);
            }
        }
        child.wait().expect("reaped");
        next = acknowledged.last().map_or(next, |n| n + 1) + 1_000;
    }
    assert!(acknowledged.len() >= 100, "only {} writes acknowledged", acknowledged.len());
    acknowledged
}

/// Every acknowledged write is in `store`, and the stream has at most `gaps` gaps below its
/// head.
async fn check(store: &dyn Storage, acknowledged: &[u64], gaps: u64) {
    let head = store.stream_position().await.expect("reads");
    let index = store.auth_chain_index("!crash", 0, usize::MAX).await.expect("reads");
    let index: std::collections::BTreeMap<u64, String> =
        index.into_iter().map(|e| (u64::from(e.index), e.event_id)).collect();
    let mut positions = Vec::new();
    for n in acknowledged {
        let entry = index.get(n).map(String::as_str);
        assert_eq!(entry, Some(format!("$crash-{n}").as_str()), "index entry {n} lost");
        let event = store.event(&format!("$crash-{n}")).await.expect("reads");
        let event = event.unwrap_or_else(|| panic!("acknowledged event {n} lost"));
        let pos = event.stream.expect("in the timeline");
        assert!(pos <= head, "event {n} beyond the stream position");
        positions.push(pos);
        assert!(
            store.user(&format!("@crash-{n}:x")).await.expect("reads").is_some(),
            "user {n} lost"
        );
        let pushers = store.pushers(&format!("@crash-{n}:x")).await.expect("reads");
        assert_eq!(pushers.len(), 1, "pusher {n} lost");
    }
    let all = store.stream_range(StreamPos(0), head, usize::MAX).await.expect("reads");
    let missing = head.0 - all.len() as u64;
    assert!(missing <= gaps, "the stream has {missing} gaps, more than the {gaps} kills left");
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), acknowledged.len());
}

#[tokio::test]
async fn sled_keeps_acknowledged_writes_through_sigkill() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().to_str().expect("utf-8 path");
    let acknowledged = write_and_kill(&["sled", path]);
    let store = SledStore::open(dir.path(), &SledOptions::default()).expect("reopens");
    check(&store, &acknowledged, 0).await;
}

#[tokio::test]
async fn fjall_keeps_acknowledged_writes_through_sigkill() {
    use matrix_storage::fjall::{FjallOptions, FjallStore};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().to_str().expect("utf-8 path");
    let acknowledged = write_and_kill(&["fjall", path]);
    let store = FjallStore::open(dir.path(), &FjallOptions::default()).expect("reopens");
    check(&store, &acknowledged, 0).await;
}

#[tokio::test]
async fn postgres_keeps_acknowledged_writes_through_sigkill() {
    let Some(url) = crate::postgres::database_url() else { return };
    let schema = crate::postgres::fresh_schema();
    let acknowledged = write_and_kill(&["postgres", &url, &schema]);
    let store = Arc::new(crate::postgres::open(&url, &schema).await);
    check(&*store, &acknowledged, 6).await;
}
