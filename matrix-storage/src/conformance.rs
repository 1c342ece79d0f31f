//! The conformance suite every backend runs: one async function per behaviour, each given a
//! fresh, empty store. [`storage_conformance!`](crate::storage_conformance) turns them into
//! `#[tokio::test]`s for a backend:
//!
//! ```
//! # use std::sync::Arc;
//! mod memory {
//!     matrix_storage::storage_conformance!(async {
//!         std::sync::Arc::new(matrix_storage::memory::MemoryStore::new())
//!             as std::sync::Arc<dyn matrix_storage::Storage>
//!     });
//! }
//! # fn main() {}
//! ```

mod auth_chain;
mod backfill;
mod domains;
mod listing;
mod media;
mod moderation;
mod purge;
mod push;
mod registration_tokens;
mod relations;
mod scheduled;
mod search;
mod state;
mod user_data;

use std::collections::BTreeSet;
use std::sync::Arc;

pub use auth_chain::*;
pub use backfill::*;
pub use domains::*;
pub use listing::*;
pub use media::*;
pub use moderation::*;
pub use purge::*;
pub use push::*;
pub use registration_tokens::*;
pub use relations::*;
pub use scheduled::*;
pub use search::*;
pub use state::*;
pub use user_data::*;

use crate::{
    ChangeSet, Device, Direction, ErrorKind, EventStatus, ExpectedRoom, Media, NewEvent,
    NewSnapshot, OurKey, RemoteKey, RetryState, RoomChanges, SnapshotId, SnapshotRef, StateEntry,
    Storage, StreamPos, TokenOwner, User,
};

/// A store under test.
pub type Store = Arc<dyn Storage>;

/// Generates one `#[tokio::test]` per behaviour; `$make` is an expression (usually an `async`
/// block) giving a fresh, empty `Arc<dyn Storage>`.
///
/// With `optional:` before it, `$make` gives an `Option<Arc<dyn Storage>>`, and a test given
/// `None` passes without running (for backends that need a server; `$make` should print why).
#[macro_export]
macro_rules! storage_conformance {
    (optional: $make:expr) => {
        $crate::storage_conformance!(@names $make;);
    };
    ($make:expr) => {
        $crate::storage_conformance!(@names async { Some($make.await) };);
    };
    (@names $make:expr;) => {
        $crate::storage_conformance!(@tests $make;
            events_round_trip, auth_chain_walks_auth_events, state_deltas_and_lookups,
            long_delta_chains, removed_then_set_again, long_chains_across_compactions,
            branches_from_one_parent, a_parent_deep_in_a_chain,
            rooms_membership_and_extremities, stream_order_and_timelines,
            accounts, keys, queues, outbound_destinations, account_data_and_media,
            change_sets_are_atomic,
            missing_references_are_refused, concurrent_writers_lose_nothing,
            readers_never_skip_an_event, e2ee_keys, claims_are_exactly_once,
            deleting_a_device_deletes_what_it_held, device_list_stream, to_device_inbox,
            receipts_replace_and_stream, transaction_ids_commit_once, records_round_trip,
            appservice_room_lists,
            account_data_changes, one_stream_for_everything, cross_signing_keys, key_signatures,
            backup_versions, backup_sessions, pushers, presence_round_trip,
            user_directory_round_trip,
            dehydrated_devices,
            a_room_changed_since_it_was_read_is_a_conflict, backfill_goes_before_the_timeline,
            auth_chain_index_round_trips, an_auth_chain_index_taken_is_a_conflict,
            events_in_batch, media_rows_keep_hash_and_mark, pending_media_completes_once,
            media_listed_by_uploader_and_content, quarantine_changes_are_logged,
            openid_tokens_expire, delayed_events_by_owner_and_time,
            relations_index_round_trips,
            search_matches_tokens_in_rooms, search_pages_and_ranks,
            redacted_events_leave_the_index, search_bounds_odd_text, search_candidates_span_rooms,
            reports_round_trip, users_and_rooms_in_pages, registration_tokens_round_trip,
            user_moderation_round_trip,
            notifications_round_trip, unread_counts_follow_changes, push_cursors_round_trip,
            appservice_cursors_round_trip,
            purging_a_room_deletes_it_whole, purging_events_deletes_them_alone);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store: Option<$crate::conformance::Store> = $make.await;
                if let Some(store) = store {
                    $crate::conformance::$name(store).await;
                }
            }
        )*
    };
}

