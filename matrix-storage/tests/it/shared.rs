//! Several stores (as several processes would open them) on one PostgreSQL database and
//! schema: they open together, share one stream whose readable head waits for a transaction
//! of either that is still open, never skip or reorder an event for a reader of either, and
//! hear of each other's commits. Skipped without `DATABASE_URL`, like the other PostgreSQL
//! tests.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use matrix_storage::postgres::PostgresStore;
use matrix_storage::{
    ChangeSet, EventStatus, NewEvent, QueueStore as _, RoomChanges, RoomStore as _, Storage,
    StreamPos,
};

use crate::postgres::{connect_in, database_url, fresh_schema, open};

fn event(id: &str) -> NewEvent {
    NewEvent {
        event_id: id.to_owned(),
        room_id: "!r".to_owned(),
        json: Arc::from(&b"{}"[..]),
        status: EventStatus::Accepted,
        auth_events: Vec::new(),
        prev_events: Vec::new(),
        in_timeline: true,
        state_after: None,
    }
}

fn one_event(id: &str) -> ChangeSet {
    let mut changes = ChangeSet::new();
    changes.events = vec![event(id)];
    changes
}

/// Two stores on a new schema (opened at once: the migration runs once) with a room.
async fn two_stores(url: &str) -> (Arc<PostgresStore>, Arc<PostgresStore>, String) {
    let schema = fresh_schema();
    let (a, b) = tokio::join!(open(url, &schema), open(url, &schema));
    let mut changes = ChangeSet::new();
    changes.rooms = vec![RoomChanges {
        room_id: "!r".into(),
        create_with_version: Some("12".into()),
        ..RoomChanges::default()
    }];
    a.apply(changes).await.expect("creates the room");
    (Arc::new(a), Arc::new(b), schema)
}

/// A change set of one store whose transaction is held open (by a row lock another
/// connection holds, met after its positions are reserved) keeps the head of both stores
/// below its position, though a later position of the other store committed; once it
/// commits, both heads pass both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_of_every_store_waits_for_an_open_transaction_of_any() {
    let Some(url) = database_url() else { return };
    let (a, b, schema) = two_stores(&url).await;
    // An outbound queue for `d`: its head row is what the held transaction will wait for.
    let mut changes = ChangeSet::new();
    changes.enqueue = vec![("d".into(), Arc::from(&b"x"[..]))];
    a.apply(changes).await.expect("enqueues");
    a.apply(one_event("$first")).await.expect("applies");
    let before = a.stream_position().await.expect("reads");
    assert_eq!(b.stream_position().await.expect("reads"), before);

    let mut blocker = connect_in(&url, &schema).await;
    sqlx::query("BEGIN").execute(&mut blocker).await.expect("begins");
    sqlx::query("SELECT * FROM outbound_heads WHERE destination = 'd' FOR UPDATE")
        .execute(&mut blocker)
        .await
        .expect("locks the queue's head");
    let held = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut changes = one_event("$held");
            changes.enqueue = vec![("d".into(), Arc::from(&b"y"[..]))];
            a.apply(changes).await.expect("applies once the lock is gone")
        })
    };
    // Wait (bounded) until the held change set has reserved its position.
    let mut reserved = false;
    for _ in 0..200 {
        let mut check = connect_in(&url, &schema).await;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM stream_reservations \
             WHERE NOT pg_visible_in_snapshot(xid::text::xid8, pg_current_snapshot())",
        )
        .fetch_one(&mut check)
        .await
        .expect("reads");
        if open > 0 {
            reserved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reserved, "the held change set never reserved its positions");
    let later = b.apply(one_event("$later")).await.expect("the other store writes");
    let later_pos = later.stream[0];
    assert_eq!(later_pos, StreamPos(before.0 + 2), "after the held one's position");
    for store in [&a, &b] {
        let head = store.stream_position().await.expect("reads");
        assert_eq!(head, before, "the head waits for the open transaction");
        let range = store.stream_range(before, StreamPos(u64::MAX), 10).await.expect("reads");
        assert_eq!(range.len(), 1, "$later is stored, only the head holds it back");
    }
    sqlx::query("COMMIT").execute(&mut blocker).await.expect("releases");
    let held = held.await.expect("the held change set");
    assert_eq!(held.stream, vec![StreamPos(before.0 + 1)]);
    for store in [&a, &b] {
        assert_eq!(store.stream_position().await.expect("reads"), later_pos);
        let ids: Vec<String> = store
            .stream_range(before, later_pos, 10)
            .await
            .expect("reads")
            .into_iter()
            .map(|i| i.event_id)
            .collect();
        assert_eq!(ids, ["$held", "$later"]);
    }
    assert_eq!(b.outbound("d", 10).await.expect("reads").len(), 2);
}

