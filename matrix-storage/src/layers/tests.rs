//! The layering policy on its own: merging, compaction, how deep stacks get and how many
//! entries a chain of changes writes.

use super::*;

type Records = Vec<(Vec<(u64, u64)>, Vec<(u64, Option<u64>)>)>;

/// Writes a snapshot with `changes` on `parent` into `records` (`(stack, entries)` each, the
/// stack bottom first with the record itself last); returns its id.
fn write(records: &mut Records, parent: Option<usize>, changes: Vec<(u64, Option<u64>)>) -> usize {
    let stack = parent.map(|p| records[p].0.clone()).unwrap_or_default();
    let (kept, entries) =
        compact(&stack, changes, |id| Ok(records[id as usize].1.clone())).expect("compacts");
    let id = records.len();
    let mut stack = stack[..kept].to_vec();
    stack.push((id as u64, entries.len() as u64));
    records.push((stack, entries));
    id
}

/// The state of snapshot `id`, read the way backends read it.
fn state(records: &Records, id: usize) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, Option<u64>)> = Vec::new();
    for &(layer, _) in records[id].0.iter().rev() {
        merged = merge(records[layer as usize].1.clone(), merged);
    }
    merged.into_iter().filter_map(|(k, e)| Some((k, e?))).collect()
}

#[test]
fn the_upper_entry_wins() {
    let lower = vec![(1, Some("a")), (2, Some("b")), (4, None)];
    let upper = vec![(2, None), (3, Some("c")), (4, Some("d"))];
    assert_eq!(
        merge(lower, upper),
        vec![(1, Some("a")), (2, None), (3, Some("c")), (4, Some("d"))]
    );
}

#[test]
fn a_whole_state_drops_removals() {
    let mut records = Records::new();
    let root = write(&mut records, None, vec![(1, Some(10)), (2, None)]);
    assert_eq!(records[root].1, vec![(1, Some(10))], "a root has no removals");
    // One change on a one-entry record absorbs it: a whole state again, without the removal.
    let next = write(&mut records, Some(root), vec![(1, None), (3, Some(30))]);
    assert_eq!(records[next].0.len(), 1);
    assert_eq!(records[next].1, vec![(3, Some(30))]);
}

/// Every snapshot of a long chain with removals, re-sets and branches reads as the plain
/// replay of its changes.
#[test]
fn stacks_read_as_their_history() {
    let mut records = Records::new();
    let mut expected: Vec<std::collections::BTreeMap<u64, u64>> = Vec::new();
    let mut parent = None;
    for i in 0..3_000u64 {
        // Mostly a chain; every 7th snapshot branches off an older one.
        if i % 7 == 6 {
            parent = Some(((i * 7_919) % records.len() as u64) as usize);
        }
        let key = if i % 5 == 0 { i % 40 } else { 100 + i };
        let event = if i % 11 == 3 { None } else { Some(i + 1) };
        let id = write(&mut records, parent, vec![(key, event)]);
        let mut state = parent.map(|p| expected[p].clone()).unwrap_or_default();
        match event {
            Some(e) => state.insert(key, e),
            None => state.remove(&key),
        };
        expected.push(state);
        parent = Some(id);
    }
    for id in 0..records.len() {
        let want: Vec<(u64, u64)> = expected[id].iter().map(|(k, e)| (*k, *e)).collect();
        assert_eq!(state(&records, id), want, "snapshot {id}");
        assert!(records[id].0.len() <= MAX_DEPTH, "snapshot {id} is too deep");
    }
}

/// A chain of one-key joins (the bench's room): stacks stay within [`MAX_DEPTH`], and the
/// entries written per change grow with the logarithm of the state, not with the state.
#[test]
fn writes_grow_with_the_logarithm() {
    let mut per_change = Vec::new();
    for n in [1_000u64, 10_000, 50_000] {
        let mut records = Records::new();
        let mut parent = None;
        let mut written = 0;
        for i in 0..n {
            let id = write(&mut records, parent, vec![(i, Some(i))]);
            written += records[id].1.len();
            assert!(records[id].0.len() <= MAX_DEPTH);
            parent = Some(id);
        }
        let per = written as f64 / n as f64;
        let log3 = (n as f64).ln() / 3f64.ln();
        assert!(per <= 1.5 * log3, "{n} changes: {per:.1} entries per change");
        assert_eq!(state(&records, n as usize - 1).len(), n as usize);
        per_change.push(per);
    }
    // A whole copy every 64 changes wrote n / 128 per change: 390 at 50,000.
    assert!(per_change[2] < 13.0, "{per_change:?}");
    assert!(per_change[2] / per_change[0] < 1.8, "{per_change:?}");
}

/// A chain that keeps changing the same few keys stays shallow and writes little.
#[test]
fn rewriting_the_same_keys_stays_small() {
    let mut records = Records::new();
    let mut parent = Some(write(&mut records, None, (0..1_000).map(|k| (k, Some(k))).collect()));
    let mut written = 0;
    for i in 0..10_000u64 {
        let id = write(&mut records, parent, vec![(i % 3, Some(10_000 + i))]);
        written += records[id].1.len();
        assert!(records[id].0.len() <= 3, "{:?}", records[id].0);
        parent = Some(id);
    }
    assert!(written <= 3 * 10_000, "{written}");
}
