//! State snapshots: deltas, lookups and whole states, on stacks of layers that backends
//! compact as they like (long chains, removals, branches, parents deep in a chain).

use std::collections::BTreeMap;

use super::{Store, apply, set};
use crate::{ChangeSet, NewSnapshot, SnapshotId, StateEntry};

/// Snapshots are deltas: lookups see the parent's entries, overrides and removals.
pub async fn state_deltas_and_lookups(store: Store) {
    let mut changes = ChangeSet::new();
    changes.snapshot = Some(NewSnapshot {
        parent: None,
        changes: vec![set(("m.room.create", ""), "$c"), set(("m.room.topic", ""), "$t1")],
    });
    let base = apply(&store, changes).await.snapshot.expect("snapshot");
    let mut changes = ChangeSet::new();
    changes.snapshot = Some(NewSnapshot {
        parent: Some(base),
        changes: vec![
            set(("m.room.topic", ""), "$t2"),
            set(("m.room.member", "@a:x"), "$m"),
            ("m.room.create".to_owned(), String::new(), None),
        ],
    });
    let child = apply(&store, changes).await.snapshot.expect("snapshot");
    assert_ne!(base, child);
    let get = |s: SnapshotId, k: &'static str, sk: &'static str| {
        let store = store.clone();
        async move { store.state_get(s, k, sk).await.expect("reads") }
    };
    assert_eq!(get(base, "m.room.topic", "").await.as_deref(), Some("$t1"));
    assert_eq!(get(child, "m.room.topic", "").await.as_deref(), Some("$t2"));
    assert_eq!(get(child, "m.room.member", "@a:x").await.as_deref(), Some("$m"));
    assert_eq!(get(base, "m.room.member", "@a:x").await, None);
    assert_eq!(get(child, "m.room.create", "").await, None, "removed in the child");
    let full = store.state_full(child).await.expect("reads");
    let entry = |k: &str, s: &str, e: &str| StateEntry {
        kind: k.to_owned(),
        state_key: s.to_owned(),
        event_id: e.to_owned(),
    };
    assert_eq!(full, vec![entry("m.room.member", "@a:x", "$m"), entry("m.room.topic", "", "$t2")]);
}

/// A chain of many deltas still answers every key, whatever the backend does to bound walks.
pub async fn long_delta_chains(store: Store) {
    let mut parent = None;
    let mut snapshots = Vec::new();
    for i in 0..300 {
        let mut changes = ChangeSet::new();
        changes.snapshot = Some(NewSnapshot {
            parent,
            changes: vec![set(("m.room.member", &format!("@u{i}:x")), &format!("$m{i}"))],
        });
        let id = apply(&store, changes).await.snapshot.expect("snapshot");
        snapshots.push(id);
        parent = Some(id);
    }
    let last = snapshots[299];
    for i in [0, 1, 63, 64, 65, 150, 299] {
        let got = store.state_get(last, "m.room.member", &format!("@u{i}:x")).await.expect("reads");
        assert_eq!(got, Some(format!("$m{i}")), "member {i}");
    }
    assert_eq!(store.state_full(last).await.expect("reads").len(), 300);
    assert_eq!(store.state_full(snapshots[99]).await.expect("reads").len(), 100);
    assert_eq!(
        store.state_get(snapshots[10], "m.room.member", "@u11:x").await.expect("reads"),
        None
    );
}

type State = BTreeMap<(String, String), String>;

/// A change: `(type, state_key, event)`, `None` removing the key.
type Change = (String, String, Option<String>);

/// Snapshots written by a test and the state each should have.
struct History {
    store: Store,
    snapshots: Vec<(SnapshotId, State)>,
}

impl History {
    fn new(store: &Store) -> Self {
        History { store: store.clone(), snapshots: Vec::new() }
    }

    /// Writes a snapshot on the `parent`th one written (if any); returns its index.
    async fn write(&mut self, parent: Option<usize>, changes: Vec<Change>) -> usize {
        let mut state = parent.map(|p| self.snapshots[p].1.clone()).unwrap_or_default();
        for (kind, state_key, event) in &changes {
            match event {
                Some(event) => state.insert((kind.clone(), state_key.clone()), event.clone()),
                None => state.remove(&(kind.clone(), state_key.clone())),
            };
        }
        let mut set = ChangeSet::new();
        set.snapshot = Some(NewSnapshot { parent: parent.map(|p| self.snapshots[p].0), changes });
        let id = apply(&self.store, set).await.snapshot.expect("a snapshot");
        self.snapshots.push((id, state));
        self.snapshots.len() - 1
    }

    /// Snapshot `index` reads as it should: its whole state, and a lookup of each of `keys`.
    async fn check(&self, index: usize, keys: &[(String, String)]) {
        let (id, state) = &self.snapshots[index];
        let full = self.store.state_full(*id).await.expect("reads");
        let expected: Vec<StateEntry> = state
            .iter()
            .map(|((kind, state_key), event_id)| StateEntry {
                kind: kind.clone(),
                state_key: state_key.clone(),
                event_id: event_id.clone(),
            })
            .collect();
        assert_eq!(full, expected, "the whole state of snapshot {index}");
        for key in keys {
            let got = self.store.state_get(*id, &key.0, &key.1).await.expect("reads");
            assert_eq!(got.as_ref(), state.get(key), "{key:?} in snapshot {index}");
        }
    }
}

