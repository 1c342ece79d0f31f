//! Notifications and pushers' delivery cursors.

use super::{Store, apply};
use crate::{
    AppserviceCursor, ChangeSet, NOTIFICATIONS_KEPT, Notification, NotificationCounts, PushCursor,
    ReadUpTo, StreamPos, UnreadCounts, User,
};

fn note(user: &str, pos: u64, room: &str, thread: Option<&str>, highlight: bool) -> Notification {
    Notification {
        user_id: user.to_owned(),
        pos: StreamPos(pos),
        room_id: room.to_owned(),
        event_id: format!("$e{pos}"),
        thread_id: thread.map(str::to_owned),
        highlight,
        actions: br#"["notify"]"#.to_vec(),
        ts: 1000 + pos,
    }
}

fn positions(found: &[Notification]) -> Vec<u64> {
    found.iter().map(|n| n.pos.0).collect()
}

fn counts(notifications: u64, highlights: u64) -> NotificationCounts {
    NotificationCounts { notifications, highlights }
}

/// Read up to `main` in the main timeline and `threads` in every thread.
fn read(main: u64, threads: u64) -> ReadUpTo {
    ReadUpTo { main: StreamPos(main), other_threads: StreamPos(threads), ..ReadUpTo::default() }
}

async fn unread(store: &Store, user: &str, room: &str, read: &ReadUpTo) -> UnreadCounts {
    store.unread_counts(user, room, read).await.expect("counts")
}

/// The main timeline's counts and each thread's `(root, notifications, highlights)`.
fn unread_as(main: (u64, u64), threads: &[(&str, u64, u64)]) -> UnreadCounts {
    UnreadCounts {
        main: counts(main.0, main.1),
        threads: threads.iter().map(|(t, n, h)| ((*t).to_owned(), counts(*n, *h))).collect(),
    }
}

