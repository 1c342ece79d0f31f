//! Purging a room ([`crate::Storage::purge_room`]).

use super::search::{body, ids as search_ids, query};
use super::{Store, apply, create_room, event, set};
use crate::{
    Alias, AppserviceListing, AuthChainEntry, BackfillPos, ChangeSet, Direction, EventStatus,
    NewRelation, NewSnapshot, Receipt, ReceiptKey, SnapshotRef, StreamPos,
};

/// What one room holds in every table a purge empties: events of every status (timeline,
/// backfilled, outlier, rejected), a redaction, a relation, search entries, memberships, a
/// forgotten mark, a receipt, aliases, directory listings, the auth-chain index and the
/// public-join mark.
async fn fill(store: &Store, room: &str) {
    let id = |n: &str| format!("${room}{n}");
    let mut changes = ChangeSet::new();
    changes.rooms.push(create_room(room));
    changes.snapshot =
        Some(NewSnapshot { parent: None, changes: vec![set(("m.room.create", ""), &id("c"))] });
    let mut create = event(&id("c"), room, &[], true);
    create.state_after = Some(SnapshotRef::New);
    let mut outlier = event(&id("out"), room, &[], false);
    outlier.status = EventStatus::Outlier;
    let mut rejected = event(&id("rej"), room, &[], false);
    rejected.status = EventStatus::Rejected;
    changes.events = vec![
        create,
        event(&id("m1"), room, &[&id("c")], true),
        event(&id("m2"), room, &[&id("c")], true),
        event(&id("red"), room, &[&id("c")], true),
        event(&id("old"), room, &[], false),
        outlier,
        rejected,
    ];
    changes.backfill = vec![(room.to_owned(), id("old"))];
    changes.search = vec![body(&id("m1"), room, "@a:s", "purple elephant")];
    changes.relations = vec![NewRelation {
        event_id: id("m2"),
        room_id: room.to_owned(),
        parent: id("m1"),
        rel_type: "m.thread".to_owned(),
        kind: "m.room.message".to_owned(),
        sender: "@a:s".to_owned(),
    }];
    changes.rooms[0].current_state = Some(SnapshotRef::New);
    changes.rooms[0].forward_extremities = Some(vec![id("red")]);
    changes.rooms[0].memberships =
        vec![("@a:s".to_owned(), "join".to_owned()), ("@b:s".to_owned(), "leave".to_owned())];
    changes.forgotten = vec![("@b:s".to_owned(), room.to_owned(), true)];
    changes.aliases = vec![Alias {
        alias: format!("#{}:s", &room[1..]),
        room_id: room.to_owned(),
        creator: "@a:s".to_owned(),
    }];
    changes.directory = vec![(room.to_owned(), true)];
    changes.appservice_directory = vec![(
        AppserviceListing {
            appservice_id: "as".to_owned(),
            network_id: "net".to_owned(),
            room_id: room.to_owned(),
        },
        true,
    )];
    changes.public_join_rules = vec![(room.to_owned(), true)];
    changes.auth_chain = vec![AuthChainEntry {
        room_id: room.to_owned(),
        index: 0,
        event_id: id("c"),
        chain: 0,
        seq: 1,
        links: Vec::new(),
    }];
    let applied = apply(store, changes).await;
    let mut changes = ChangeSet::new();
    changes.redactions = vec![(id("old"), id("red"))];
    changes.receipts = vec![Receipt {
        key: ReceiptKey {
            room_id: room.to_owned(),
            user_id: "@a:s".to_owned(),
            kind: "m.read".to_owned(),
            thread: None,
        },
        event_id: id("m1"),
        event_pos: applied.stream[1],
        ts: 1,
    }];
    apply(store, changes).await;
}

/// The ids of `room`'s events in the order [`fill`] stores them.
fn event_ids(room: &str) -> Vec<String> {
    ["c", "m1", "m2", "red", "old", "out", "rej"].iter().map(|n| format!("${room}{n}")).collect()
}

