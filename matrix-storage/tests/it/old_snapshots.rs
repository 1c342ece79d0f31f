//! State snapshots as schema 2 wrote them, in sled and in PostgreSQL alike: a delta on its
//! parent, and every 64th snapshot of a chain stored whole, without a parent (the writers in
//! `src/sled.rs` and `src/postgres/apply.rs` at 0bff1f2), for the upgrade tests; and the
//! check that a store reads them, and snapshots written on them, right.

use std::collections::BTreeMap;

use matrix_storage::{ChangeSet, NewSnapshot, SnapshotId, StateEntry, Storage};

/// Deltas before a snapshot was stored whole.
const FULL_EVERY: u64 = 64;

type State = BTreeMap<(String, String), String>;

/// A snapshot record as schema 2 stored it, over interned keys and events (indexes into
/// [`OldChains::keys`] and [`OldChains::events`]).
pub(crate) struct OldSnapshot {
    pub(crate) parent: Option<u64>,
    pub(crate) depth: u64,
    /// Sorted by key; `None` removes it.
    pub(crate) entries: Vec<(u64, Option<u64>)>,
}

/// A chain of 150 snapshots (a join each, a removal and the key set again later) crossing two
/// whole copies, and a branch from the middle of it.
pub(crate) struct OldChains {
    pub(crate) keys: Vec<(String, String)>,
    pub(crate) events: Vec<String>,
    pub(crate) snapshots: Vec<OldSnapshot>,
    /// What each snapshot holds.
    pub(crate) states: Vec<State>,
}

/// The changes of snapshot `i` of the chain: `(member, event)`, `None` for a leave.
fn change(i: u64) -> (u64, Option<String>) {
    match i {
        70 => (5, None),
        100 => (5, Some("$again".to_owned())),
        151 => (1_000, Some("$branch".to_owned())),
        _ => (i, Some(format!("$j{i}"))),
    }
}

fn member(n: u64) -> (String, String) {
    ("m.room.member".to_owned(), format!("@u{n}:x"))
}

impl OldChains {
    pub(crate) fn new() -> Self {
        let mut chains = OldChains {
            keys: Vec::new(),
            events: Vec::new(),
            snapshots: Vec::new(),
            states: Vec::new(),
        };
        // 0..150 a chain; 151 on 30, 152 on 151.
        for i in 0..153u64 {
            let parent = match i {
                0 => None,
                151 => Some(30),
                _ => Some(i - 1),
            };
            let (who, event) = change(i);
            chains.write(parent, member(who), event);
        }
        chains
    }

    fn intern<T: PartialEq>(list: &mut Vec<T>, item: T) -> u64 {
        match list.iter().position(|x| *x == item) {
            Some(i) => i as u64,
            None => {
                list.push(item);
                list.len() as u64 - 1
            }
        }
    }

    fn write(&mut self, parent: Option<u64>, key: (String, String), event: Option<String>) {
        let mut state = parent.map(|p| self.states[p as usize].clone()).unwrap_or_default();
        match &event {
            Some(event) => state.insert(key.clone(), event.clone()),
            None => state.remove(&key),
        };
        let key = Self::intern(&mut self.keys, key);
        let event = event.map(|e| Self::intern(&mut self.events, e));
        let record = match parent {
            Some(p) if self.snapshots[p as usize].depth + 1 >= FULL_EVERY => {
                let mut whole: BTreeMap<u64, u64> = BTreeMap::new();
                for ((kind, state_key), event) in &state {
                    let k = Self::intern(&mut self.keys, (kind.clone(), state_key.clone()));
                    whole.insert(k, Self::intern(&mut self.events, event.clone()));
                }
                let entries = whole.into_iter().map(|(k, e)| (k, Some(e))).collect();
                OldSnapshot { parent: None, depth: 0, entries }
            }
            Some(p) => OldSnapshot {
                parent: Some(p),
                depth: self.snapshots[p as usize].depth + 1,
                entries: vec![(key, event)],
            },
            None => OldSnapshot { parent: None, depth: 0, entries: vec![(key, event)] },
        };
        self.snapshots.push(record);
        self.states.push(state);
    }
}

/// Snapshot `id` of `store` holds `state`: whole, and looked up key by key (a few absent).
pub(crate) async fn check(store: &dyn Storage, id: u64, state: &State) {
    let full = store.state_full(SnapshotId(id)).await.expect("reads");
    let expected: Vec<StateEntry> = state
        .iter()
        .map(|((kind, state_key), event_id)| StateEntry {
            kind: kind.clone(),
            state_key: state_key.clone(),
            event_id: event_id.clone(),
        })
        .collect();
    assert_eq!(full, expected, "snapshot {id}");
    for n in [0, 1, 5, 29, 30, 31, 63, 64, 65, 127, 128, 149, 150, 1_000, 2_000, 2_050] {
        let key = member(n);
        let got = store.state_get(SnapshotId(id), &key.0, &key.1).await.expect("reads");
        assert_eq!(got.as_ref(), state.get(&key), "{key:?} in snapshot {id}");
    }
}

/// Every old snapshot reads as written; then new snapshots on old ones (the end of the chain,
/// the branch, one deep in the chain) read right, and are returned with what they hold.
pub(crate) async fn check_and_grow(store: &dyn Storage, chains: &OldChains) -> Vec<(u64, State)> {
    for (id, state) in chains.states.iter().enumerate() {
        check(store, id as u64, state).await;
    }
    let mut grown = Vec::new();
    for start in [150u64, 152, 40] {
        let mut parent = start;
        let mut state = chains.states[start as usize].clone();
        for n in 0..100u64 {
            let (key, event) = (member(2_000 + n), format!("$new{start}.{n}"));
            let removed = member(n);
            let mut changes = ChangeSet::new();
            changes.snapshot = Some(NewSnapshot {
                parent: Some(SnapshotId(parent)),
                changes: vec![
                    (key.0.clone(), key.1.clone(), Some(event.clone())),
                    (removed.0.clone(), removed.1.clone(), None),
                ],
            });
            parent = store.apply(changes).await.expect("applies").snapshot.expect("made").0;
            state.insert(key, event);
            state.remove(&removed);
            if n % 33 == 0 || n == 99 {
                check(store, parent, &state).await;
                grown.push((parent, state.clone()));
            }
        }
    }
    grown
}
