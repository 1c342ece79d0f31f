//! The chain cover answers what a naive walk over the auth edges answers, on random DAGs with
//! forks, long chains and diamonds, given in any order; and bad DAGs are errors.

use std::collections::BTreeSet;

use benches::rooms::Rng;
use matrix_stateres::chain_cover::{ChainCover, ChainCoverBuilder, ChainCoverError};
use proptest::prelude::*;

/// A random DAG of `n` events, parents first: each event continues a random earlier event
/// (long chains), forks from one, or joins two or three (diamonds), and usually names the root
/// (as events name the create event). Returns the auth lists.
fn random_dag(n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    let mut auth: Vec<Vec<u32>> = Vec::with_capacity(n);
    for i in 0..n {
        let mut parents = BTreeSet::new();
        if i > 0 {
            match rng.below(4) {
                // The previous event: long chains.
                0 => {
                    parents.insert(i as u32 - 1);
                }
                // One earlier event: forks.
                1 => {
                    parents.insert(rng.below(i) as u32);
                }
                // Two or three earlier events: diamonds.
                _ => {
                    for _ in 0..2 + rng.below(2) {
                        parents.insert(rng.below(i) as u32);
                    }
                }
            }
            if rng.below(3) > 0 {
                parents.insert(0);
            }
        }
        auth.push(parents.into_iter().collect());
    }
    auth
}

/// The same DAG with its events renumbered by `order` (event `i` becomes `order[i]`).
fn renumber(auth: &[Vec<u32>], order: &[u32]) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); auth.len()];
    for (i, parents) in auth.iter().enumerate() {
        out[order[i] as usize] = parents.iter().map(|&p| order[p as usize]).collect();
    }
    out
}

/// Strict ancestors of `starts`, by walking.
fn naive_auth_chain(auth: &[Vec<u32>], starts: &[u32]) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<u32> = starts.iter().flat_map(|&s| auth[s as usize].clone()).collect();
    while let Some(e) = stack.pop() {
        if seen.insert(e) {
            stack.extend(&auth[e as usize]);
        }
    }
    seen
}

fn naive_subgraph(auth: &[Vec<u32>], conflicted: &[u32]) -> BTreeSet<u32> {
    let n = auth.len() as u32;
    let conflicted: BTreeSet<u32> = conflicted.iter().copied().collect();
    let mut ancestors = naive_auth_chain(auth, &conflicted.iter().copied().collect::<Vec<_>>());
    ancestors.extend(&conflicted);
    (0..n)
        .filter(|e| ancestors.contains(e))
        .filter(|&e| {
            conflicted.contains(&e)
                || conflicted.iter().any(|&c| naive_auth_chain(auth, &[e]).contains(&c))
        })
        .collect()
}