/// Notifications round-trip, read newest first, after a position, and counted per room and
/// thread after read positions; each user keeps the newest [`NOTIFICATIONS_KEPT`]; a failed
/// change set stores none.
pub async fn notifications_round_trip(store: Store) {
    let mut changes = ChangeSet::new();
    changes.notifications = vec![
        note("@a:x", 5, "!r1:x", None, false),
        note("@a:x", 7, "!r2:x", Some("$root"), true),
        note("@a:x", 9, "!r1:x", Some("$root"), true),
        note("@b:x", 7, "!r2:x", None, false),
    ];
    apply(&store, changes).await;
    let all = store.notifications("@a:x", None, 10, false).await.expect("reads");
    assert_eq!(positions(&all), vec![9, 7, 5]);
    assert_eq!(all[1], note("@a:x", 7, "!r2:x", Some("$root"), true));
    let before = store.notifications("@a:x", Some(StreamPos(9)), 1, false).await.expect("reads");
    assert_eq!(positions(&before), vec![7]);
    let highlights = store.notifications("@a:x", None, 10, true).await.expect("reads");
    assert_eq!(positions(&highlights), vec![9, 7]);
    let after = store.notifications_after("@a:x", StreamPos(5), 10).await.expect("reads");
    assert_eq!(positions(&after), vec![7, 9]);
    let all_unread = unread_as((1, 0), &[("$root", 1, 1)]);
    assert_eq!(unread(&store, "@a:x", "!r1:x", &read(0, 0)).await, all_unread);
    assert_eq!(
        unread(&store, "@a:x", "!r1:x", &read(5, 0)).await,
        unread_as((0, 0), &[("$root", 1, 1)])
    );
    assert_eq!(unread(&store, "@a:x", "!r1:x", &read(4, 9)).await, unread_as((1, 0), &[]));
    let mut thread_read = read(0, 0);
    thread_read.threads.insert("$root".to_owned(), StreamPos(9));
    assert_eq!(unread(&store, "@a:x", "!r1:x", &thread_read).await, unread_as((1, 0), &[]));
    thread_read.threads = [("$other".to_owned(), StreamPos(9))].into();
    assert_eq!(unread(&store, "@a:x", "!r1:x", &thread_read).await, all_unread);
    assert_eq!(
        unread(&store, "@a:x", "!r2:x", &read(0, 0)).await,
        unread_as((0, 0), &[("$root", 1, 1)])
    );
    assert_eq!(unread(&store, "@a:x", "!r3:x", &read(0, 0)).await, UnreadCounts::default());
    assert_eq!(unread(&store, "@b:x", "!r2:x", &read(0, 0)).await, unread_as((1, 0), &[]));
    assert_eq!(all_unread.total(), counts(2, 1));
    assert_eq!(
        positions(&store.notifications("@b:x", None, 10, false).await.expect("reads")),
        vec![7]
    );
    assert!(store.notifications("@z:x", None, 10, false).await.expect("reads").is_empty());

    // Replacing one at the same position moves it between rooms.
    let mut changes = ChangeSet::new();
    changes.notifications = vec![note("@a:x", 9, "!r2:x", None, false)];
    apply(&store, changes).await;
    assert_eq!(unread(&store, "@a:x", "!r1:x", &read(0, 0)).await, unread_as((1, 0), &[]));
    assert_eq!(
        unread(&store, "@a:x", "!r2:x", &read(0, 0)).await,
        unread_as((1, 0), &[("$root", 1, 1)])
    );
    assert_eq!(unread(&store, "@a:x", "!r2:x", &read(8, 7)).await, unread_as((1, 0), &[]));

    // A change set that fails stores nothing.
    let mut changes = ChangeSet::new();
    changes.new_users.push(User {
        user_id: "@exists:x".to_owned(),
        password_hash: None,
        admin: false,
        deactivated: false,
    });
    apply(&store, changes.clone()).await;
    changes.notifications = vec![note("@a:x", 11, "!r1:x", None, false)];
    assert!(store.apply(changes).await.is_err());
    assert_eq!(
        positions(&store.notifications("@a:x", None, 1, false).await.expect("reads")),
        vec![9]
    );

    // The newest are kept.
    let mut changes = ChangeSet::new();
    changes.notifications = (100..100 + NOTIFICATIONS_KEPT as u64 + 5)
        .map(|p| note("@c:x", p, "!r1:x", None, false))
        .collect();
    apply(&store, changes).await;
    let mut changes = ChangeSet::new();
    changes.notifications = vec![note("@c:x", 5000, "!r9:x", None, false)];
    apply(&store, changes).await;
    let kept =
        store.notifications("@c:x", None, NOTIFICATIONS_KEPT * 2, false).await.expect("reads");
    assert_eq!(kept.len(), NOTIFICATIONS_KEPT);
    assert_eq!(kept[0].pos, StreamPos(5000));
    assert_eq!(kept.last().map(|n| n.pos), Some(StreamPos(106)));
    // Only the kept are counted.
    let kept_in_r1 = NOTIFICATIONS_KEPT as u64 - 1;
    assert_eq!(unread(&store, "@c:x", "!r1:x", &read(0, 0)).await, unread_as((kept_in_r1, 0), &[]));
    assert_eq!(
        unread(&store, "@c:x", "!r1:x", &read(100, 0)).await,
        unread_as((kept_in_r1, 0), &[])
    );
    assert_eq!(unread(&store, "@c:x", "!r1:x", &read(1100, 0)).await, unread_as((4, 0), &[]));
    assert_eq!(unread(&store, "@c:x", "!r9:x", &read(0, 0)).await, unread_as((1, 0), &[]));
}

/// Unread counts follow every change: notifications stored in order, out of order, in one
/// change set or many, replaced in place, and the oldest dropped, in the main timeline and
/// threads, each checked against counting the notifications one by one.
pub async fn unread_counts_follow_changes(store: Store) {
    // A root that is empty (a client can send any relation) is a thread like any other.
    let threads = [None, Some("$t1"), Some("")];
    let rooms = ["!a:x", "!b:x"];
    let mut model: std::collections::BTreeMap<u64, Notification> = Default::default();
    // A fixed pseudo-random order of writes: (position, room, thread, highlight), some
    // positions written twice (a replacement), some below positions already written.
    let mut seed = 7u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        seed >> 33
    };
    for round in 0..40u64 {
        let mut changes = ChangeSet::new();
        for _ in 0..(next() % 4 + 1) {
            let pos =
                if next() % 5 == 0 { next() % (round * 10 + 10) } else { round * 10 + next() % 10 }
                    + 1;
            let n = note(
                "@u:x",
                pos,
                rooms[(next() % 2) as usize],
                threads[(next() % 3) as usize],
                next() % 3 == 0,
            );
            changes.notifications.retain(|m| m.pos != n.pos);
            changes.notifications.push(n);
        }
        for n in &changes.notifications {
            model.insert(n.pos.0, n.clone());
        }
        apply(&store, changes).await;
        for room in rooms {
            for (main, others) in [(0, 0), (round * 5, round * 7), (round * 10, 0)] {
                let mut read_at = read(main, others);
                read_at.threads.insert(String::new(), StreamPos(round * 9));
                let mut expected = UnreadCounts::default();
                for n in model.values().filter(|n| n.room_id == room) {
                    expected.count(&read_at, n.pos, n.thread_id.as_deref(), n.highlight);
                }
                assert_eq!(unread(&store, "@u:x", room, &read_at).await, expected, "round {round}");
            }
        }
    }
    // Past the kept number, the oldest go, from counts too.
    let mut changes = ChangeSet::new();
    changes.notifications = (0..NOTIFICATIONS_KEPT as u64)
        .map(|i| note("@u:x", 10_000 + i, "!b:x", threads[(i % 3) as usize], i % 2 == 0))
        .collect();
    apply(&store, changes).await;
    assert_eq!(unread(&store, "@u:x", "!a:x", &read(0, 0)).await, UnreadCounts::default());
    let third = NOTIFICATIONS_KEPT as u64 / 3;
    let found = unread(&store, "@u:x", "!b:x", &read(0, 0)).await;
    assert_eq!(found.total().notifications, NOTIFICATIONS_KEPT as u64);
    assert_eq!(found.threads["$t1"].notifications, third);
    assert_eq!(found.total().highlights, NOTIFICATIONS_KEPT as u64 / 2);
}

