//! Auth chains as an index: a chain cover of the auth DAG.
//!
//! Every event gets a [`ChainPosition`]: a chain and a sequence number in it, such that each
//! event of a chain after the first has the one before it among its auth events. An auth event
//! on another chain is recorded as a [`ChainLink`] of the event's chain: from this sequence
//! number on, the chain reaches that position of the other chain (and so everything before it
//! there). Links that another link of the same chain already implies (same target chain, an
//! earlier or equal start, a later or equal target) are not kept.
//!
//! Then "is `b` in the auth chain of `a`" is: same chain and an earlier position, or a link of
//! `a`'s chain at or before `a` whose closure reaches `b`'s position. An auth chain is a
//! [`ChainReach`] (per chain, the last position reached), the auth difference of state sets is
//! one contiguous range per chain, and so is the conflicted state subgraph (room version 12):
//! set operations on integers, computed by walking links between chains, never events.
//!
//! The labels are plain integers ([`ChainCover::labels`], [`ChainCover::links`]) that a storage
//! backend can persist and give back ([`ChainCover::from_parts`]); new events are added one at a
//! time, parents first, with [`ChainCoverBuilder::push`]. The crate never does I/O.
//!
//! ```
//! use matrix_stateres::chain_cover::ChainCover;
//!
//! // Events 0..5 by index, each with the indices of its auth events:
//! // 0 create, 1 join (create), 2 power levels (create, join),
//! // 3 and 4 two topics (create, join, power levels).
//! let auth: Vec<Vec<u32>> = vec![vec![], vec![0], vec![0, 1], vec![0, 1, 2], vec![0, 1, 2]];
//! let cover = ChainCover::build(&auth)?;
//! assert!(cover.reaches(3, 0) && !cover.reaches(3, 4));
//!
//! // The full auth chains of two states, {3} and {4}, are the same: no difference.
//! let chains = [cover.auth_chain([3]), cover.auth_chain([4])];
//! assert!(cover.auth_chain_difference(None, &chains).is_empty());
//! // Between {1} and {3}: the create event is in both auth chains; 1 and 2 only in 3's.
//! let chains = [cover.auth_chain([1]), cover.auth_chain([3])];
//! let mut difference = cover.auth_chain_difference(None, &chains);
//! difference.sort_unstable();
//! assert_eq!(difference, [1, 2]);
//! // Events on a path from one of {1, 3} to the other, both included.
//! let mut subgraph = cover.conflicted_subgraph(&[1, 3]);
//! subgraph.sort_unstable();
//! assert_eq!(subgraph, [1, 2, 3]);
//! # Ok::<(), matrix_stateres::chain_cover::ChainCoverError>(())
//! ```

use rustc_hash::FxHashMap;

/// An event's place in the cover: its chain and its sequence number there (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainPosition {
    /// The chain.
    pub chain: u32,
    /// The sequence number in the chain, from 1.
    pub seq: u32,
}

/// A link of a chain: its events from `from_seq` on have `to` in their auth chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainLink {
    /// The first sequence number of this chain the link applies to.
    pub from_seq: u32,
    /// The position reached in another chain.
    pub to: ChainPosition,
}

/// Why a cover could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainCoverError {
    /// The auth edges form a cycle (an event may list itself) through this event.
    #[error("auth events form a cycle through event {0}")]
    Cycle(u32),
    /// An event names an auth event that is not (yet) in the cover.
    #[error("event {event} names unknown auth event {auth_event}")]
    UnknownEvent {
        /// The event.
        event: u32,
        /// Its auth event.
        auth_event: u32,
    },
    /// Labels given back to [`ChainCover::from_parts`] are not a cover.
    #[error("invalid labels: {0}")]
    InvalidLabels(&'static str),
    /// More than `u32::MAX` events or chains.
    #[error("too many events")]
    TooLarge,
}