fn pick(rng: &mut Rng, n: usize, most: usize) -> Vec<u32> {
    (0..rng.below(most) + 1).map(|_| rng.below(n) as u32).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn chain_cover_answers_as_a_walk_does(
        n in 1usize..70,
        seed in any::<u64>(),
        shuffle in any::<bool>(),
    ) {
        let mut auth = random_dag(n, seed);
        let mut rng = Rng::new(seed ^ 0xdead_beef);
        if shuffle {
            // Not parents first: the cover must sort.
            let mut order: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                order.swap(i, rng.below(i + 1));
            }
            auth = renumber(&auth, &order);
        }
        let cover = ChainCover::build(&auth).expect("a DAG");
        prop_assert_eq!(cover.len(), n);

        // Reachability, pair by pair.
        for a in 0..n as u32 {
            let chain = naive_auth_chain(&auth, &[a]);
            for b in 0..n as u32 {
                prop_assert_eq!(cover.reaches(a, b), a == b || chain.contains(&b), "{} -> {}", a, b);
            }
        }

        // Auth chains of sets, their difference (with and without a common part), and the
        // conflicted subgraph.
        let common = pick(&mut rng, n, 4);
        let sets: Vec<Vec<u32>> = (0..3).map(|_| pick(&mut rng, n, 5)).collect();
        let chains: Vec<_> = sets.iter().map(|s| cover.auth_chain(s.iter().copied())).collect();
        for (set, chain) in sets.iter().zip(&chains) {
            let got: BTreeSet<u32> = chain.events(&cover).collect();
            prop_assert_eq!(got, naive_auth_chain(&auth, set));
        }
        let naive: Vec<BTreeSet<u32>> = sets.iter().map(|s| naive_auth_chain(&auth, s)).collect();
        let union: BTreeSet<u32> = naive.iter().flatten().copied().collect();
        let expected: BTreeSet<u32> =
            union.iter().copied().filter(|e| !naive.iter().all(|c| c.contains(e))).collect();
        let got: Vec<u32> = cover.auth_chain_difference(None, &chains);
        prop_assert_eq!(got.len(), expected.len(), "no event twice");
        prop_assert_eq!(got.into_iter().collect::<BTreeSet<u32>>(), expected);

        // With a common part: each set's chain is its own plus the common events' with theirs.
        let common_reach = cover.with_auth_chain(common.iter().copied());
        let mut common_naive = naive_auth_chain(&auth, &common);
        common_naive.extend(&common);
        let full: Vec<BTreeSet<u32>> =
            naive.iter().map(|c| c.union(&common_naive).copied().collect()).collect();
        let union: BTreeSet<u32> = full.iter().flatten().copied().collect();
        let expected: BTreeSet<u32> =
            union.iter().copied().filter(|e| !full.iter().all(|c| c.contains(e))).collect();
        let got = cover.auth_chain_difference(Some(&common_reach), &chains);
        prop_assert_eq!(got.len(), expected.len(), "no event twice");
        prop_assert_eq!(got.into_iter().collect::<BTreeSet<u32>>(), expected);

        let conflicted: Vec<u32> = sets.concat();
        let got = cover.conflicted_subgraph(&conflicted);
        let expected = naive_subgraph(&auth, &conflicted);
        prop_assert_eq!(got.len(), expected.len(), "no event twice");
        prop_assert_eq!(got.into_iter().collect::<BTreeSet<u32>>(), expected);

        // The labels round-trip through their parts.
        let links: Vec<_> = (0..cover.chain_count() as u32)
            .flat_map(|c| cover.links(c).iter().map(move |&l| (c, l)))
            .collect();
        let again = ChainCover::from_parts(cover.labels().to_vec(), links).expect("valid parts");
        prop_assert_eq!(&again, &cover);
    }

    /// Adding events one at a time gives the cover a single build gives.
    #[test]
    fn builder_matches_build(n in 1usize..70, seed in any::<u64>()) {
        let auth = random_dag(n, seed);
        let mut builder = ChainCoverBuilder::new();
        for parents in &auth {
            builder.push(parents, None).expect("parents first");
        }
        prop_assert_eq!(builder.finish(), ChainCover::build(&auth).expect("a DAG"));
    }

    /// The auth difference of state sets is the union of their full auth chains less their
    /// intersection, events outside the cover counting through their auth events.
    #[test]
    fn state_auth_difference_is_union_less_intersection(
        n in 2usize..60,
        seed in any::<u64>(),
        set_count in 1usize..4,
    ) {
        let auth = random_dag(n, seed);
        let cover = ChainCover::build(&auth).expect("a DAG");
        let mut rng = Rng::new(seed ^ 0x5eed);
        // Sets share some events (the unconflicted ones) and have some of their own.
        let shared = pick(&mut rng, n, 6);
        let sets: Vec<Vec<u32>> = (0..set_count)
            .map(|_| {
                let mut set: BTreeSet<u32> = shared.iter().copied().collect();
                set.extend(pick(&mut rng, n, 4));
                set.into_iter().collect()
            })
            .collect();
        let outside: Vec<Vec<u32>> = (0..set_count).map(|_| pick(&mut rng, n, 2)).collect();
        let full: Vec<BTreeSet<u32>> = sets
            .iter()
            .zip(&outside)
            .map(|(set, outside)| {
                let mut chain = naive_auth_chain(&auth, set);
                chain.extend(naive_auth_chain(&auth, outside));
                chain.extend(outside);
                chain
            })
            .collect();
        let union: BTreeSet<u32> = full.iter().flatten().copied().collect();
        let expected: BTreeSet<u32> =
            union.into_iter().filter(|e| !full.iter().all(|chain| chain.contains(e))).collect();
        let got: BTreeSet<u32> =
            cover.state_auth_difference(&sets, &outside).into_iter().collect();
        prop_assert_eq!(got, expected);
    }

    /// A builder given back the labels and links of a prefix (as a store keeps them) goes on
    /// to the cover a single build gives, and says which links each event made.
    #[test]
    fn a_builder_goes_on_from_its_parts(n in 1usize..70, cut in 0usize..70, seed in any::<u64>()) {
        let auth = random_dag(n, seed);
        let cut = cut.min(n);
        let mut first = ChainCoverBuilder::new();
        for parents in &auth[..cut] {
            first.push(parents, None).expect("parents first");
        }
        let mut builder =
            ChainCoverBuilder::from_parts(first.labels().to_vec(), first.links().to_vec())
                .expect("valid parts");
        prop_assert_eq!(builder.cover(), first.cover());
        for parents in &auth[cut..] {
            let made = builder.links().len();
            let at = builder.push(parents, None).expect("parents first");
            for (chain, link) in &builder.links()[made..] {
                prop_assert_eq!((*chain, link.from_seq), (at.chain, at.seq));
            }
        }
        prop_assert_eq!(builder.len(), n);
        let whole = ChainCover::build(&auth).expect("a DAG");
        // The same reachability as the single build (chain numbers may differ after the cut).
        let cover = builder.cover();
        for a in 0..n as u32 {
            for b in 0..n as u32 {
                prop_assert_eq!(cover.reaches(a, b), whole.reaches(a, b));
            }
        }
    }
}

