//! The relations index.

use super::{Store, apply, create_room, event};
use crate::{ChangeSet, Direction, NewRelation, StreamPos};

fn relation(child: &str, parent: &str, rel_type: &str, sender: &str) -> NewRelation {
    NewRelation {
        event_id: child.to_owned(),
        room_id: "!r".to_owned(),
        parent: parent.to_owned(),
        rel_type: rel_type.to_owned(),
        kind: "m.room.message".to_owned(),
        sender: sender.to_owned(),
    }
}

fn ids(relations: &[crate::Relation]) -> Vec<&str> {
    relations.iter().map(|r| r.event_id.as_str()).collect()
}

/// Relations take their event's stream position (in the change set or stored before), are
/// read by parent both ways and by type, summarised, listed as thread replies per room; an
/// event without a position, one indexed already and a redacted one are skipped; a
/// redaction takes its event out; another room's parent of the same id is apart.
pub async fn relations_index_round_trips(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!r"), create_room("!s")];
    changes.events = vec![
        event("$root", "!r", &[], true),
        event("$edit", "!r", &[], true),
        event("$t1", "!r", &[], true),
        event("$outlier", "!r", &[], false),
    ];
    changes.relations = vec![
        relation("$edit", "$root", "m.replace", "@a:x"),
        relation("$t1", "$root", "m.thread", "@b:x"),
        relation("$outlier", "$root", "m.thread", "@b:x"),
        relation("$unknown", "$root", "m.thread", "@b:x"),
    ];
    let applied = apply(&store, changes).await;
    let (edit_pos, t1_pos) = (applied.stream[1], applied.stream[2]);

    // Stored first, indexed later (what indexing existing events does), and again.
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$t2", "!r", &[], true), event("$ref", "!r", &[], true)];
    apply(&store, changes).await;
    let mut changes = ChangeSet::new();
    changes.relations = vec![
        relation("$t2", "$root", "m.thread", "@c:x"),
        relation("$ref", "$root", "org.example.custom", "@c:x"),
        relation("$t1", "$root", "m.thread", "@b:x"),
    ];
    let mut other = relation("$s1", "$root", "m.thread", "@d:x");
    other.room_id = "!s".to_owned();
    changes.events = vec![event("$s1", "!s", &[], true)];
    changes.relations.push(other);
    apply(&store, changes).await;

    let all = store
        .relations("!r", "$root", None, StreamPos(u64::MAX), Direction::Backwards, 10)
        .await
        .expect("reads");
    assert_eq!(ids(&all), ["$ref", "$t2", "$t1", "$edit"]);
    assert_eq!(all[3].pos, edit_pos);
    assert_eq!(
        (all[2].rel_type.as_str(), all[2].sender.as_str(), all[2].parent.as_str()),
        ("m.thread", "@b:x", "$root")
    );
    assert_eq!(all[2].kind, "m.room.message");
    let forwards = store
        .relations("!r", "$root", None, edit_pos, Direction::Forwards, 2)
        .await
        .expect("reads");
    assert_eq!(ids(&forwards), ["$t1", "$t2"]);
    let threads = store
        .relations("!r", "$root", Some("m.thread"), StreamPos(u64::MAX), Direction::Backwards, 1)
        .await
        .expect("reads");
    assert_eq!(ids(&threads), ["$t2"]);
    let before = store
        .relations("!r", "$root", Some("m.thread"), threads[0].pos, Direction::Backwards, 5)
        .await
        .expect("reads");
    assert_eq!(ids(&before), ["$t1"]);
    assert!(
        store
            .relations("!r", "$t1", None, StreamPos(u64::MAX), Direction::Backwards, 5)
            .await
            .expect("reads")
            .is_empty()
    );

    let summary = store
        .relation_summary("!r", "$root", "m.thread", StreamPos(u64::MAX), "@b:x")
        .await
        .expect("reads");
    assert_eq!(summary.count, 2);
    assert!(summary.by_sender);
    assert_eq!(summary.latest.as_ref().map(|r| r.event_id.as_str()), Some("$t2"));
    let early =
        store.relation_summary("!r", "$root", "m.thread", t1_pos, "@c:x").await.expect("reads");
    assert_eq!((early.count, early.by_sender), (1, false));
    assert_eq!(early.latest.map(|r| r.event_id), Some("$t1".to_owned()));
    let none = store
        .relation_summary("!r", "$edit", "m.thread", StreamPos(u64::MAX), "@b:x")
        .await
        .expect("reads");
    assert_eq!(none, crate::RelationSummary::default());

    let replies = store.thread_replies("!r", StreamPos(u64::MAX), 10).await.expect("reads");
    assert_eq!(ids(&replies), ["$t2", "$t1"]);
    assert_eq!(replies[0].parent, "$root");
    let page = store.thread_replies("!r", replies[0].pos, 10).await.expect("reads");
    assert_eq!(ids(&page), ["$t1"]);
    let other = store.thread_replies("!s", StreamPos(u64::MAX), 10).await.expect("reads");
    assert_eq!(ids(&other), ["$s1"]);

    assert_eq!(
        store.relation_of("$edit").await.expect("reads").map(|r| r.parent),
        Some("$root".to_owned())
    );
    assert_eq!(store.relation_of("$outlier").await.expect("reads"), None);
    assert_eq!(store.relation_of("$root").await.expect("reads"), None);

    // A redaction takes its event out of every read; indexing it again does nothing.
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$redaction", "!r", &[], true)];
    changes.redactions = vec![("$t2".to_owned(), "$redaction".to_owned())];
    apply(&store, changes).await;
    let mut changes = ChangeSet::new();
    changes.relations = vec![relation("$t2", "$root", "m.thread", "@c:x")];
    apply(&store, changes).await;
    assert_eq!(store.relation_of("$t2").await.expect("reads"), None);
    let replies = store.thread_replies("!r", StreamPos(u64::MAX), 10).await.expect("reads");
    assert_eq!(ids(&replies), ["$t1"]);
    let summary = store
        .relation_summary("!r", "$root", "m.thread", StreamPos(u64::MAX), "@c:x")
        .await
        .expect("reads");
    assert_eq!((summary.count, summary.by_sender), (1, false));
}