/// Events `0..len()` and their auth events, the input of [`ChainCover::build`].
pub trait AuthDag {
    /// The number of events.
    fn len(&self) -> usize;
    /// Whether there are no events.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The auth events of `event`.
    fn auth_events(&self, event: u32) -> &[u32];
    /// The auth event whose chain `event` would best continue (for instance the previous event
    /// of the same type and state key), if any: fewer, longer chains. Only a hint.
    fn chain_hint(&self, _event: u32) -> Option<u32> {
        None
    }
}

impl AuthDag for [Vec<u32>] {
    fn len(&self) -> usize {
        <[Vec<u32>]>::len(self)
    }
    fn auth_events(&self, event: u32) -> &[u32] {
        self.get(event as usize).map(Vec::as_slice).unwrap_or_default()
    }
}

impl AuthDag for Vec<Vec<u32>> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn auth_events(&self, event: u32) -> &[u32] {
        self.as_slice().auth_events(event)
    }
}

/// The chain cover of an auth DAG: a [`ChainPosition`] per event and [`ChainLink`]s per chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCover {
    labels: Vec<ChainPosition>,
    /// `links[link_start[c]..link_start[c + 1]]` are chain `c`'s links, by `from_seq`.
    link_start: Vec<u32>,
    links: Vec<ChainLink>,
    /// `members[member_start[c]..member_start[c + 1]]` are chain `c`'s events, by `seq`.
    member_start: Vec<u32>,
    members: Vec<u32>,
}

/// Adds events to a cover one at a time, parents first (what a server does as events arrive).
#[derive(Debug, Clone, Default)]
pub struct ChainCoverBuilder {
    labels: Vec<ChainPosition>,
    /// The last event of each chain (a new event may continue only a chain's last event).
    tips: Vec<u32>,
    /// `(chain, link)` in the order they were made, so by `from_seq` within a chain.
    links: Vec<(u32, ChainLink)>,
    /// The link made before each link on the same chain (`NO_LINK`: none).
    previous_link: Vec<u32>,
    /// The last link made on each chain (`NO_LINK`: none).
    last_link: Vec<u32>,
    /// The auth events of the event being placed (kept to reuse its allocation).
    parents: Vec<(u32, ChainPosition)>,
}

const NO_LINK: u32 = u32::MAX;
/// How many of a chain's latest links are searched for one that implies a new link. A link
/// implied by an older one is kept (harmless, only redundant): a bounded cost per edge.
const LINK_LOOKBACK: usize = 8;

const UNPLACED: ChainPosition = ChainPosition { chain: u32::MAX, seq: 0 };

impl ChainCoverBuilder {
    /// An empty cover.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next event (its index is the number of events added before it) with its auth
    /// events (indices of events already added) and an optional chain hint among them.
    pub fn push(
        &mut self,
        auth_events: &[u32],
        hint: Option<u32>,
    ) -> Result<ChainPosition, ChainCoverError> {
        let event = u32::try_from(self.labels.len()).map_err(|_| ChainCoverError::TooLarge)?;
        self.labels.push(UNPLACED);
        let placed = self.place(event, auth_events, hint);
        if placed.is_err() {
            self.labels.pop();
        }
        placed
    }

