//! Backfilled history: positions before the timeline, apart from the stream.

use super::{Store, apply, create_room, event};
use crate::{BackfillPos, ChangeSet, Direction, ErrorKind, StreamPos};

/// Backfilled events take per-room positions counting backwards from the timeline's start,
/// never stream positions: the stream and the timeline do not see them, `backfilled` reads
/// them both ways, an event positioned already keeps its position, and an event that is not
/// stored in that room is refused.
pub async fn backfill_goes_before_the_timeline(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!r"), create_room("!s")];
    changes.events = vec![event("$join", "!r", &[], true), event("$state", "!r", &[], false)];
    apply(&store, changes).await;
    let head = store.stream_position().await.expect("reads");

    // Two batches, newest first; the outlier `$state` joins the history, `$join` (in the
    // timeline) and a repeated event keep their positions.
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$b1", "!r", &[], false), event("$b2", "!r", &[], false)];
    changes.backfill = ["$b1", "$join", "$b2", "$b1"]
        .iter()
        .map(|id| ("!r".to_owned(), (*id).to_owned()))
        .collect();
    let applied = apply(&store, changes).await;
    assert!(applied.stream.is_empty(), "backfilled events take no stream position");
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$b3", "!r", &[], false)];
    changes.backfill = vec![("!r".into(), "$state".into()), ("!r".into(), "$b3".into())];
    apply(&store, changes).await;

    assert_eq!(store.stream_position().await.expect("reads"), head, "the stream did not move");
    assert_eq!(
        store.stream_range(StreamPos(0), StreamPos(u64::MAX), 10).await.expect("reads").len(),
        1
    );
    let timeline =
        store.timeline("!r", StreamPos(u64::MAX), Direction::Backwards, 10).await.expect("reads");
    assert_eq!(timeline.len(), 1, "the timeline holds only what was appended");
    let ids = |items: Vec<crate::BackfillItem>| -> Vec<(u64, String)> {
        items.into_iter().map(|i| (i.pos.0, i.event_id)).collect()
    };
    let all =
        store.backfilled("!r", BackfillPos(0), Direction::Backwards, 10).await.expect("reads");
    let expected = [(1, "$b1"), (2, "$b2"), (3, "$state"), (4, "$b3")];
    let expected: Vec<(u64, String)> =
        expected.iter().map(|(p, id)| (*p, (*id).to_owned())).collect();
    assert_eq!(ids(all), expected);
    let page =
        store.backfilled("!r", BackfillPos(1), Direction::Backwards, 2).await.expect("reads");
    assert_eq!(ids(page), expected[1..3].to_vec());
    let back =
        store.backfilled("!r", BackfillPos(3), Direction::Forwards, 10).await.expect("reads");
    assert_eq!(ids(back), vec![expected[1].clone(), expected[0].clone()]);
    assert!(
        store
            .backfilled("!r", BackfillPos(0), Direction::Forwards, 10)
            .await
            .expect("reads")
            .is_empty()
    );
    assert!(
        store
            .backfilled("!r", BackfillPos(u64::MAX), Direction::Backwards, 10)
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(
        store.backfilled("!r", BackfillPos(u64::MAX), Direction::Forwards, 1).await.expect("reads")
            [0]
        .event_id,
        "$b3"
    );
    assert!(
        store
            .backfilled("!s", BackfillPos(0), Direction::Backwards, 10)
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(store.backfill_position("$b2").await.expect("reads"), Some(BackfillPos(2)));
    assert_eq!(store.backfill_position("$join").await.expect("reads"), None);
    let stored = store.event("$b3").await.expect("reads").expect("stored");
    assert_eq!(stored.stream, None);

    // Each room counts on its own; unknown events and events of another room are refused.
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$s1", "!s", &[], false)];
    changes.backfill = vec![("!s".into(), "$s1".into())];
    apply(&store, changes).await;
    assert_eq!(store.backfill_position("$s1").await.expect("reads"), Some(BackfillPos(1)));
    for (room, id) in [("!r", "$nowhere"), ("!s", "$b1")] {
        let mut changes = ChangeSet::new();
        changes.backfill = vec![(room.to_owned(), id.to_owned())];
        let err = store.apply(changes).await.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::MissingReference, "{room} {id}");
    }
    assert_eq!(
        store
            .backfilled("!r", BackfillPos(0), Direction::Backwards, 10)
            .await
            .expect("reads")
            .len(),
        4
    );
}
