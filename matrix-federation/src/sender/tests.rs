use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;

use matrix_core::json::Value;
use matrix_storage::memory::MemoryStore;
use matrix_storage::sled::{SledOptions, SledStore};
use tokio::time::Instant;

use super::*;

/// One transaction as the fake sink received it.
#[derive(Debug, Clone)]
struct Received {
    destination: String,
    txn_id: String,
    pdus: Vec<i64>,
    edus: Vec<String>,
    at: Instant,
    delivered: bool,
}

/// A sink that fails the first `failures` attempts of each destination, never answers for
/// `hanging` destinations, and records everything.
#[derive(Debug, Default)]
struct FakeSink {
    failures: usize,
    always_fail: HashSet<String>,
    hanging: HashSet<String>,
    attempts: Mutex<HashMap<String, usize>>,
    log: Mutex<Vec<Received>>,
    in_flight: Mutex<HashMap<String, usize>>,
    max_in_flight: AtomicUsize,
    /// Transactions in flight to all destinations, and the most at once.
    all_in_flight: AtomicUsize,
    max_all_in_flight: AtomicUsize,
}

fn numbers(body: &Object, key: &str, field: &str) -> Vec<Value> {
    let Some(Value::Array(items)) = body.get(key) else { return Vec::new() };
    items.iter().filter_map(|i| i.as_object()?.get(field).cloned()).collect()
}

#[async_trait]
impl TransactionSink for FakeSink {
    async fn send_transaction(
        &self,
        destination: &str,
        txn_id: &str,
        body: &Object,
    ) -> Result<Object, FederationError> {
        {
            let mut in_flight = lock(&self.in_flight);
            let n = in_flight.entry(destination.to_owned()).or_default();
            *n += 1;
            self.max_in_flight.fetch_max(*n, Ordering::SeqCst);
        }
        let all = self.all_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_all_in_flight.fetch_max(all, Ordering::SeqCst);
        // Long enough for every other worker to start, if it could.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if self.hanging.contains(destination) {
            std::future::pending::<()>().await;
        }
        let attempt = {
            let mut attempts = lock(&self.attempts);
            let n = attempts.entry(destination.to_owned()).or_default();
            *n += 1;
            *n
        };
        let delivered = attempt > self.failures && !self.always_fail.contains(destination);
        lock(&self.log).push(Received {
            destination: destination.to_owned(),
            txn_id: txn_id.to_owned(),
            pdus: numbers(body, "pdus", "depth").iter().filter_map(Value::as_i64).collect(),
            edus: numbers(body, "edus", "edu_type")
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            at: Instant::now(),
            delivered,
        });
        *lock(&self.in_flight).entry(destination.to_owned()).or_default() -= 1;
        self.all_in_flight.fetch_sub(1, Ordering::SeqCst);
        if delivered {
            let mut pdus = Object::new();
            pdus.insert("$x", Object::from_iter([("error", "refused")]));
            Ok(Object::from_iter([("pdus", pdus)]))
        } else {
            Err(FederationError::Unreachable {
                destination: destination.to_owned(),
                reason: "down".to_owned(),
            })
        }
    }
}

impl FakeSink {
    fn log(&self) -> Vec<Received> {
        lock(&self.log).clone()
    }
    /// The PDUs delivered to `destination`, in order.
    fn delivered_pdus(&self, destination: &str) -> Vec<i64> {
        self.log()
            .into_iter()
            .filter(|r| r.delivered && r.destination == destination)
            .flat_map(|r| r.pdus)
            .collect()
    }
}

fn pdu(n: i64) -> Outbound {
    Outbound::Pdu(Object::from_iter([("depth", n)]))
}

fn options() -> SenderOptions {
    SenderOptions::new("us.example")
}

/// Polls (bounded) until `done`.
async fn until_done(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{what} did not happen in time");
}