/// Writers of two stores at once, and a reader of each reading `(last seen, head]` over and
/// over: each reader sees every event exactly once, in position order, and both see the same
/// order; a failed change set leaves a gap, not a late event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_of_both_stores_see_every_event_once_in_one_order() {
    let Some(url) = database_url() else { return };
    let (a, b, _) = two_stores(&url).await;
    let writers = 4;
    let per_writer = 40;
    let mut tasks = Vec::new();
    for (s, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        for w in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_writer {
                    let mut changes = one_event(&format!("$s{s}w{w}i{i}"));
                    if i % 10 == 9 {
                        // Refused after its positions were reserved: a gap.
                        changes.updated_users = vec![matrix_storage::User {
                            user_id: "@nobody:x".into(),
                            password_hash: None,
                            admin: false,
                            deactivated: false,
                        }];
                        store.apply(changes).await.expect_err("no such user");
                    } else {
                        store.apply(changes).await.expect("applies");
                    }
                }
            }));
        }
    }
    let total = 2 * writers * (per_writer - per_writer / 10);
    let readers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|store| {
            tokio::spawn(async move {
                let mut seen: Vec<(u64, String)> = Vec::new();
                let mut last = StreamPos(0);
                for _ in 0..100_000 {
                    let head = store.stream_position().await.expect("reads");
                    assert!(head >= last, "the head went back");
                    for item in store.stream_range(last, head, usize::MAX).await.expect("reads") {
                        seen.push((item.pos.0, item.event_id));
                    }
                    last = head;
                    if seen.len() >= total {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                seen
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a writer");
    }
    let mut orders = Vec::new();
    for reader in readers {
        let seen = reader.await.expect("a reader");
        assert_eq!(seen.len(), total, "every event once");
        let ids: BTreeSet<&String> = seen.iter().map(|(_, id)| id).collect();
        assert_eq!(ids.len(), total, "no event twice");
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "in position order");
        orders.push(seen);
    }
    assert_eq!(orders[0], orders[1], "both readers saw one order");
    let all = a.stream_range(StreamPos(0), StreamPos(u64::MAX), usize::MAX).await.expect("reads");
    assert_eq!(all.len(), total);
}

/// A store hears of the other's commits (their position, through `foreign_writes`), not of
/// its own; and `stream_changes` names whom they concern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_hears_of_the_other_stores_commits() {
    let Some(url) = database_url() else { return };
    let (a, b, _) = two_stores(&url).await;
    let mut heard_by_a = a.foreign_writes().expect("PostgreSQL is shared");
    let mut heard_by_b = b.foreign_writes().expect("PostgreSQL is shared");
    heard_by_a.borrow_and_update();
    heard_by_b.borrow_and_update();
    let before = b.stream_position().await.expect("reads");

    let mut changes = one_event("$e");
    changes.account_data = vec![("@a:x".into(), None, "m.t".into(), b"{}".to_vec())];
    changes.to_device = vec![matrix_storage::NewToDevice {
        user_id: "@b:x".into(),
        device_id: "D".into(),
        sender: "@a:x".into(),
        kind: "m.k".into(),
        content: b"{}".to_vec(),
    }];
    changes.receipts = vec![matrix_storage::Receipt {
        key: matrix_storage::ReceiptKey {
            room_id: "!r".into(),
            user_id: "@a:x".into(),
            kind: "m.read".into(),
            thread: None,
        },
        event_id: "$e".into(),
        event_pos: StreamPos(1),
        ts: 1,
    }];
    let applied = a.apply(changes).await.expect("applies");
    tokio::time::timeout(Duration::from_secs(10), heard_by_b.changed())
        .await
        .expect("b hears within 10 s")
        .expect("the store is open");
    let heard = *heard_by_b.borrow_and_update();
    let head = b.stream_position().await.expect("reads");
    assert_eq!(heard, head, "b heard of a's last position, and may read up to it");
    assert_eq!(head.0, applied.stream[0].0 + 3, "an event, account data, to-device, a receipt");
    let ahead = tokio::time::timeout(Duration::from_millis(300), heard_by_a.changed()).await;
    assert!(ahead.is_err(), "a does not hear of its own commit");

    let changed = b.stream_changes(before, head).await.expect("reads");
    assert_eq!(changed.receipt_rooms, ["!r"]);
    assert_eq!(changed.users, ["@a:x", "@b:x"]);
    let events = b.stream_range(before, head, 10).await.expect("reads");
    assert_eq!(events.len(), 1);
    assert!(b.stream_changes(head, head).await.expect("reads").users.is_empty());
}

/// A store whose listening connection is cut listens again and announces the head, so a
/// commit it missed meanwhile is not lost to its waiters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_listener_listens_again() {
    let Some(url) = database_url() else { return };
    let schema = fresh_schema();
    let mut options = matrix_storage::postgres::PostgresOptions::new(&url).with_schema(&schema);
    options.application_name = format!("listener_{schema}");
    let a = PostgresStore::open(&options).await.expect("opens");
    let b = open(&url, &schema).await;
    let mut heard = a.foreign_writes().expect("PostgreSQL is shared");
    heard.borrow_and_update();
    let mut admin = crate::postgres::sqlx_connect(&url).await;
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(&options.application_name)
    .fetch_one(&mut admin)
    .await
    .expect("terminates");
    assert_eq!(cut, 1, "the listening connection");
    let mut changes = ChangeSet::new();
    changes.device_list_changes = vec!["@a:x".into()];
    let applied_at = {
        b.apply(changes).await.expect("applies");
        b.stream_position().await.expect("reads")
    };
    // Heard either by the notification, or by the announcement after listening again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while heard.borrow_and_update().0 < applied_at.0 {
        tokio::time::timeout_at(deadline, heard.changed())
            .await
            .expect("a hears within 10 s")
            .expect("open");
    }
    // And it still hears later commits.
    let mut changes = ChangeSet::new();
    changes.device_list_changes = vec!["@b:x".into()];
    b.apply(changes).await.expect("applies");
    let next = b.stream_position().await.expect("reads");
    while heard.borrow_and_update().0 < next.0 {
        tokio::time::timeout_at(deadline, heard.changed())
            .await
            .expect("a hears again within 10 s")
            .expect("open");
    }
}