    /// Places `event` (whose slot exists and is unplaced) after its auth events.
    fn place(
        &mut self,
        event: u32,
        auth_events: &[u32],
        hint: Option<u32>,
    ) -> Result<ChainPosition, ChainCoverError> {
        let mut parents = std::mem::take(&mut self.parents);
        parents.clear();
        for &auth_event in auth_events {
            match self.labels.get(auth_event as usize) {
                Some(&label) if label != UNPLACED => parents.push((auth_event, label)),
                Some(_) if auth_event == event => return Err(ChainCoverError::Cycle(event)),
                _ => return Err(ChainCoverError::UnknownEvent { event, auth_event }),
            }
        }
        let is_tip =
            |&(parent, label): &(u32, ChainPosition)| self.tips[label.chain as usize] == parent;
        let extend = hint
            .and_then(|hint| parents.iter().find(|p| p.0 == hint).filter(|p| is_tip(p)))
            .or_else(|| parents.iter().find(|p| is_tip(p)))
            .map(|&(_, label)| label);
        let position = match extend {
            Some(label) => {
                self.tips[label.chain as usize] = event;
                ChainPosition { chain: label.chain, seq: label.seq + 1 }
            }
            None => {
                let chain =
                    u32::try_from(self.tips.len()).map_err(|_| ChainCoverError::TooLarge)?;
                self.tips.push(event);
                self.last_link.push(NO_LINK);
                ChainPosition { chain, seq: 1 }
            }
        };
        self.labels[event as usize] = position;
        let chain = position.chain as usize;
        for (k, &(_, to)) in parents.iter().enumerate() {
            if to.chain == position.chain {
                continue;
            }
            // Another auth event later on the same chain implies this one (ties: the first).
            let shadowed = parents.iter().enumerate().any(|(j, &(_, other))| {
                other.chain == to.chain && (other.seq > to.seq || (other.seq == to.seq && j < k))
            });
            if shadowed {
                continue;
            }
            // Links are made in `from_seq` order, so an earlier link of this chain to a later
            // position of the same other chain implies this one.
            let mut at = self.last_link[chain];
            let mut implied = false;
            for _ in 0..LINK_LOOKBACK {
                if at == NO_LINK {
                    break;
                }
                let link = self.links[at as usize].1;
                if link.to.chain == to.chain {
                    implied = link.to.seq >= to.seq;
                    break;
                }
                at = self.previous_link[at as usize];
            }
            if !implied {
                let index =
                    u32::try_from(self.links.len()).map_err(|_| ChainCoverError::TooLarge)?;
                self.links.push((position.chain, ChainLink { from_seq: position.seq, to }));
                self.previous_link.push(self.last_link[chain]);
                self.last_link[chain] = index;
            }
        }
        self.parents = parents;
        Ok(position)
    }

    /// The finished cover.
    pub fn finish(self) -> ChainCover {
        let chains = self.tips.len();
        ChainCover::assemble(self.labels, chains, self.links)
    }

    /// A builder that goes on from labels a storage backend kept (checked as
    /// [`ChainCover::from_parts`] checks them): events added next get the indices after them.
    pub fn from_parts(
        labels: Vec<ChainPosition>,
        links: Vec<(u32, ChainLink)>,
    ) -> Result<Self, ChainCoverError> {
        Ok(Self::from_cover(&ChainCover::from_parts(labels, links)?))
    }

    /// A builder that goes on from `cover`.
    pub fn from_cover(cover: &ChainCover) -> Self {
        let chains = cover.chain_count();
        let mut builder = ChainCoverBuilder {
            labels: cover.labels.clone(),
            tips: Vec::with_capacity(chains),
            links: Vec::with_capacity(cover.links.len()),
            previous_link: Vec::with_capacity(cover.links.len()),
            last_link: Vec::with_capacity(chains),
            parents: Vec::new(),
        };
        for chain in 0..chains as u32 {
            // Every chain of a cover holds at least one event.
            builder.tips.push(cover.chain_events(chain).last().copied().unwrap_or(0));
            let mut last = NO_LINK;
            for &link in cover.links(chain) {
                builder.previous_link.push(last);
                last = builder.links.len() as u32;
                builder.links.push((chain, link));
            }
            builder.last_link.push(last);
        }
        builder
    }

    /// The number of events added.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether no event was added.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Each event's position, by index.
    pub fn labels(&self) -> &[ChainPosition] {
        &self.labels
    }

    /// Every link made, `(chain, link)`, in the order they were made: the links an event made
    /// are those added by its [`ChainCoverBuilder::push`], at the end.
    pub fn links(&self) -> &[(u32, ChainLink)] {
        &self.links
    }

    /// The cover of the events added so far; the builder goes on.
    pub fn cover(&self) -> ChainCover {
        ChainCover::assemble(self.labels.clone(), self.tips.len(), self.links.clone())
    }
}

