//! The auth graph of the events state resolution looks at, with event ids interned to `u32`.

use rustc_hash::FxHashMap;

use crate::{EventSource, ResolveError, StateEvent};

/// An index into [`Graph::events`].
pub(crate) type Ix = u32;

/// Every event reachable from the inputs through `auth_events`, loaded once.
pub(crate) struct Graph<'a, E> {
    pub(crate) events: Vec<&'a E>,
    ids: FxHashMap<&'a str, Ix>,
    /// `auth[i]` are the indices of event `i`'s auth events (those that exist).
    auth: Vec<Box<[Ix]>>,
    /// The room's create event, where the caller loaded it (room version 12).
    pub(crate) create: Option<Ix>,
}

/// A set of events as a bit per index.
#[derive(Clone)]
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }
    /// Sets the bit; true if it was not set.
    pub(crate) fn insert(&mut self, i: Ix) -> bool {
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }
    pub(crate) fn contains(&self, i: Ix) -> bool {
        self.0[(i / 64) as usize] & (1u64 << (i % 64)) != 0
    }
}

impl<'a, E: StateEvent> Graph<'a, E> {
    /// Loads `roots` and everything reachable from them through `auth_events`; also returns the
    /// index of each root, in order. Every event must be in `source` and in `room_id`.
    pub(crate) fn load<'r>(
        source: &'a impl EventSource<E>,
        roots: impl IntoIterator<Item = &'r str>,
        room_id: &str,
    ) -> Result<(Self, Vec<Ix>), ResolveError> {
        let mut graph =
            Graph { events: Vec::new(), ids: FxHashMap::default(), auth: Vec::new(), create: None };
        let mut queue: Vec<Ix> = Vec::new();
        let mut root_ixs = Vec::new();
        for root in roots {
            let (ix, new) = graph.add(source, root, room_id, None)?;
            if new {
                queue.push(ix);
            }
            root_ixs.push(ix);
        }
        while let Some(ix) = queue.pop() {
            let event = graph.events[ix as usize];
            let mut auth = Vec::with_capacity(4);
            for auth_id in event.auth_event_ids() {
                let (parent, new) = graph.add(source, auth_id, room_id, Some(event.event_id()))?;
                if new {
                    queue.push(parent);
                }
                auth.push(parent);
            }
            graph.auth[ix as usize] = auth.into_boxed_slice();
        }
        Ok((graph, root_ixs))
    }

    /// The index of an event, added if new (then `true`).
    fn add(
        &mut self,
        source: &'a impl EventSource<E>,
        id: &str,
        room_id: &str,
        needed_by: Option<&str>,
    ) -> Result<(Ix, bool), ResolveError> {
        if let Some(&ix) = self.ids.get(id) {
            return Ok((ix, false));
        }
        let event = source.event(id).ok_or_else(|| ResolveError::MissingEvent {
            event_id: id.to_owned(),
            needed_by: needed_by.map(str::to_owned),
        })?;
        if event.room_id() != room_id {
            return Err(ResolveError::WrongRoom { event_id: id.to_owned() });
        }
        let ix = Ix::try_from(self.events.len()).map_err(|_| ResolveError::TooLarge)?;
        self.events.push(event);
        self.ids.insert(event.event_id(), ix);
        self.auth.push(Box::new([]));
        Ok((ix, true))
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
    pub(crate) fn index(&self, id: &str) -> Option<Ix> {
        self.ids.get(id).copied()
    }
    pub(crate) fn event(&self, ix: Ix) -> &'a E {
        self.events[ix as usize]
    }
    pub(crate) fn auth(&self, ix: Ix) -> &[Ix] {
        &self.auth[ix as usize]
    }

    /// Marks in `seen` every strict ancestor of `starts` (through auth events), not descending
    /// into events `stop` contains. Returns the newly marked events.
    pub(crate) fn ancestors(
        &self,
        starts: impl IntoIterator<Item = Ix>,
        seen: &mut Bits,
        stop: Option<&Bits>,
    ) -> Vec<Ix> {
        let mut stack: Vec<Ix> = starts.into_iter().collect();
        let mut found = Vec::new();
        while let Some(ix) = stack.pop() {
            for &parent in self.auth(ix) {
                if stop.is_some_and(|stop| stop.contains(parent)) {
                    continue;
                }
                if seen.insert(parent) {
                    found.push(parent);
                    stack.push(parent);
                }
            }
        }
        found
    }
}