/// A store of the earlier version kept the database to itself with a session advisory lock
/// while open; this version takes the same lock to migrate, so it does not migrate (and write
/// with shared positions) under a running earlier process: it waits, then says why.
#[tokio::test]
async fn a_running_store_of_the_earlier_version_is_waited_for() {
    let Some(url) = database_url() else { return };
    let schema = fresh_schema();
    drop(open(&url, &schema).await);
    let mut old = crate::postgres::sqlx_connect(&url).await;
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(0x4d58_5354_i32)
        .bind(&schema)
        .fetch_one(&mut old)
        .await
        .expect("takes the earlier version's lock");
    assert!(held);
    let mut options = matrix_storage::postgres::PostgresOptions::new(&url).with_schema(&schema);
    options.lock_timeout = Duration::from_millis(200);
    let err = PostgresStore::open(&options).await.expect_err("the earlier version has it");
    assert_eq!(err.kind(), matrix_storage::ErrorKind::Unavailable);
    assert!(err.to_string().contains("earlier version"), "{err}");
    sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut old).await.expect("unlocks");
    // Once it is gone, two stores open at once.
    let (a, b) = tokio::join!(PostgresStore::open(&options), PostgresStore::open(&options));
    a.expect("opens");
    b.expect("opens");
}

/// Two stores numbering events of one room alike at once: for each number exactly one change
/// set commits, the other is a conflict and none of it is written, so the index holds one
/// event per number, the one whose change set committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_number_an_auth_chain_index_once() {
    use matrix_storage::{AuthChainEntry, ErrorKind, EventStore as _};
    let Some(url) = database_url() else { return };
    let (a, b, _schema) = two_stores(&url).await;
    let numbered = |store: Arc<PostgresStore>, who: &'static str, index: u32| async move {
        let id = format!("${who}-{index}");
        let mut changes = one_event(&id);
        changes.auth_chain = vec![AuthChainEntry {
            room_id: "!r".into(),
            index,
            event_id: id.clone(),
            chain: index,
            seq: 1,
            links: Vec::new(),
        }];
        match store.apply(changes).await {
            Ok(_) => Some(id),
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::Conflict, "{error}");
                None
            }
        }
    };
    for index in 0..20 {
        let (from_a, from_b) =
            tokio::join!(numbered(a.clone(), "a", index), numbered(b.clone(), "b", index));
        let winner = match (from_a, from_b) {
            (Some(id), None) | (None, Some(id)) => id,
            both => panic!("number {index}: {both:?}, not exactly one commit"),
        };
        let index_read = a.auth_chain_index("!r", index, 1).await.expect("reads");
        assert_eq!(index_read[0].event_id, winner);
        let loser = if winner.starts_with("$a") { "b" } else { "a" };
        let lost = b.event(&format!("${loser}-{index}")).await.expect("reads");
        assert_eq!(lost, None, "nothing of the conflicting change set is written");
    }
    assert_eq!(b.auth_chain_index("!r", 0, 100).await.expect("reads").len(), 20);
}
