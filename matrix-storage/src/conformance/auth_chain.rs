//! Rooms' auth-chain indexes, and reading many events at once.

use std::collections::BTreeMap;

use super::{Store, apply, create_room, event};
use crate::{AuthChainEntry, ChangeSet, ErrorKind};

fn entry(room: &str, index: u32, chain: u32, seq: u32, links: &[(u32, u32)]) -> AuthChainEntry {
    AuthChainEntry {
        room_id: room.to_owned(),
        index,
        event_id: format!("${room}/{index}"),
        chain,
        seq,
        links: links.to_vec(),
    }
}

/// Entries come back as added, links and all, by room and by number from `from`, at most
/// `limit`; entries added later continue a room's index; rooms whose ids share a prefix are
/// apart.
pub async fn auth_chain_index_round_trips(store: Store) {
    let a = vec![
        entry("!a", 0, 1, 1, &[]),
        entry("!a", 1, 1, 2, &[]),
        entry("!a", 2, 2, 1, &[(1, 2)]),
        entry("!a", 3, 3, 1, &[(1, 1), (2, 1), (u32::MAX, u32::MAX)]),
        entry("!a", 4, u32::MAX, u32::MAX, &[(0, 0)]),
    ];
    let b = vec![entry("!ab", 0, 7, 1, &[(8, 3)]), entry("!ab", u32::MAX, 9, 2, &[])];
    let mut changes = ChangeSet::new();
    // Out of order in the change set: numbered by `index`, not by position.
    changes.auth_chain = vec![a[2].clone(), a[0].clone(), b[1].clone(), a[1].clone(), b[0].clone()];
    apply(&store, changes).await;
    let mut changes = ChangeSet::new();
    changes.auth_chain = a[3..].to_vec();
    apply(&store, changes).await;

    let read = |room: &'static str, from: u32, limit: usize| {
        let store = store.clone();
        async move { store.auth_chain_index(room, from, limit).await.expect("reads") }
    };
    assert_eq!(read("!a", 0, 100).await, a);
    assert_eq!(read("!a", 2, 2).await, a[2..4].to_vec());
    assert_eq!(read("!a", 4, 1).await, a[4..].to_vec());
    assert_eq!(read("!a", 0, 0).await, Vec::new());
    assert_eq!(read("!a", 5, 10).await, Vec::new());
    assert_eq!(read("!a", u32::MAX, 10).await, Vec::new());
    assert_eq!(read("!ab", 0, 10).await, b);
    assert_eq!(read("!ab", 1, 10).await, b[1..].to_vec());
    assert_eq!(read("!ab", u32::MAX, 10).await, b[1..].to_vec());
    assert_eq!(read("!", 0, 10).await, Vec::new());
    assert_eq!(read("!nowhere", 0, 10).await, Vec::new());
}

/// A change set adding an entry under a number its room has stored, or one taking a number
/// twice, is a conflict, and nothing else of it is applied; the same number in another room
/// is not taken.
pub async fn an_auth_chain_index_taken_is_a_conflict(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms.push(create_room("!r"));
    changes.auth_chain = vec![entry("!r", 0, 1, 1, &[])];
    apply(&store, changes).await;

    let mut taken = ChangeSet::new();
    taken.events = vec![event("$x", "!r", &[], true)];
    taken.account_data = vec![("@a:x".to_owned(), None, "t".to_owned(), b"{}".to_vec())];
    let mut again = entry("!r", 0, 5, 5, &[(1, 1)]);
    again.event_id = "$x".to_owned();
    taken.auth_chain = vec![entry("!r", 1, 1, 2, &[]), again];
    let refused = store.apply(taken).await.expect_err("a number taken");
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert_eq!(store.account_data("@a:x", None, "t").await.expect("reads"), None);
    assert_eq!(store.event("$x").await.expect("reads"), None, "nothing of it applied");
    let index = store.auth_chain_index("!r", 0, 10).await.expect("reads");
    assert_eq!(index, vec![entry("!r", 0, 1, 1, &[])], "the stored entry is kept as it was");

    let mut twice = ChangeSet::new();
    twice.account_data = vec![("@a:x".to_owned(), None, "u".to_owned(), b"{}".to_vec())];
    twice.auth_chain = vec![entry("!r", 1, 1, 2, &[]), entry("!r", 1, 2, 1, &[])];
    let refused = store.apply(twice).await.expect_err("a number taken twice");
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert_eq!(store.account_data("@a:x", None, "u").await.expect("reads"), None);
    assert_eq!(store.auth_chain_index("!r", 0, 10).await.expect("reads").len(), 1);

    let mut next = ChangeSet::new();
    next.auth_chain = vec![entry("!r", 1, 1, 2, &[]), entry("!s", 0, 1, 1, &[])];
    apply(&store, next).await;
    assert_eq!(store.auth_chain_index("!r", 0, 10).await.expect("reads").len(), 2);
    assert_eq!(store.auth_chain_index("!s", 0, 10).await.expect("reads").len(), 1);
}

/// `events` gives the stored events among the ids asked for, each once, as `event` gives
/// them; unknown ids are skipped.
pub async fn events_in_batch(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!r"), create_room("!s")];
    changes.events = vec![
        event("$a", "!r", &[], true),
        event("$b", "!r", &["$a"], false),
        event("$c", "!s", &[], true),
    ];
    apply(&store, changes).await;

    let found = store.events(&["$c", "$nope", "$a", "$c", "$a"]).await.expect("reads");
    let by_id: BTreeMap<String, crate::StoredEvent> =
        found.iter().map(|e| (e.event_id.clone(), e.clone())).collect();
    assert_eq!(found.len(), 2, "each once: {found:?}");
    for id in ["$a", "$c"] {
        let alone = store.event(id).await.expect("reads").expect("stored");
        assert_eq!(by_id.get(id), Some(&alone));
    }
    assert!(store.events(&[]).await.expect("reads").is_empty());
    assert!(store.events(&["$nope", "$other"]).await.expect("reads").is_empty());
    let all = store.events(&["$b", "$a", "$c"]).await.expect("reads");
    let mut ids: Vec<&str> = all.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["$a", "$b", "$c"]);
    assert_eq!(all.iter().find(|e| e.event_id == "$b").expect("$b").auth_events, ["$a"]);
}

/// Adds index entries to a change set (for the reopen test).
pub(super) fn fill(changes: &mut crate::ChangeSet) {
    changes.auth_chain.push(entry("!r", 0, 1, 1, &[]));
    changes.auth_chain.push(entry("!r", 1, 2, 1, &[(1, 1)]));
}

/// What [`fill`] wrote (for the reopen test).
pub(super) async fn everything(store: &Store) -> Vec<AuthChainEntry> {
    store.auth_chain_index("!r", 0, 100).await.expect("reads")
}