fn event(id: &str, room: &str, auth: &[&str], in_timeline: bool) -> NewEvent {
    NewEvent {
        event_id: id.to_owned(),
        room_id: room.to_owned(),
        json: Arc::from(format!(r#"{{"event_id":"{id}"}}"#).as_bytes()),
        status: EventStatus::Accepted,
        auth_events: auth.iter().map(|a| (*a).to_owned()).collect(),
        prev_events: Vec::new(),
        in_timeline,
        state_after: None,
    }
}

fn create_room(room: &str) -> RoomChanges {
    RoomChanges {
        room_id: room.to_owned(),
        create_with_version: Some("12".to_owned()),
        ..RoomChanges::default()
    }
}

fn set(key: (&str, &str), id: &str) -> (String, String, Option<String>) {
    (key.0.to_owned(), key.1.to_owned(), Some(id.to_owned()))
}

async fn apply(store: &Store, changes: ChangeSet) -> crate::Applied {
    store.apply(changes).await.expect("the change set applies")
}

/// An event comes back byte for byte with its status, edges, position and state.
pub async fn events_round_trip(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms.push(create_room("!r"));
    changes.snapshot =
        Some(NewSnapshot { parent: None, changes: vec![set(("m.room.create", ""), "$create")] });
    let mut create = event("$create", "!r", &[], true);
    create.state_after = Some(SnapshotRef::New);
    let mut outlier = event("$outlier", "!r", &[], false);
    outlier.status = EventStatus::Outlier;
    outlier.json = Arc::from(&b"{\"n\":1.50}"[..]);
    changes.events = vec![create, outlier];
    let applied = apply(&store, changes).await;

    let stored = store.event("$create").await.expect("reads").expect("stored");
    assert_eq!(stored.room_id, "!r");
    assert_eq!(&*stored.json, br#"{"event_id":"$create"}"#);
    assert_eq!(stored.status, EventStatus::Accepted);
    assert_eq!(stored.stream, Some(applied.stream[0]));
    assert_eq!(stored.state_after, applied.snapshot);
    let outlier = store.event("$outlier").await.expect("reads").expect("stored");
    assert_eq!((outlier.status, outlier.stream), (EventStatus::Outlier, None));
    assert_eq!(&*outlier.json, b"{\"n\":1.50}", "bytes are kept as received");
    assert_eq!(store.event("$nope").await.expect("reads"), None);
}

/// The auth chain is every ancestor through `auth_events`, without the starting events.
pub async fn auth_chain_walks_auth_events(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms.push(create_room("!r"));
    changes.events = vec![
        event("$a", "!r", &[], false),
        event("$b", "!r", &["$a"], false),
        event("$c", "!r", &["$a", "$b"], false),
        event("$d", "!r", &["$c", "$missing"], false),
        event("$e", "!r", &["$a"], false),
    ];
    apply(&store, changes).await;
    let chain = store.auth_chain(&["$d"]).await.expect("reads");
    let chain: BTreeSet<String> = chain.into_iter().collect();
    let expected: BTreeSet<String> =
        ["$a", "$b", "$c", "$missing"].into_iter().map(str::to_owned).collect();
    assert_eq!(chain, expected);
    let both: BTreeSet<String> =
        store.auth_chain(&["$b", "$e"]).await.expect("reads").into_iter().collect();
    assert_eq!(both, ["$a".to_owned()].into_iter().collect());
}

/// Rooms keep their version, current state, extremities and memberships both ways.
pub async fn rooms_membership_and_extremities(store: Store) {
    let mut changes = ChangeSet::new();
    changes.snapshot =
        Some(NewSnapshot { parent: None, changes: vec![set(("m.room.create", ""), "$c")] });
    let mut room = create_room("!r");
    room.current_state = Some(SnapshotRef::New);
    room.forward_extremities = Some(vec!["$b".to_owned(), "$a".to_owned()]);
    room.memberships =
        vec![("@a:x".to_owned(), "join".to_owned()), ("@b:x".to_owned(), "invite".to_owned())];
    changes.rooms = vec![room, create_room("!s")];
    let applied = apply(&store, changes).await;

    let info = store.room("!r").await.expect("reads").expect("room");
    assert_eq!(info.version, "12");
    assert_eq!(info.current_state, applied.snapshot);
    assert_eq!(info.forward_extremities, vec!["$a".to_owned(), "$b".to_owned()]);
    assert_eq!(store.room("!nope").await.expect("reads"), None);

    let mut changes = ChangeSet::new();
    changes.rooms = vec![
        RoomChanges {
            room_id: "!r".to_owned(),
            forward_extremities: Some(vec!["$c".to_owned()]),
            memberships: vec![("@b:x".to_owned(), "join".to_owned())],
            ..RoomChanges::default()
        },
        RoomChanges {
            room_id: "!s".to_owned(),
            memberships: vec![("@a:x".to_owned(), "leave".to_owned())],
            ..RoomChanges::default()
        },
    ];
    apply(&store, changes).await;
    let info = store.room("!r").await.expect("reads").expect("room");
    assert_eq!(info.forward_extremities, vec!["$c".to_owned()]);
    assert_eq!(info.current_state, applied.snapshot, "unchanged when not given");
    assert_eq!(store.membership("!r", "@b:x").await.expect("reads").as_deref(), Some("join"));
    assert_eq!(store.membership("!r", "@z:x").await.expect("reads"), None);
    let pair = |r: &str, m: &str| (r.to_owned(), m.to_owned());
    assert_eq!(
        store.members("!r").await.expect("reads"),
        vec![pair("@a:x", "join"), pair("@b:x", "join")]
    );
    assert_eq!(
        store.rooms_of_user("@a:x").await.expect("reads"),
        vec![pair("!r", "join"), pair("!s", "leave")]
    );
    assert!(store.rooms_of_user("@z:x").await.expect("reads").is_empty());
}

/// A change set that names what it expects of a room ([`RoomChanges::expected`]) applies
/// only while the room is still that: a writer that built on a state another writer changed
/// meanwhile gets a conflict and writes nothing; under concurrency (each writer reading the
/// room, building on it and retrying on conflict) no writer's event is lost from the chain
/// of extremities.
pub async fn a_room_changed_since_it_was_read_is_a_conflict(store: Store) {
    let mut changes = ChangeSet::new();
    changes.snapshot =
        Some(NewSnapshot { parent: None, changes: vec![set(("m.room.create", ""), "$c")] });
    let mut room = create_room("!r");
    room.current_state = Some(SnapshotRef::New);
    room.forward_extremities = Some(vec!["$c".to_owned()]);
    changes.rooms = vec![room];
    changes.events = vec![event("$c", "!r", &[], true)];
    apply(&store, changes).await;

    // Appends `id` on what it read of the room, expecting it unchanged.
    async fn append(store: &Store, id: &str, read: &crate::RoomInfo) -> crate::Result<()> {
        let mut changes = ChangeSet::new();
        changes.snapshot = Some(NewSnapshot {
            parent: read.current_state,
            changes: vec![set(("m.topic", id), id)],
        });
        let mut new = event(id, "!r", &[], true);
        new.prev_events = read.forward_extremities.clone();
        new.state_after = Some(SnapshotRef::New);
        changes.events = vec![new];
        changes.rooms = vec![RoomChanges {
            room_id: "!r".to_owned(),
            current_state: Some(SnapshotRef::New),
            forward_extremities: Some(vec![id.to_owned()]),
            expected: Some(ExpectedRoom {
                current_state: read.current_state,
                forward_extremities: read.forward_extremities.clone(),
            }),
            ..RoomChanges::default()
        }];
        store.apply(changes).await.map(|_| ())
    }

    let read = store.room("!r").await.expect("reads").expect("the room");
    append(&store, "$a", &read).await.expect("the room is as read");
    let err = append(&store, "$b", &read).await.expect_err("the room changed");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(store.event("$b").await.expect("reads").is_none(), "nothing of it is written");
    let info = store.room("!r").await.expect("reads").expect("the room");
    assert_eq!(info.forward_extremities, vec!["$a".to_owned()]);

    // Concurrent writers, each retrying on conflict: every event is on the one chain.
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..5 {
                    let id = format!("$w{w}_{n}");
                    let mut tries = 0;
                    loop {
                        let read = store.room("!r").await.expect("reads").expect("the room");
                        match append(&store, &id, &read).await {
                            Ok(()) => break,
                            Err(e) if e.kind() == ErrorKind::Conflict && tries < 1_000 => {
                                tries += 1;
                                tokio::task::yield_now().await;
                            }
                            Err(e) => panic!("{id}: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    let mut chain = 0;
    let info = store.room("!r").await.expect("reads").expect("the room");
    assert_eq!(info.forward_extremities.len(), 1, "{:?}", info.forward_extremities);
    let mut at = info.forward_extremities[0].clone();
    while at != "$a" {
        let stored = store.event(&at).await.expect("reads").expect("an event on the chain");
        assert_eq!(stored.prev_events.len(), 1, "{at} built on one extremity");
        at = stored.prev_events[0].clone();
        chain += 1;
    }
    assert_eq!(chain, 30, "every writer's events are on the chain");
    let state = store.state_full(info.current_state.expect("a state")).await.expect("reads");
    assert_eq!(state.len(), 1 + 1 + 30, "no writer's state change was overwritten");
}

/// Timeline events get increasing positions; timelines read both ways; the global stream reads
/// ranges.
pub async fn stream_order_and_timelines(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!r"), create_room("!s")];
    apply(&store, changes).await;
    assert_eq!(store.stream_position().await.expect("reads"), StreamPos(0));
    let mut all = Vec::new();
    for i in 0..10 {
        let room = if i % 2 == 0 { "!r" } else { "!s" };
        let mut changes = ChangeSet::new();
        changes.events = vec![event(&format!("$e{i}"), room, &[], true)];
        let pos = apply(&store, changes).await.stream[0];
        all.push((pos, room, format!("$e{i}")));
    }
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "positions increase");
    let head = store.stream_position().await.expect("reads");
    assert_eq!(head, all[9].0);

    let range = store.stream_range(all[2].0, head, 3).await.expect("reads");
    let ids: Vec<&str> = range.iter().map(|i| i.event_id.as_str()).collect();
    assert_eq!(ids, ["$e3", "$e4", "$e5"]);
    assert_eq!(range[0].room_id, "!s");
    assert!(store.stream_range(head, head, 10).await.expect("reads").is_empty());

    let back = store.timeline("!r", all[8].0, Direction::Backwards, 2).await.expect("reads");
    let ids: Vec<&str> = back.iter().map(|i| i.event_id.as_str()).collect();
    assert_eq!(ids, ["$e6", "$e4"]);
    let forward = store.timeline("!r", all[4].0, Direction::Forwards, 10).await.expect("reads");
    let ids: Vec<&str> = forward.iter().map(|i| i.event_id.as_str()).collect();
    assert_eq!(ids, ["$e6", "$e8"]);
    assert!(
        store.timeline("!nope", head, Direction::Backwards, 5).await.expect("reads").is_empty()
    );

    // The ends of the position range (positions come from clients' tokens).
    let end = StreamPos(u64::MAX);
    assert!(store.timeline("!r", end, Direction::Forwards, 5).await.expect("reads").is_empty());
    let back = store.timeline("!r", end, Direction::Backwards, 1).await.expect("reads");
    assert_eq!(back[0].event_id, "$e8");
    let start = store.timeline("!r", StreamPos(0), Direction::Forwards, 1).await.expect("reads");
    assert_eq!(start[0].event_id, "$e0");
    assert!(
        store
            .timeline("!r", StreamPos(0), Direction::Backwards, 5)
            .await
            .expect("reads")
            .is_empty()
    );
    assert!(store.stream_range(end, end, 5).await.expect("reads").is_empty());
    assert_eq!(store.stream_range(StreamPos(0), end, 20).await.expect("reads").len(), 10);
}

/// Users, devices and tokens: create, update, delete; deleting a device deletes its tokens.
pub async fn accounts(store: Store) {
    let user = User {
        user_id: "@a:x".to_owned(),
        password_hash: Some("$argon2id$...".to_owned()),
        admin: false,
        deactivated: false,
    };
    let device = |id: &str| Device {
        user_id: "@a:x".to_owned(),
        device_id: id.to_owned(),
        display_name: Some(format!("phone {id}")),
    };
    let owner = |d: &str| TokenOwner { user_id: "@a:x".to_owned(), device_id: d.to_owned() };
    let mut changes = ChangeSet::new();
    changes.new_users = vec![user.clone()];
    changes.devices = vec![device("B"), device("A")];
    changes.new_tokens = vec![("tok-a".to_owned(), owner("A")), ("tok-b".to_owned(), owner("B"))];
    apply(&store, changes).await;

    assert_eq!(store.user("@a:x").await.expect("reads"), Some(user.clone()));
    assert_eq!(store.user("@b:x").await.expect("reads"), None);
    assert_eq!(store.devices("@a:x").await.expect("reads"), vec![device("A"), device("B")]);
    assert_eq!(store.device("@a:x", "A").await.expect("reads"), Some(device("A")));
    assert_eq!(store.token("tok-b").await.expect("reads"), Some(owner("B")));

    let mut updated = user.clone();
    updated.deactivated = true;
    updated.password_hash = None;
    let mut changes = ChangeSet::new();
    changes.updated_users = vec![updated.clone()];
    changes.deleted_devices = vec![("@a:x".to_owned(), "B".to_owned())];
    changes.deleted_tokens = vec!["tok-a".to_owned()];
    apply(&store, changes).await;
    assert_eq!(store.user("@a:x").await.expect("reads"), Some(updated));
    assert_eq!(store.devices("@a:x").await.expect("reads"), vec![device("A")]);
    assert_eq!(store.token("tok-a").await.expect("reads"), None);
    assert_eq!(store.token("tok-b").await.expect("reads"), None, "went with its device");

    let mut again = ChangeSet::new();
    again.new_users = vec![user];
    let err = store.apply(again).await.expect_err("the user exists");
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

/// Our keys and remote keys.
pub async fn keys(store: Store) {
    let ours = |id: &str, expired: Option<i64>| OurKey {
        key_id: id.to_owned(),
        seed: "c2VlZA".to_owned(),
        expired_ts: expired,
    };
    let remote = |valid: i64| RemoteKey {
        server: "other.example".to_owned(),
        key_id: "ed25519:k".to_owned(),
        public_key: "cHVi".to_owned(),
        valid_until_ts: valid,
    };
    let mut changes = ChangeSet::new();
    changes.our_keys = vec![ours("ed25519:b", None), ours("ed25519:a", Some(5))];
    changes.remote_keys = vec![remote(10)];
    apply(&store, changes).await;
    assert_eq!(
        store.our_keys().await.expect("reads"),
        vec![ours("ed25519:a", Some(5)), ours("ed25519:b", None)]
    );
    assert_eq!(
        store.remote_key("other.example", "ed25519:k").await.expect("reads"),
        Some(remote(10))
    );
    let mut changes = ChangeSet::new();
    changes.remote_keys = vec![remote(20)];
    apply(&store, changes).await;
    assert_eq!(
        store.remote_key("other.example", "ed25519:k").await.expect("reads"),
        Some(remote(20))
    );
    assert_eq!(store.remote_key("other.example", "ed25519:z").await.expect("reads"), None);
}

/// Inbound transactions seen; outbound queues in order, acknowledged up to an id; retries.
pub async fn queues(store: Store) {
    let payload = |s: &str| Arc::<[u8]>::from(s.as_bytes());
    let mut changes = ChangeSet::new();
    changes.seen_transactions = vec![("a.example".to_owned(), "t1".to_owned())];
    changes.enqueue = vec![
        ("b.example".to_owned(), payload("one")),
        ("b.example".to_owned(), payload("two")),
        ("c.example".to_owned(), payload("other")),
        ("b.example".to_owned(), payload("three")),
    ];
    changes.retries =
        vec![("b.example".to_owned(), Some(RetryState { failures: 2, retry_after_ts: 99 }))];
    let applied = apply(&store, changes).await;
    assert!(applied.enqueued[0] < applied.enqueued[1] && applied.enqueued[1] < applied.enqueued[3]);

    assert!(store.transaction_seen("a.example", "t1").await.expect("reads"));
    assert!(!store.transaction_seen("a.example", "t2").await.expect("reads"));
    let queued = store.outbound("b.example", 10).await.expect("reads");
    let payloads: Vec<&[u8]> = queued.iter().map(|i| &*i.payload).collect();
    assert_eq!(payloads, [&b"one"[..], b"two", b"three"]);
    assert_eq!(store.outbound("b.example", 1).await.expect("reads").len(), 1);

    let mut changes = ChangeSet::new();
    changes.acknowledge = vec![("b.example".to_owned(), queued[1].id)];
    changes.retries = vec![("b.example".to_owned(), None)];
    apply(&store, changes).await;
    let left = store.outbound("b.example", 10).await.expect("reads");
    assert_eq!(left.len(), 1);
    assert_eq!(&*left[0].payload, b"three");
    assert_eq!(store.outbound("c.example", 10).await.expect("reads").len(), 1);
    assert_eq!(store.retry("b.example").await.expect("reads"), None);
}

/// The destinations with unacknowledged items: sorted, each once, gone once acknowledged.
pub async fn outbound_destinations(store: Store) {
    assert!(store.outbound_destinations().await.expect("reads").is_empty());
    let payload = Arc::<[u8]>::from(&b"x"[..]);
    let mut changes = ChangeSet::new();
    // Names of several lengths, so that an engine sorting keys by length would show.
    for destination in ["zz.example", "a.example", "zz.example", "mid.example:8448", "a.example"] {
        changes.enqueue.push((destination.to_owned(), payload.clone()));
    }
    let applied = apply(&store, changes).await;
    assert_eq!(
        store.outbound_destinations().await.expect("reads"),
        ["a.example", "mid.example:8448", "zz.example"]
    );
    let mut changes = ChangeSet::new();
    // All of zz, one of the two of a.
    changes.acknowledge = vec![
        ("zz.example".to_owned(), applied.enqueued[2]),
        ("a.example".to_owned(), applied.enqueued[1]),
    ];
    apply(&store, changes).await;
    assert_eq!(
        store.outbound_destinations().await.expect("reads"),
        ["a.example", "mid.example:8448"]
    );
    let mut changes = ChangeSet::new();
    changes.acknowledge = vec![
        ("a.example".to_owned(), applied.enqueued[4]),
        ("mid.example:8448".to_owned(), applied.enqueued[3]),
    ];
    apply(&store, changes).await;
    assert!(store.outbound_destinations().await.expect("reads").is_empty());
}

/// Account data (global and per room) and media metadata.
pub async fn account_data_and_media(store: Store) {
    let mut changes = ChangeSet::new();
    changes.account_data = vec![
        ("@a:x".to_owned(), None, "m.push_rules".to_owned(), b"{}".to_vec()),
        ("@a:x".to_owned(), Some("!r".to_owned()), "m.tag".to_owned(), b"{\"tags\":{}}".to_vec()),
        ("@b:x".to_owned(), None, "m.push_rules".to_owned(), b"{\"b\":1}".to_vec()),
    ];
    let media = Media {
        media_id: "abc".to_owned(),
        content_type: Some("image/png".to_owned()),
        size: 1234,
        upload_name: None,
        uploader: "@a:x".to_owned(),
        created_ts: 7,
        sha256: None,
        authenticated: false,
        quarantined_by: None,
        safe_from_quarantine: false,
    };
    changes.media = vec![media.clone()];
    apply(&store, changes).await;
    assert_eq!(
        store.account_data("@a:x", None, "m.push_rules").await.expect("reads").as_deref(),
        Some(&b"{}"[..])
    );
    assert_eq!(store.account_data("@a:x", Some("!r"), "m.push_rules").await.expect("reads"), None);
    let all = store.all_account_data("@a:x").await.expect("reads");
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].room_id.as_deref(), all[1].room_id.as_deref()), (None, Some("!r")));
    let mut changes = ChangeSet::new();
    changes.account_data =
        vec![("@a:x".to_owned(), None, "m.push_rules".to_owned(), b"[]".to_vec())];
    apply(&store, changes).await;
    assert_eq!(
        store.account_data("@a:x", None, "m.push_rules").await.expect("reads").as_deref(),
        Some(&b"[]"[..])
    );
    assert_eq!(store.media("abc").await.expect("reads"), Some(media));
    assert_eq!(store.media("nope").await.expect("reads"), None);
}

/// A change set that fails changes nothing at all.
pub async fn change_sets_are_atomic(store: Store) {
    let mut first = ChangeSet::new();
    first.new_users = vec![User {
        user_id: "@a:x".to_owned(),
        password_hash: None,
        admin: false,
        deactivated: false,
    }];
    apply(&store, first.clone()).await;
    let before = store.stream_position().await.expect("reads");

    let mut doomed = ChangeSet::new();
    doomed.rooms.push(create_room("!r"));
    doomed.events = vec![event("$e", "!r", &[], true)];
    doomed.snapshot =
        Some(NewSnapshot { parent: None, changes: vec![set(("m.room.create", ""), "$e")] });
    doomed.account_data = vec![("@a:x".to_owned(), None, "t".to_owned(), b"{}".to_vec())];
    doomed.enqueue = vec![("b.example".to_owned(), Arc::from(&b"x"[..]))];
    doomed.new_users = first.new_users.clone(); // conflicts: the user exists
    let err = store.apply(doomed).await.expect_err("conflict");
    assert_eq!(err.kind(), ErrorKind::Conflict);

    assert_eq!(store.event("$e").await.expect("reads"), None);
    assert_eq!(store.room("!r").await.expect("reads"), None);
    assert_eq!(store.account_data("@a:x", None, "t").await.expect("reads"), None);
    assert!(store.outbound("b.example", 10).await.expect("reads").is_empty());
    // The head may pass the positions the failed change set had taken (a backend shared by
    // several processes leaves them a gap), but nothing is at them.
    let after = store.stream_position().await.expect("reads");
    assert!(after >= before, "the head went back");
    assert!(store.stream_range(before, after, 10).await.expect("reads").is_empty());
    assert!(store.account_data_changes("@a:x", before, after).await.expect("reads").is_empty());
}

/// Writes naming a snapshot, room or user that is not stored are refused, and change nothing.
pub async fn missing_references_are_refused(store: Store) {
    let mut bad_parent = ChangeSet::new();
    bad_parent.snapshot =
        Some(NewSnapshot { parent: Some(SnapshotId(9_999)), changes: Vec::new() });
    bad_parent.events = vec![event("$x", "!r", &[], false)];
    let err = store.apply(bad_parent).await.expect_err("no such parent");
    assert_eq!(err.kind(), ErrorKind::MissingReference);
    assert_eq!(store.event("$x").await.expect("reads"), None);

    let mut bad_room = ChangeSet::new();
    bad_room.rooms = vec![RoomChanges { room_id: "!nope".to_owned(), ..RoomChanges::default() }];
    assert_eq!(
        store.apply(bad_room).await.expect_err("no room").kind(),
        ErrorKind::MissingReference
    );

    let mut bad_user = ChangeSet::new();
    bad_user.updated_users = vec![User {
        user_id: "@nope:x".to_owned(),
        password_hash: None,
        admin: false,
        deactivated: false,
    }];
    assert_eq!(
        store.apply(bad_user).await.expect_err("no user").kind(),
        ErrorKind::MissingReference
    );

    let mut twice = ChangeSet::new();
    twice.rooms = vec![create_room("!r"), create_room("!r")];
    assert_eq!(store.apply(twice).await.expect_err("created twice").kind(), ErrorKind::Conflict);
}

/// Runs `writers` tasks at once, each applying `per_writer` change sets made by
/// `make(writer, i)`, yielding between them; returns when all are done.
async fn spawn_writers(
    store: &Store,
    writers: usize,
    per_writer: usize,
    make: fn(usize, usize) -> ChangeSet,
) {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    store.apply(make(w, i)).await.expect("applies");
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer finished");
    }
}

/// 32 writers at once: every write lands, stream positions are unique.
pub async fn concurrent_writers_lose_nothing(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!r")];
    apply(&store, changes).await;
    let writers = 32;
    let per_writer = 20;
    spawn_writers(&store, writers, per_writer, |w, i| {
        let mut changes = ChangeSet::new();
        changes.events = vec![event(&format!("$w{w}-{i}"), "!r", &[], true)];
        changes.account_data = vec![(format!("@w{w}:x"), None, format!("n{i}"), vec![1])];
        changes
    })
    .await;
    let head = store.stream_position().await.expect("reads");
    let all = store.stream_range(StreamPos(0), head, usize::MAX).await.expect("reads");
    assert_eq!(all.len(), writers * per_writer);
    let positions: BTreeSet<u64> = all.iter().map(|i| i.pos.0).collect();
    assert_eq!(positions.len(), all.len(), "unique positions");
    // The account data written with the last event took the position after it.
    assert_eq!(positions.iter().next_back().copied(), Some(head.0 - 1));
    for w in 0..writers {
        assert_eq!(
            store.all_account_data(&format!("@w{w}:x")).await.expect("reads").len(),
            per_writer
        );
        assert!(store.event(&format!("$w{w}-{}", per_writer - 1)).await.expect("reads").is_some());
    }
}

/// A reader that repeatedly reads `(last seen, stream_position]` while writers write sees
/// every event exactly once: no event commits later with a position it already passed.
pub async fn readers_never_skip_an_event(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!r")];
    apply(&store, changes).await;
    let writers = 8;
    let per_writer = 25;
    let write = {
        let store = store.clone();
        tokio::spawn(async move {
            spawn_writers(&store, writers, per_writer, |w, i| {
                let mut changes = ChangeSet::new();
                changes.events = vec![event(&format!("$r{w}-{i}"), "!r", &[], true)];
                changes
            })
            .await;
        })
    };
    let total = writers * per_writer;
    let mut seen: Vec<String> = Vec::new();
    let mut last = StreamPos(0);
    // Bounded: the writers finish, then one more read catches the tail.
    for _ in 0..1_000_000 {
        let head = store.stream_position().await.expect("reads");
        for item in store.stream_range(last, head, usize::MAX).await.expect("reads") {
            assert!(item.pos > last, "positions only grow");
            seen.push(item.event_id);
        }
        last = head;
        if seen.len() >= total {
            break;
        }
        tokio::task::yield_now().await;
    }
    write.await.expect("writers finished");
    let head = store.stream_position().await.expect("reads");
    for item in store.stream_range(last, head, usize::MAX).await.expect("reads") {
        seen.push(item.event_id);
    }
    assert_eq!(seen.len(), total, "every event seen once");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), total, "no event seen twice");
}

/// What `reopen_keeps_everything` compares before and after the reopen.
type Everything = (
    Option<crate::StoredEvent>,
    Option<crate::RoomInfo>,
    Vec<StateEntry>,
    Vec<(String, String)>,
    Option<User>,
    Option<TokenOwner>,
    Vec<crate::OutboundItem>,
    Vec<crate::AccountDataItem>,
    Vec<String>,
    Vec<String>,
    Vec<crate::AuthChainEntry>,
    Vec<String>,
);

async fn everything(store: &Store, snapshot: SnapshotId) -> Everything {
    (
        store.event("$m").await.expect("reads"),
        store.room("!r").await.expect("reads"),
        store.state_full(snapshot).await.expect("reads"),
        store.members("!r").await.expect("reads"),
        store.user("@a:x").await.expect("reads"),
        store.token("tok").await.expect("reads"),
        store.outbound("b.example", 10).await.expect("reads"),
        store.all_account_data("@a:x").await.expect("reads"),
        domains::everything(store).await,
        user_data::everything(store).await,
        auth_chain::everything(store).await,
        scheduled::everything(store).await,
    )
}

/// Reopening keeps everything: `open` opens the same durable store each time it is called
/// (the previous handle is dropped first). Positions after the reopen continue the stream.
pub async fn reopen_keeps_everything<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Store>,
{
    let store = open().await;
    let mut changes = ChangeSet::new();
    changes.rooms.push(create_room("!r"));
    changes.snapshot =
        Some(NewSnapshot { parent: None, changes: vec![set(("m.room.create", ""), "$c")] });
    changes.rooms[0].current_state = Some(SnapshotRef::New);
    changes.rooms[0].memberships = vec![("@a:x".to_owned(), "join".to_owned())];
    let mut create = event("$c", "!r", &[], true);
    create.state_after = Some(SnapshotRef::New);
    changes.events = vec![create, event("$m", "!r", &["$c"], true)];
    changes.new_users = vec![User {
        user_id: "@a:x".to_owned(),
        password_hash: Some("hash".to_owned()),
        admin: true,
        deactivated: false,
    }];
    changes.devices =
        vec![Device { user_id: "@a:x".to_owned(), device_id: "D".to_owned(), display_name: None }];
    changes.new_tokens = vec![(
        "tok".to_owned(),
        TokenOwner { user_id: "@a:x".to_owned(), device_id: "D".to_owned() },
    )];
    changes.enqueue = vec![("b.example".to_owned(), Arc::from(&b"pdu"[..]))];
    changes.account_data = vec![("@a:x".to_owned(), None, "t".to_owned(), b"{}".to_vec())];
    domains::fill(&mut changes);
    user_data::fill(&mut changes);
    auth_chain::fill(&mut changes);
    scheduled::fill(&mut changes);
    let applied = apply(&store, changes).await;
    apply(&store, user_data::fill_sessions(&applied)).await;
    let snapshot = applied.snapshot.expect("a snapshot");
    // The change set ends with positions that are not the timeline's (account data,
    // receipts, to-device messages...): the stream continues after those too.
    let head = store.stream_position().await.expect("reads");
    assert!(head > applied.stream[1], "{head:?}");
    let before = everything(&store, snapshot).await;
    assert_eq!(before.8.len(), 19, "{:?}", before.8);
    assert!(before.9[2].starts_with("Some") && before.9[3].contains("s2"), "{:?}", before.9);
    assert_eq!(before.10.len(), 2, "{:?}", before.10);
    assert!(before.11[0].starts_with("Some") && before.11[1].contains("state"), "{:?}", before.11);
    drop(store);

    let store = open().await;
    let after = everything(&store, snapshot).await;
    assert_eq!(before, after);
    assert!(before.0.is_some() && before.4.is_some() && !before.6.is_empty());
    assert_eq!(store.stream_position().await.expect("reads"), head);

    let mut changes = ChangeSet::new();
    changes.events = vec![event("$later", "!r", &[], true)];
    changes.enqueue = vec![("b.example".to_owned(), Arc::from(&b"next"[..]))];
    let later = apply(&store, changes).await;
    assert!(later.stream[0] > head, "positions continue after a reopen");
    assert!(later.enqueued[0] > before.6[0].id, "queue ids continue after a reopen");
    assert_eq!(store.stream_position().await.expect("reads"), later.stream[0]);
}