impl ChainCover {
    /// The cover of `dag`, in one topological pass (the events may come in any order).
    ///
    /// A cycle (an event that is its own auth ancestor) or an auth event out of range is an
    /// error, not a panic.
    pub fn build(dag: &(impl AuthDag + ?Sized)) -> Result<Self, ChainCoverError> {
        let n = dag.len();
        let count = u32::try_from(n).map_err(|_| ChainCoverError::TooLarge)?;
        let mut builder =
            ChainCoverBuilder { labels: vec![UNPLACED; n], ..ChainCoverBuilder::default() };
        for event in 0..count {
            if let Some(&auth_event) = dag.auth_events(event).iter().find(|&&a| a >= count) {
                return Err(ChainCoverError::UnknownEvent { event, auth_event });
            }
        }
        // Events usually come parents first; then that is the order. Otherwise Kahn's.
        let parents_first = (0..count).all(|e| dag.auth_events(e).iter().all(|&a| a < e));
        if parents_first {
            for event in 0..count {
                builder.place(event, dag.auth_events(event), dag.chain_hint(event))?;
            }
        } else {
            for event in topological_order(dag, count)? {
                builder.place(event, dag.auth_events(event), dag.chain_hint(event))?;
            }
        }
        Ok(builder.finish())
    }

    /// A cover from labels a storage backend kept: each event's position, and each chain's
    /// links as `(chain, link)`. Checked: every chain's positions are `1..=len` exactly once
    /// and links name existing positions of other chains.
    pub fn from_parts(
        labels: Vec<ChainPosition>,
        links: Vec<(u32, ChainLink)>,
    ) -> Result<Self, ChainCoverError> {
        // Every chain holds an event, so chains are numbered below the number of events (and
        // a huge chain number cannot make us allocate for it).
        if labels.iter().any(|l| l.chain as usize >= labels.len()) {
            return Err(ChainCoverError::InvalidLabels("a chain number beyond the events"));
        }
        let chains = labels.iter().map(|l| l.chain as usize + 1).max().unwrap_or(0);
        let mut lengths = vec![0u32; chains];
        for label in &labels {
            lengths[label.chain as usize] += 1;
        }
        let mut seen = vec![false; labels.len()];
        let mut start = vec![0usize; chains + 1];
        for c in 0..chains {
            start[c + 1] = start[c] + lengths[c] as usize;
        }
        for label in &labels {
            if label.seq == 0 || label.seq > lengths[label.chain as usize] {
                return Err(ChainCoverError::InvalidLabels("sequence numbers are not 1..=len"));
            }
            let slot = start[label.chain as usize] + label.seq as usize - 1;
            if std::mem::replace(&mut seen[slot], true) {
                return Err(ChainCoverError::InvalidLabels("two events share a position"));
            }
        }
        for (chain, link) in &links {
            let ok = (*chain as usize) < chains
                && link.from_seq >= 1
                && link.from_seq <= lengths[*chain as usize]
                && link.to.chain != *chain
                && (link.to.chain as usize) < chains
                && link.to.seq >= 1
                && link.to.seq <= lengths[link.to.chain as usize];
            if !ok {
                return Err(ChainCoverError::InvalidLabels("a link names no position"));
            }
        }
        let mut links = links;
        links.sort_by_key(|&(chain, link)| (chain, link.from_seq));
        Ok(Self::assemble(labels, chains, links))
    }