/// Whether everything [`fill`] stored for `room` reads back (`true`) or nothing does.
async fn readable(store: &Store, room: &str) -> bool {
    let ids = event_ids(room);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let events = store.events(&refs).await.expect("reads events");
    let whole = events.len() == ids.len();
    let info = store.room(room).await.expect("reads the room");
    let timeline = store
        .timeline(room, StreamPos(u64::MAX), Direction::Backwards, 10)
        .await
        .expect("reads the timeline");
    let backfilled = store
        .backfilled(room, BackfillPos(0), Direction::Backwards, 10)
        .await
        .expect("reads backfill");
    let members = store.members(room).await.expect("reads members");
    let rooms_of_a = store.rooms_of_user("@a:s").await.expect("reads a user's rooms");
    let in_a = rooms_of_a.iter().any(|(r, _)| r == room);
    let forgotten = store.forgotten(room, "@b:s").await.expect("reads forgotten");
    let receipts = store.user_receipts(room, "@a:s").await.expect("reads receipts");
    let aliases = store.room_aliases(room).await.expect("reads aliases");
    let alias = store.alias(&format!("#{}:s", &room[1..])).await.expect("reads an alias");
    let published = store.published(room).await.expect("reads the directory");
    let listed = store.appservice_listings().await.expect("reads the lists");
    let listed = listed.iter().any(|l| l.room_id == room);
    let public = store.public_join_rooms().await.expect("reads public rooms");
    let public = public.iter().any(|r| r == room);
    let index = store.auth_chain_index(room, 0, 10).await.expect("reads the index");
    let found = search_ids(store, &query("elephant", &[room])).await;
    let relation = store.relation_of(&format!("${room}m2")).await.expect("reads a relation");
    let redaction = store.redaction_of(&format!("${room}old")).await.expect("reads a redaction");
    let stream = store
        .stream_range(StreamPos(0), store.stream_position().await.expect("head"), 100)
        .await
        .expect("reads the stream");
    let streamed = stream.iter().filter(|item| item.room_id == room).count();
    let parts = [
        whole,
        info.is_some(),
        timeline.len() == 4,
        backfilled.len() == 1,
        members.len() == 2,
        in_a,
        forgotten,
        receipts.len() == 1,
        aliases.len() == 1,
        alias.is_some(),
        published,
        listed,
        public,
        index.len() == 1,
        found.len() == 1,
        relation.is_some(),
        redaction.is_some(),
        streamed == 4,
    ];
    let gone = [
        events.is_empty(),
        info.is_none(),
        timeline.is_empty(),
        backfilled.is_empty(),
        members.is_empty(),
        !in_a,
        !forgotten,
        receipts.is_empty(),
        aliases.is_empty(),
        alias.is_none(),
        !published,
        !listed,
        !public,
        index.is_empty(),
        found.is_empty(),
        relation.is_none(),
        redaction.is_none(),
        streamed == 0,
    ];
    if parts.iter().all(|p| *p) {
        return true;
    }
    assert!(gone.iter().all(|g| *g), "{room} is neither whole ({parts:?}) nor gone ({gone:?})");
    false
}

/// A purge deletes every event of the room (whatever its status) and everything that names
/// the room, answers the events' ids, and leaves another room as it was; purging again, or a
/// room never stored, deletes nothing. The room can be created again afterwards.
pub async fn purging_a_room_deletes_it_whole(store: Store) {
    fill(&store, "!p").await;
    fill(&store, "!k").await;
    assert!(readable(&store, "!p").await && readable(&store, "!k").await);

    let mut purged = store.purge_room("!p").await.expect("purges");
    purged.sort();
    let mut expected = event_ids("!p");
    expected.sort();
    assert_eq!(purged, expected);
    assert!(!readable(&store, "!p").await, "the purged room is gone");
    assert!(readable(&store, "!k").await, "the other room is untouched");

    assert!(store.purge_room("!p").await.expect("purges again").is_empty());
    assert!(store.purge_room("!never").await.expect("purges nothing").is_empty());

    let mut changes = ChangeSet::new();
    changes.rooms.push(create_room("!p"));
    apply(&store, changes).await;
    assert!(store.room("!p").await.expect("reads").is_some(), "made again");
}

/// Purging some events deletes them with their positions, relation and search entries, and
/// skips ids of other rooms or not stored; the rest of the room stays.
pub async fn purging_events_deletes_them_alone(store: Store) {
    fill(&store, "!h").await;
    fill(&store, "!k").await;
    let asked: Vec<String> =
        ["$!hm1", "$!hm2", "$!hold", "$!kc", "$!hnever"].iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(store.purge_events("!h", &asked).await.expect("purges"), 3);

    let events =
        store.events(&["$!hm1", "$!hm2", "$!hold", "$!hc", "$!hred"]).await.expect("reads");
    let mut kept: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    kept.sort_unstable();
    assert_eq!(kept, ["$!hc", "$!hred"]);
    let timeline = store
        .timeline("!h", StreamPos(u64::MAX), Direction::Backwards, 10)
        .await
        .expect("reads the timeline");
    let timeline: Vec<&str> = timeline.iter().map(|i| i.event_id.as_str()).collect();
    assert_eq!(timeline, ["$!hred", "$!hc"]);
    let head = store.stream_position().await.expect("head");
    let stream = store.stream_range(StreamPos(0), head, 100).await.expect("reads the stream");
    assert_eq!(stream.iter().filter(|i| i.room_id == "!h").count(), 2);
    let backfilled =
        store.backfilled("!h", BackfillPos(0), Direction::Backwards, 10).await.expect("reads");
    assert!(backfilled.is_empty());
    assert!(store.backfill_position("$!hold").await.expect("reads").is_none());
    assert!(store.redaction_of("$!hold").await.expect("reads").is_none());
    assert!(store.relation_of("$!hm2").await.expect("reads").is_none());
    assert!(search_ids(&store, &query("elephant", &["!h"])).await.is_empty());
    let relations = store
        .relations("!h", "$!hm1", None, StreamPos(u64::MAX), Direction::Backwards, 10)
        .await
        .expect("reads relations");
    assert!(relations.is_empty());
    assert!(store.room("!h").await.expect("reads").is_some(), "the room stays");
    assert_eq!(store.members("!h").await.expect("reads").len(), 2);
    assert!(readable(&store, "!k").await, "the other room is untouched");
}