fn member(n: u64) -> (String, String) {
    ("m.room.member".to_owned(), format!("@u{n}:x"))
}

fn join(n: u64, event: &str) -> Change {
    let (kind, state_key) = member(n);
    (kind, state_key, Some(event.to_owned()))
}

fn leave(n: u64) -> Change {
    let (kind, state_key) = member(n);
    (kind, state_key, None)
}

/// A key removed in one snapshot and set again many snapshots later (after the layers below
/// were rewritten several times) reads as removed in between and as set after; so does a
/// key removed in a big change set.
pub async fn removed_then_set_again(store: Store) {
    let mut history = History::new(&store);
    let base = (0..40).map(|n| join(n, &format!("$j{n}"))).collect();
    let mut last = history.write(None, base).await;
    last = history.write(Some(last), vec![leave(3), leave(7)]).await;
    let removed = last;
    for n in 40..300 {
        last = history.write(Some(last), vec![join(n, &format!("$j{n}"))]).await;
    }
    last = history.write(Some(last), vec![join(3, "$again")]).await;
    let again = last;
    for n in 300..400 {
        last = history.write(Some(last), vec![join(n, &format!("$j{n}"))]).await;
    }
    // Most of the room leaves at once, then one of them comes back.
    let leaving: Vec<Change> = (100..250).map(leave).collect();
    last = history.write(Some(last), leaving).await;
    for n in 400..460 {
        last = history.write(Some(last), vec![join(n, &format!("$j{n}"))]).await;
    }
    last = history.write(Some(last), vec![join(120, "$back")]).await;
    let keys: Vec<(String, String)> = [3, 7, 8, 120, 121, 299, 459].map(member).to_vec();
    for index in [removed, removed + 1, again - 1, again, again + 1, last - 1, last] {
        history.check(index, &keys).await;
    }
}

/// A long chain, with joins, leaves and changes to the same keys, reads right at every
/// snapshot after crossing many rewrites of its layers, old snapshots too.
pub async fn long_chains_across_compactions(store: Store) {
    let mut history = History::new(&store);
    let mut last = history.write(None, vec![set(("m.room.create", ""), "$c")]).await;
    for i in 1..=700u64 {
        let changes = match i % 10 {
            // A leave of someone who joined earlier.
            3 => vec![leave(i / 2)],
            // The same key over and over.
            5 => vec![set(("m.room.topic", ""), &format!("$t{i}"))],
            // Several keys at once.
            7 => (0..3).map(|k| join(10_000 + i * 3 + k, &format!("$b{i}.{k}"))).collect(),
            _ => vec![join(i, &format!("$j{i}"))],
        };
        last = history.write(Some(last), changes).await;
    }
    let mut keys: Vec<(String, String)> = [1, 2, 6, 333, 350, 699, 700].map(member).to_vec();
    keys.push(("m.room.topic".to_owned(), String::new()));
    keys.push(("m.room.create".to_owned(), String::new()));
    keys.push(("m.room.nothing".to_owned(), String::new()));
    for index in [0, 1, 2, 9, 10, 63, 64, 65, 128, 255, 256, 257, 400, 511, 512, 699, 700] {
        history.check(index, &keys).await;
    }
}

/// Two snapshots on one parent (a fork, as state resolution makes) each read their own
/// changes, and both branches keep growing apart.
pub async fn branches_from_one_parent(store: Store) {
    let mut history = History::new(&store);
    let mut fork = history.write(None, vec![set(("m.room.create", ""), "$c")]).await;
    for n in 0..150 {
        fork = history.write(Some(fork), vec![join(n, &format!("$j{n}"))]).await;
    }
    let mut left = history.write(Some(fork), vec![join(1_000, "$left"), leave(5)]).await;
    let mut right = history.write(Some(fork), vec![join(1_000, "$right"), leave(6)]).await;
    let (first_left, first_right) = (left, right);
    for n in 0..100 {
        left = history.write(Some(left), vec![join(2_000 + n, &format!("$l{n}"))]).await;
        right = history.write(Some(right), vec![join(3_000 + n, &format!("$r{n}"))]).await;
    }
    let keys: Vec<(String, String)> =
        [5, 6, 149, 1_000, 2_000, 3_000, 2_099, 3_099].map(member).to_vec();
    for index in [fork, first_left, first_right, left, right] {
        history.check(index, &keys).await;
    }
}

/// A snapshot whose parent is an old one deep in a long chain reads as that parent plus its
/// changes, and a chain grown from it too.
pub async fn a_parent_deep_in_a_chain(store: Store) {
    let mut history = History::new(&store);
    let mut last = history.write(None, vec![set(("m.room.create", ""), "$c")]).await;
    for n in 0..400 {
        last = history.write(Some(last), vec![join(n, &format!("$j{n}"))]).await;
    }
    let mut keys: Vec<(String, String)> = [0, 36, 37, 100, 399, 5_000, 5_029].map(member).to_vec();
    keys.push(("m.room.create".to_owned(), String::new()));
    for old in [1, 38, 200] {
        let mut from = history.write(Some(old), vec![join(5_000, "$late"), leave(0)]).await;
        let first = from;
        for n in 1..30 {
            from = history.write(Some(from), vec![join(5_000 + n, &format!("$d{n}"))]).await;
        }
        history.check(first, &keys).await;
        history.check(from, &keys).await;
        history.check(old, &keys).await;
    }
    history.check(last, &keys).await;
}
