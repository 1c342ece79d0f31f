//! Durable appends per second on each storage backend, in one run: `writers` tasks each
//! append 1 KB message events (one change set each, acknowledged only when durable) for
//! `seconds`, on sled, fjall, the in-memory store, and PostgreSQL when `DATABASE_URL` is set.
//! Besides appends per second it prints the process's CPU time per append, which other load
//! on the machine changes less than the rate.
//! Lighter than the criterion `storage` bench (which builds 50,000-member rooms first), for
//! profiling the write path.
//!
//! ```text
//! appends [--writers 32] [--seconds 5] [--backends sled,fjall,memory,postgres]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use matrix_storage::Storage;
use matrix_storage::fjall::{FjallOptions, FjallStore};
use matrix_storage::memory::MemoryStore;
use matrix_storage::postgres::{PostgresOptions, PostgresStore};
use matrix_storage::sled::{SledOptions, SledStore};

/// The homeserver binary's allocator, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Args {
    writers: u64,
    seconds: u64,
    backends: Vec<String>,
}

fn args() -> Args {
    let mut args = Args {
        writers: 32,
        seconds: 5,
        backends: vec!["sled".into(), "fjall".into(), "memory".into()],
    };
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        args.backends.push("postgres".into());
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => args.writers = value.parse().expect("--writers: a number"),
            "--seconds" => args.seconds = value.parse().expect("--seconds: a number"),
            "--backends" => args.backends = value.split(',').map(str::to_owned).collect(),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

async fn open(backend: &str, dir: &std::path::Path) -> Arc<dyn Storage> {
    match backend {
        "sled" => Arc::new(SledStore::open(dir, &SledOptions::default()).expect("sled opens")),
        "fjall" => Arc::new(FjallStore::open(dir, &FjallOptions::default()).expect("fjall opens")),
        "memory" => Arc::new(MemoryStore::new()),
        "postgres" => {
            let url = std::env::var("DATABASE_URL").expect("DATABASE_URL for postgres");
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let options = PostgresOptions::new(url).with_schema(format!("appends_{nanos}"));
            Arc::new(PostgresStore::open(&options).await.expect("PostgreSQL opens"))
        }
        other => panic!("unknown backend {other}"),
    }
}

/// CPU time this process used so far (user and system, all threads), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 =
        after.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

async fn run(store: Arc<dyn Storage>, writers: u64, seconds: u64) -> (u64, Duration) {
    benches::storage::create_room(&*store).await;
    let next = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (store, next, stop) = (store.clone(), next.clone(), stop.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    store.apply(benches::storage::change(n, None, false)).await.expect("applies");
                    done += 1;
                }
                done
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("writer");
    }
    (total, started.elapsed())
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    for backend in &args.backends {
        let dir = tempfile::tempdir().expect("dir");
        let store = runtime.block_on(open(backend, dir.path()));
        let cpu = cpu_time();
        let (count, elapsed) = runtime.block_on(run(store.clone(), args.writers, args.seconds));
        let cpu = cpu_time().saturating_sub(cpu);
        println!(
            "{backend}: {} writers, {count} durable appends in {:.2} s: {:.0}/s, {:.1} µs of CPU each",
            args.writers,
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / count.max(1) as f64,
        );
        drop(store);
    }
}