async fn queue_len(store: &dyn Storage, destination: &str) -> usize {
    store.outbound(destination, 1_000).await.expect("reads").len()
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let options = options();
    let waits: Vec<u64> = [1, 2, 3, 4, 12, 13, 40, u32::MAX]
        .into_iter()
        .map(|n| options.backoff(n).as_secs())
        .collect();
    assert_eq!(waits, [1, 2, 4, 8, 2048, 3600, 3600, 3600]);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_then_everything_arrives_once_with_one_transaction_in_flight() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    let sink = Arc::new(FakeSink { failures: 3, ..FakeSink::default() });
    let sender = Sender::start(store.clone(), sink.clone(), options()).await.expect("starts");
    let items = (1..=120).map(|n| ("b.example".to_owned(), pdu(n))).collect();
    sender.enqueue(items).await.expect("queued");

    until_done("delivery", || sink.delivered_pdus("b.example").len() == 120).await;
    assert_eq!(sink.delivered_pdus("b.example"), (1..=120).collect::<Vec<_>>());
    let log = sink.log();
    // Three failures of the same batch, with the same id, 1 s, 2 s and 4 s apart.
    assert_eq!(log[0].txn_id, "1-50");
    assert!(log[..4].iter().all(|r| r.txn_id == "1-50" && r.pdus.len() == 50));
    let gaps: Vec<u64> = log.windows(2).take(3).map(|w| (w[1].at - w[0].at).as_secs()).collect();
    assert_eq!(gaps, [1, 2, 4]);
    assert!(!log[2].delivered && log[3].delivered);
    let ids: Vec<&str> = log.iter().filter(|r| r.delivered).map(|r| r.txn_id.as_str()).collect();
    assert_eq!(ids, ["1-50", "51-100", "101-120"]);
    assert_eq!(sink.max_in_flight.load(Ordering::SeqCst), 1);
    until_done("acknowledgement", || sender.counts().transactions == 3).await;
    assert_eq!(queue_len(&*store, "b.example").await, 0);
    assert_eq!(store.retry("b.example").await.expect("reads"), None, "cleared on success");
    let counts = sender.counts();
    assert_eq!((counts.failures, counts.refused_pdus), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_stored_as_a_retry_state() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    let sink = Arc::new(FakeSink {
        always_fail: HashSet::from(["down.example".to_owned()]),
        ..FakeSink::default()
    });
    let sender = Sender::start(store.clone(), sink.clone(), options()).await.expect("starts");
    sender.enqueue(vec![("down.example".to_owned(), pdu(1))]).await.expect("queued");
    until_done("two failures", || sender.counts().failures >= 2).await;
    let retry = store.retry("down.example").await.expect("reads").expect("stored");
    assert!(retry.failures >= 2);
    assert!(retry.retry_after_ts > crate::now_ms() - 1_000);
    assert_eq!(queue_len(&*store, "down.example").await, 1, "nothing is dropped");
}

#[tokio::test(start_paused = true)]
async fn batches_hold_at_most_50_pdus_and_100_edus_in_queue_order() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    let sink = Arc::new(FakeSink::default());
    // Queued before the sender starts: it finds them at start.
    let mut items: Vec<(String, Outbound)> = Vec::new();
    for n in 1..=130 {
        items.push(("b.example".to_owned(), pdu(n)));
        items.push(("b.example".to_owned(), Outbound::edu(&format!("e{n}"), Object::new())));
    }
    let mut changes = ChangeSet::new();
    changes.enqueue = items.iter().map(|(d, item)| (d.clone(), item.to_payload())).collect();
    store.apply(changes).await.expect("queued");
    let sender = Sender::start(store.clone(), sink.clone(), options()).await.expect("starts");
    until_done("delivery", || sink.delivered_pdus("b.example").len() == 130).await;
    let log = sink.log();
    assert!(log.iter().all(|r| r.pdus.len() <= MAX_PDUS && r.edus.len() <= MAX_EDUS));
    assert_eq!(log[0].pdus.len(), 50);
    let edus: Vec<String> = log.iter().flat_map(|r| r.edus.clone()).collect();
    assert_eq!(edus, (1..=130).map(|n| format!("e{n}")).collect::<Vec<_>>());
    // 200 EDUs alone make two transactions.
    let edus = (0..200).map(|_| ("c.example".to_owned(), Outbound::edu("m.x", Object::new())));
    sender.enqueue(edus.collect()).await.expect("queued");
    until_done("edus", || sink.log().iter().filter(|r| r.destination == "c.example").count() == 2)
        .await;
    assert!(
        sink.log().iter().filter(|r| r.destination == "c.example").all(|r| r.edus.len() == 100)
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_destination_does_not_hold_up_the_others() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    let sink = Arc::new(FakeSink {
        hanging: HashSet::from(["slow.example".to_owned()]),
        ..FakeSink::default()
    });
    let mut options = options();
    options.max_active_destinations = 2;
    let sender = Sender::start(store.clone(), sink.clone(), options).await.expect("starts");
    let mut items = vec![("slow.example".to_owned(), pdu(0))];
    for destination in ["a.example", "b.example", "c.example"] {
        items.extend((1..=60).map(|n| (destination.to_owned(), pdu(n))));
    }
    sender.enqueue(items).await.expect("queued");
    until_done("the others", || {
        ["a.example", "b.example", "c.example"]
            .iter()
            .all(|d| sink.delivered_pdus(d) == (1..=60).collect::<Vec<_>>())
    })
    .await;
    assert!(sink.delivered_pdus("slow.example").is_empty());
    assert_eq!(queue_len(&*store, "slow.example").await, 1);
    assert!(sink.max_all_in_flight.load(Ordering::SeqCst) <= 2, "the cap holds");
}

#[tokio::test(start_paused = true)]
async fn at_most_the_configured_number_of_destinations_send_at_once() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    let sink = Arc::new(FakeSink::default());
    let mut options = options();
    options.max_active_destinations = 3;
    let sender = Sender::start(store.clone(), sink.clone(), options).await.expect("starts");
    let items = (0..10).flat_map(|d| (1..=3).map(move |n| (format!("d{d}.example"), pdu(n))));
    sender.enqueue(items.collect()).await.expect("queued");
    until_done("delivery", || {
        (0..10).all(|d| sink.delivered_pdus(&format!("d{d}.example")).len() == 3)
    })
    .await;
    assert_eq!(sink.max_all_in_flight.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn items_that_do_not_decode_are_acknowledged_without_a_transaction() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    let mut changes = ChangeSet::new();
    changes.enqueue = vec![("b.example".to_owned(), Arc::from(&b"garbage"[..]))];
    store.apply(changes).await.expect("queued");
    let sink = Arc::new(FakeSink::default());
    let sender = Sender::start(store.clone(), sink.clone(), options()).await.expect("starts");
    until_done("acknowledgement", || sender.counts().undecodable == 1).await;
    assert!(sink.log().is_empty());
    assert!(store.outbound_destinations().await.expect("reads").is_empty());
    // A garbage item among good ones is skipped; the good ones go.
    sender.enqueue(vec![("b.example".to_owned(), pdu(1))]).await.expect("queued");
    let mut changes = ChangeSet::new();
    changes.enqueue = vec![("b.example".to_owned(), Arc::from(&br#"{"pdu":7}"#[..]))];
    store.apply(changes).await.expect("queued");
    sender.enqueue(vec![("b.example".to_owned(), pdu(2))]).await.expect("queued");
    until_done("delivery", || sink.delivered_pdus("b.example").len() == 2).await;
    assert_eq!(sink.delivered_pdus("b.example"), [1, 2]);
}

#[tokio::test]
async fn wake_retries_at_once_and_ephemeral_edus_ride_along() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    let sink = Arc::new(FakeSink { failures: 1, ..FakeSink::default() });
    let mut options = options();
    // After the first failure the next attempt would be an hour away.
    options.initial_backoff = Duration::from_secs(3600);
    let sender = Sender::start(store.clone(), sink.clone(), options).await.expect("starts");
    sender.enqueue(vec![("b.example".to_owned(), pdu(1))]).await.expect("queued");
    until_done("the first failure", || sender.counts().failures == 1).await;
    sender.wake("b.example");
    until_done("delivery after the wake", || sink.delivered_pdus("b.example") == [1]).await;

    // Typing, not stored, alone in a transaction.
    sender.send_ephemeral("b.example", Object::from_iter([("edu_type", "m.typing")]));
    until_done("typing", || sink.log().iter().any(|r| r.edus == ["m.typing"])).await;
    let typing = sink.log().into_iter().find(|r| r.edus == ["m.typing"]).expect("sent");
    assert!(typing.txn_id.starts_with('e') && typing.pdus.is_empty());
    assert!(store.outbound_destinations().await.expect("reads").is_empty());
    // Waking a destination with nothing queued does nothing.
    sender.wake("idle.example");
    tokio::task::yield_now().await;
    assert!(sink.log().iter().all(|r| r.destination == "b.example"));
}

async fn open_sled(path: &std::path::Path) -> Arc<dyn Storage> {
    for _ in 0..500 {
        match SledStore::open(path, &SledOptions::default()) {
            Ok(store) => return Arc::new(store),
            // The previous handle's files are released a moment after it is dropped.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!("the sled store stayed locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sender_delivers_what_was_left_exactly_once_in_order() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open_sled(dir.path()).await;
    // The first run delivers one transaction, then the destination goes down.
    let first = Arc::new(FakeSink {
        always_fail: HashSet::from(["b.example".to_owned()]),
        ..FakeSink::default()
    });
    let mut options = options();
    options.initial_backoff = Duration::from_millis(20);
    options.max_backoff = Duration::from_millis(40);
    let sender =
        Sender::start(store.clone(), first.clone(), options.clone()).await.expect("starts");
    sender
        .enqueue((1..=70).map(|n| ("a.example".to_owned(), pdu(n))).collect())
        .await
        .expect("queued");
    sender
        .enqueue((1..=130).map(|n| ("b.example".to_owned(), pdu(n))).collect())
        .await
        .expect("queued");
    until_done("a delivered", || first.delivered_pdus("a.example").len() == 70).await;
    until_done("b failing", || first.log().iter().any(|r| r.destination == "b.example")).await;
    // Dropped, not stopped: its workers are aborted and release the store.
    drop(sender);
    drop(store);

    let store = open_sled(dir.path()).await;
    assert_eq!(store.outbound_destinations().await.expect("reads"), ["b.example"]);
    assert!(store.retry("b.example").await.expect("reads").is_some());
    let second = Arc::new(FakeSink::default());
    let sender = Sender::start(store.clone(), second.clone(), options).await.expect("restarts");
    until_done("b delivered", || second.delivered_pdus("b.example").len() == 130).await;
    assert_eq!(second.delivered_pdus("b.example"), (1..=130).collect::<Vec<_>>());
    assert!(first.delivered_pdus("b.example").is_empty());
    // The batch that failed before the restart is retried under the same id.
    let failed_id =
        first.log().iter().find(|r| r.destination == "b.example").map(|r| r.txn_id.clone());
    assert_eq!(second.log()[0].txn_id, failed_id.expect("attempted"));
    assert!(second.delivered_pdus("a.example").is_empty(), "acknowledged items stay sent");
    until_done("acknowledged", || sender.counts().transactions == 3).await;
    sender.stop().await;
    assert!(store.outbound_destinations().await.expect("reads").is_empty());
}