    fn assemble(labels: Vec<ChainPosition>, chains: usize, links: Vec<(u32, ChainLink)>) -> Self {
        // Counting sorts by chain (stable, so links stay by `from_seq`).
        let mut link_start = vec![0u32; chains + 1];
        for &(chain, _) in &links {
            link_start[chain as usize + 1] += 1;
        }
        for c in 0..chains {
            link_start[c + 1] += link_start[c];
        }
        let mut next = link_start.clone();
        let mut sorted = vec![ChainLink { from_seq: 0, to: UNPLACED }; links.len()];
        for (chain, link) in links {
            sorted[next[chain as usize] as usize] = link;
            next[chain as usize] += 1;
        }
        let mut member_start = vec![0u32; chains + 1];
        for label in &labels {
            member_start[label.chain as usize + 1] += 1;
        }
        for c in 0..chains {
            member_start[c + 1] += member_start[c];
        }
        let mut members = vec![0u32; labels.len()];
        for (event, label) in labels.iter().enumerate() {
            members[(member_start[label.chain as usize] + label.seq - 1) as usize] = event as u32;
        }
        ChainCover { labels, link_start, links: sorted, member_start, members }
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The number of chains.
    pub fn chain_count(&self) -> usize {
        self.member_start.len() - 1
    }
    /// Each event's position, by event index.
    pub fn labels(&self) -> &[ChainPosition] {
        &self.labels
    }
    /// An event's position.
    pub fn position(&self, event: u32) -> Option<ChainPosition> {
        self.labels.get(event as usize).copied()
    }
    /// A chain's links, by `from_seq`.
    pub fn links(&self, chain: u32) -> &[ChainLink] {
        let c = chain as usize;
        match (self.link_start.get(c), self.link_start.get(c + 1)) {
            (Some(&a), Some(&b)) => &self.links[a as usize..b as usize],
            _ => &[],
        }
    }
    /// A chain's events, by sequence number (the event at `seq` is at index `seq - 1`).
    pub fn chain_events(&self, chain: u32) -> &[u32] {
        let c = chain as usize;
        match (self.member_start.get(c), self.member_start.get(c + 1)) {
            (Some(&a), Some(&b)) => &self.members[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Whether `to` is `from` or in its auth chain.
    pub fn reaches(&self, from: u32, to: u32) -> bool {
        match (self.position(from), self.position(to)) {
            (Some(a), Some(b)) if a.chain == b.chain => a.seq >= b.seq,
            (Some(_), Some(_)) => {
                self.reach(std::iter::once(from), false).contains_position(self.labels[to as usize])
            }
            _ => false,
        }
    }

    /// The auth chain of `events`: every event in the auth chain of one of them (not the
    /// events themselves, unless one is in the auth chain of another).
    pub fn auth_chain(&self, events: impl IntoIterator<Item = u32>) -> ChainReach {
        self.reach(events, false)
    }

    /// `events` with their auth chains.
    pub fn with_auth_chain(&self, events: impl IntoIterator<Item = u32>) -> ChainReach {
        self.reach(events, true)
    }

    /// Per chain the last position reached from `events` (included or not), following links:
    /// a walk over chains, each chain's links read once from the last position it was read at.
    fn reach(&self, events: impl IntoIterator<Item = u32>, inclusive: bool) -> ChainReach {
        let chains = self.chain_count();
        let mut reach = ChainReach { max: vec![0; chains], touched: Vec::new() };
        // Per chain: the highest position whose links must be followed, and those followed.
        let mut follow = vec![0u32; chains];
        let mut followed = vec![0u32; chains];
        let mut queue: Vec<u32> = Vec::new();
        for event in events {
            let Some(p) = self.position(event) else { continue };
            let c = p.chain as usize;
            if reach.max[c] == 0 && follow[c] == 0 {
                reach.touched.push(p.chain);
            }
            let own = if inclusive { p.seq } else { p.seq - 1 };
            reach.max[c] = reach.max[c].max(own);
            if follow[c] < p.seq {
                if follow[c] <= followed[c] {
                    queue.push(p.chain);
                }
                follow[c] = p.seq;
            }
        }
        while let Some(chain) = queue.pop() {
            let c = chain as usize;
            let upto = follow[c].max(reach.max[c]);
            let from = followed[c];
            if upto <= from {
                continue;
            }
            followed[c] = upto;
            let links = self.links(chain);
            let first = links.partition_point(|l| l.from_seq <= from);
            for link in &links[first..] {
                if link.from_seq > upto {
                    break;
                }
                let d = link.to.chain as usize;
                if link.to.seq > reach.max[d] {
                    if reach.max[d] == 0 && follow[d] == 0 {
                        reach.touched.push(link.to.chain);
                    }
                    let queued = reach.max[d].max(follow[d]) > followed[d];
                    reach.max[d] = link.to.seq;
                    if !queued {
                        queue.push(link.to.chain);
                    }
                }
            }
        }
        reach
    }

    /// The events in some but not all of `chains` (auth chains from [`Self::auth_chain`]),
    /// each chain being taken together with `common` (an auth chain every set shares, such as
    /// the unconflicted events'): one range of positions per chain, in no particular order.
    pub fn auth_chain_difference(
        &self,
        common: Option<&ChainReach>,
        chains: &[ChainReach],
    ) -> Vec<u32> {
        let base = |c: usize| common.map_or(0, |r| r.max.get(c).copied().unwrap_or(0));
        let mut done = vec![false; self.chain_count()];
        let mut out = Vec::new();
        for reach in chains {
            for &chain in &reach.touched {
                let c = chain as usize;
                if std::mem::replace(&mut done[c], true) {
                    continue;
                }
                let at = |r: &ChainReach| r.max.get(c).copied().unwrap_or(0).max(base(c));
                let low = chains.iter().map(at).min().unwrap_or(0);
                let high = chains.iter().map(at).max().unwrap_or(0);
                out.extend_from_slice(&self.chain_events(chain)[low as usize..high as usize]);
            }
        }
        out
    }

    /// The auth difference of state sets given as events of the cover, as state resolution
    /// defines it: the events in the full auth chain of some of the sets but not of all.
    ///
    /// An event in every set is unconflicted: its auth chain, in every set's, is walked once.
    /// `outside[i]` (if given) are auth events of events of set `i` that are not in the cover,
    /// such as an event being stored: they and their auth chains count as set `i`'s.
    pub fn state_auth_difference(&self, sets: &[Vec<u32>], outside: &[Vec<u32>]) -> Vec<u32> {
        let mut counts: FxHashMap<u32, u32> = FxHashMap::default();
        for set in sets {
            for &event in set {
                *counts.entry(event).or_default() += 1;
            }
        }
        let everywhere = |event: &u32| counts.get(event).is_some_and(|&c| c as usize == sets.len());
        let unconflicted: Vec<u32> =
            sets.first().into_iter().flatten().copied().filter(everywhere).collect();
        let conflicted: Vec<Vec<u32>> = sets
            .iter()
            .map(|set| set.iter().copied().filter(|e| !everywhere(e)).collect())
            .collect();
        self.split_auth_difference(&unconflicted, &conflicted, outside)
    }

    /// [`ChainCover::state_auth_difference`] of state sets already split: the events every
    /// set holds (`unconflicted`), and each set's others (`conflicted[i]`).
    pub fn split_auth_difference(
        &self,
        unconflicted: &[u32],
        conflicted: &[Vec<u32>],
        outside: &[Vec<u32>],
    ) -> Vec<u32> {
        let common = self.auth_chain(unconflicted.iter().copied());
        let chains: Vec<ChainReach> = conflicted
            .iter()
            .enumerate()
            .map(|(i, set)| {
                let mut chain = self.auth_chain(set.iter().copied());
                if let Some(outside) = outside.get(i) {
                    chain.union_with(&self.with_auth_chain(outside.iter().copied()));
                }
                chain
            })
            .collect();
        self.auth_chain_difference(Some(&common), &chains)
    }

    /// The conflicted state subgraph of room version 12: the events on an auth path from one of
    /// `conflicted` to another, both ends included (so every conflicted event), in no
    /// particular order.
    ///
    /// Per chain, the events that reach a conflicted event are those from some position on,
    /// and the auth chains of the conflicted events are those up to some position: the answer
    /// is one range per chain.
    pub fn conflicted_subgraph(&self, conflicted: &[u32]) -> Vec<u32> {
        let chains = self.chain_count();
        let ancestors = self.reach(conflicted.iter().copied(), true);
        // `threshold[c]`: the first position of chain `c` that reaches a conflicted event.
        let mut threshold = vec![u32::MAX; chains];
        let mut queue: Vec<u32> = Vec::new();
        for &event in conflicted {
            let Some(p) = self.position(event) else { continue };
            if p.seq < threshold[p.chain as usize] {
                threshold[p.chain as usize] = p.seq;
                queue.push(p.chain);
            }
        }
        // Links into each reached chain, from positions that are themselves reached.
        let mut incoming: FxHashMap<u32, Vec<(u32, ChainLink)>> = FxHashMap::default();
        for &chain in &ancestors.touched {
            let upto = ancestors.max[chain as usize];
            for &link in self.links(chain).iter().take_while(|l| l.from_seq <= upto) {
                incoming.entry(link.to.chain).or_default().push((chain, link));
            }
        }
        while let Some(chain) = queue.pop() {
            let t = threshold[chain as usize];
            for &(from, link) in incoming.get(&chain).map(Vec::as_slice).unwrap_or_default() {
                if link.to.seq >= t && link.from_seq < threshold[from as usize] {
                    threshold[from as usize] = link.from_seq;
                    queue.push(from);
                }
            }
        }
        let mut out = Vec::new();
        for &chain in &ancestors.touched {
            let (low, high) = (threshold[chain as usize], ancestors.max[chain as usize]);
            if low <= high {
                out.extend_from_slice(&self.chain_events(chain)[low as usize - 1..high as usize]);
            }
        }
        out
    }
}

/// Kahn's algorithm over the auth edges (parents first); a cycle names its smallest event.
fn topological_order(
    dag: &(impl AuthDag + ?Sized),
    count: u32,
) -> Result<Vec<u32>, ChainCoverError> {
    let n = count as usize;
    let mut waiting = vec![0u32; n];
    let mut child_start = vec![0u32; n + 1];
    for event in 0..count {
        for &parent in dag.auth_events(event) {
            waiting[event as usize] += 1;
            child_start[parent as usize + 1] += 1;
        }
    }
    for i in 0..n {
        child_start[i + 1] += child_start[i];
    }
    let mut next = child_start.clone();
    let mut children = vec![0u32; child_start[n] as usize];
    for event in 0..count {
        for &parent in dag.auth_events(event) {
            children[next[parent as usize] as usize] = event;
            next[parent as usize] += 1;
        }
    }
    let mut ready: Vec<u32> = (0..count).filter(|&e| waiting[e as usize] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(event) = ready.pop() {
        order.push(event);
        let e = event as usize;
        for &child in &children[child_start[e] as usize..child_start[e + 1] as usize] {
            waiting[child as usize] -= 1;
            if waiting[child as usize] == 0 {
                ready.push(child);
            }
        }
    }
    if order.len() < n {
        let stuck = (0..count).find(|&e| waiting[e as usize] > 0).unwrap_or(0);
        return Err(ChainCoverError::Cycle(stuck));
    }
    Ok(order)
}

/// A set of events closed under auth events, as the last position reached on each chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReach {
    max: Vec<u32>,
    touched: Vec<u32>,
}

impl ChainReach {
    /// The last position reached on `chain` (0: none).
    pub fn max_seq(&self, chain: u32) -> u32 {
        self.max.get(chain as usize).copied().unwrap_or(0)
    }
    /// The chains with a position reached (and possibly some with none), in no order.
    pub fn chains(&self) -> impl Iterator<Item = u32> + '_ {
        self.touched.iter().copied().filter(|&c| self.max[c as usize] > 0)
    }
    /// Whether the position is in the set.
    pub fn contains_position(&self, position: ChainPosition) -> bool {
        self.max_seq(position.chain) >= position.seq
    }
    /// Whether the event is in the set.
    pub fn contains(&self, cover: &ChainCover, event: u32) -> bool {
        cover.position(event).is_some_and(|p| self.contains_position(p))
    }
    /// The events of the set, chain by chain.
    pub fn events<'c>(&'c self, cover: &'c ChainCover) -> impl Iterator<Item = u32> + 'c {
        self.chains().flat_map(move |c| {
            cover.chain_events(c)[..self.max[c as usize] as usize].iter().copied()
        })
    }
    /// Adds `other`'s events (both from the same cover).
    pub fn union_with(&mut self, other: &ChainReach) {
        for &c in &other.touched {
            let (i, m) = (c as usize, other.max[c as usize]);
            if i >= self.max.len() {
                self.max.resize(i + 1, 0);
            }
            if self.max[i] == 0 && m > 0 {
                self.touched.push(c);
            }
            self.max[i] = self.max[i].max(m);
        }
    }
}