/// Cursors round-trip, are replaced and deleted.
pub async fn push_cursors_round_trip(store: Store) {
    let cursor = |pos: u64, failures: u32| PushCursor {
        user_id: "@a:x".to_owned(),
        app_id: "app".to_owned(),
        pushkey: "key".to_owned(),
        pos: StreamPos(pos),
        failures,
        retry_at: 77,
    };
    assert_eq!(store.push_cursor("@a:x", "app", "key").await.expect("reads"), None);
    let mut changes = ChangeSet::new();
    changes.push_cursors = vec![cursor(3, 0)];
    apply(&store, changes).await;
    assert_eq!(store.push_cursor("@a:x", "app", "key").await.expect("reads"), Some(cursor(3, 0)));
    let mut changes = ChangeSet::new();
    changes.push_cursors = vec![cursor(8, 2)];
    apply(&store, changes).await;
    assert_eq!(store.push_cursor("@a:x", "app", "key").await.expect("reads"), Some(cursor(8, 2)));
    assert_eq!(store.push_cursor("@a:x", "app", "other").await.expect("reads"), None);
    let mut changes = ChangeSet::new();
    changes.deleted_push_cursors = vec![("@a:x".to_owned(), "app".to_owned(), "key".to_owned())];
    apply(&store, changes).await;
    assert_eq!(store.push_cursor("@a:x", "app", "key").await.expect("reads"), None);
}

/// Application services' cursors round-trip and are replaced, each service its own.
pub async fn appservice_cursors_round_trip(store: Store) {
    let cursor = |id: &str, pos: u64, in_flight: Option<u64>, failures: u32| AppserviceCursor {
        appservice_id: id.to_owned(),
        pos: StreamPos(pos),
        txn_id: pos * 10,
        in_flight: in_flight.map(StreamPos),
        failures,
        retry_at: 1_700_000_000_000 + u64::from(failures),
    };
    assert_eq!(store.appservice_cursor("irc").await.expect("reads"), None);
    let mut changes = ChangeSet::new();
    changes.appservice_cursors = vec![cursor("irc", 3, Some(9), 2), cursor("slack", 0, None, 0)];
    apply(&store, changes).await;
    assert_eq!(
        store.appservice_cursor("irc").await.expect("reads"),
        Some(cursor("irc", 3, Some(9), 2))
    );
    assert_eq!(
        store.appservice_cursor("slack").await.expect("reads"),
        Some(cursor("slack", 0, None, 0))
    );
    let mut changes = ChangeSet::new();
    changes.appservice_cursors = vec![cursor("irc", 9, None, 0)];
    apply(&store, changes).await;
    assert_eq!(
        store.appservice_cursor("irc").await.expect("reads"),
        Some(cursor("irc", 9, None, 0))
    );
    assert_eq!(
        store.appservice_cursor("slack").await.expect("reads"),
        Some(cursor("slack", 0, None, 0))
    );
    assert_eq!(store.appservice_cursor("other").await.expect("reads"), None);
    let mut changes = ChangeSet::new();
    changes.appservice_cursors =
        vec![cursor("irc", u64::from(u32::MAX) * 4, Some(u64::MAX / 4), 40)];
    apply(&store, changes).await;
    assert_eq!(
        store.appservice_cursor("irc").await.expect("reads"),
        Some(cursor("irc", u64::from(u32::MAX) * 4, Some(u64::MAX / 4), 40))
    );
}
