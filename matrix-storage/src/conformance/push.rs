//! Notifications and pushers' delivery cursors.

use super::{Store, apply};
use crate::{
    AppserviceCursor, ChangeSet, NOTIFICATIONS_KEPT, Notification, PushCursor, StreamPos, User,
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

/// Notifications round-trip, read newest first, per room, after a position; each user keeps
/// the newest [`NOTIFICATIONS_KEPT`]; a failed change set stores none.
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
    let room = store.room_notifications("@a:x", "!r1:x", StreamPos(0), 10).await.expect("reads");
    assert_eq!(positions(&room), vec![5, 9]);
    let room = store.room_notifications("@a:x", "!r1:x", StreamPos(5), 10).await.expect("reads");
    assert_eq!(positions(&room), vec![9]);
    assert!(
        store
            .room_notifications("@a:x", "!r3:x", StreamPos(0), 10)
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(
        positions(&store.notifications("@b:x", None, 10, false).await.expect("reads")),
        vec![7]
    );
    assert!(store.notifications("@z:x", None, 10, false).await.expect("reads").is_empty());

    // Replacing one at the same position moves it between rooms.
    let mut changes = ChangeSet::new();
    changes.notifications = vec![note("@a:x", 9, "!r2:x", None, false)];
    apply(&store, changes).await;
    let room = store.room_notifications("@a:x", "!r1:x", StreamPos(0), 10).await.expect("reads");
    assert_eq!(positions(&room), vec![5]);
    let room = store.room_notifications("@a:x", "!r2:x", StreamPos(0), 10).await.expect("reads");
    assert_eq!(positions(&room), vec![7, 9]);

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
    let room = store.room_notifications("@c:x", "!r1:x", StreamPos(0), 5).await.expect("reads");
    assert_eq!(positions(&room), vec![106, 107, 108, 109, 110]);
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