#[test]
fn bad_dags_are_errors() {
    // A self-reference, a cycle, an auth event out of range.
    assert_eq!(ChainCover::build(&vec![vec![], vec![1]]), Err(ChainCoverError::Cycle(1)));
    let cycle = vec![vec![], vec![0, 3], vec![1], vec![2]];
    assert!(matches!(ChainCover::build(&cycle), Err(ChainCoverError::Cycle(1..=3))));
    assert_eq!(
        ChainCover::build(&vec![vec![], vec![7]]),
        Err(ChainCoverError::UnknownEvent { event: 1, auth_event: 7 })
    );
    // The builder refuses events it has not seen, and stays usable.
    let mut builder = ChainCoverBuilder::new();
    builder.push(&[], None).expect("root");
    assert_eq!(builder.push(&[1], None), Err(ChainCoverError::Cycle(1)), "an event naming itself");
    assert!(matches!(builder.push(&[5], None), Err(ChainCoverError::UnknownEvent { .. })));
    assert!(builder.push(&[0], None).is_ok());
    assert_eq!(builder.finish().len(), 2);
    // Labels that are not a cover.
    use matrix_stateres::chain_cover::ChainPosition;
    let twice = vec![ChainPosition { chain: 0, seq: 1 }, ChainPosition { chain: 0, seq: 1 }];
    assert!(ChainCover::from_parts(twice, vec![]).is_err());
    let far = vec![ChainPosition { chain: u32::MAX, seq: 1 }];
    assert!(ChainCover::from_parts(far, vec![]).is_err(), "no allocation for a huge chain number");
    let root = vec![ChainPosition { chain: 0, seq: 1 }];
    let bad_link = vec![(
        0,
        matrix_stateres::chain_cover::ChainLink {
            from_seq: 1,
            to: ChainPosition { chain: 0, seq: 1 },
        },
    )];
    assert!(ChainCover::from_parts(root, bad_link).is_err(), "a link to its own chain");
}

/// A long chain and a wide fork stay one chain and many chains, with one link each.
#[test]
fn chains_follow_the_dag() {
    let long: Vec<Vec<u32>> =
        (0..10_000u32).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect();
    let cover = ChainCover::build(&long).expect("a DAG");
    assert_eq!(cover.chain_count(), 1);
    assert!(cover.reaches(9_999, 0) && !cover.reaches(0, 9_999));
    let wide: Vec<Vec<u32>> =
        (0..1_000u32).map(|i| if i == 0 { vec![] } else { vec![0] }).collect();
    let cover = ChainCover::build(&wide).expect("a DAG");
    assert_eq!(cover.chain_count(), 999);
    assert!((1..cover.chain_count() as u32).all(|c| cover.links(c).len() <= 1));
}
