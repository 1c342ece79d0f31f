//! The auth graph of the events state resolution looks at, with event ids interned to `u32`.

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use crate::chain_cover::AuthDag;
use crate::{EventSource, ResolveError, StateEvent};

/// An index into [`Graph::events`].
pub(crate) type Ix = u32;

/// Every event reachable from the inputs through `auth_events`, loaded once.
pub(crate) struct Graph<'a, E> {
    events: Events<'a, E>,
    ids: FxHashMap<&'a str, Ix>,
    /// `edges[spans[i].0..spans[i].1]` are the indices of event `i`'s auth events.
    spans: Cow<'a, [(u32, u32)]>,
    edges: Cow<'a, [Ix]>,
    /// The room's create event, where the caller loaded it (room version 12).
    pub(crate) create: Option<Ix>,
    /// A number per `(type, state_key)`, when the caller has them (for chain hints).
    keys: Option<&'a [u32]>,
}

/// The events: loaded one by one, or the caller's own array.
enum Events<'a, E> {
    Loaded(Vec<&'a E>),
    Slice(&'a [E]),
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
        let mut graph = Graph {
            events: Events::Loaded(Vec::new()),
            ids: FxHashMap::default(),
            spans: Cow::Owned(Vec::new()),
            edges: Cow::Owned(Vec::new()),
            create: None,
            keys: None,
        };
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
            let event = graph.event(ix);
            let start = u32::try_from(graph.edges.len()).map_err(|_| ResolveError::TooLarge)?;
            for auth_id in event.auth_event_ids() {
                let (parent, new) = graph.add(source, auth_id, room_id, Some(event.event_id()))?;
                if new {
                    queue.push(parent);
                }
                graph.edges.to_mut().push(parent);
            }
            let end = u32::try_from(graph.edges.len()).map_err(|_| ResolveError::TooLarge)?;
            graph.spans.to_mut()[ix as usize] = (start, end);
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
        let ix = Ix::try_from(self.len()).map_err(|_| ResolveError::TooLarge)?;
        if let Events::Loaded(events) = &mut self.events {
            events.push(event);
        }
        self.ids.insert(event.event_id(), ix);
        self.spans.to_mut().push((0, 0));
        Ok((ix, true))
    }

    pub(crate) fn len(&self) -> usize {
        match &self.events {
            Events::Loaded(events) => events.len(),
            Events::Slice(events) => events.len(),
        }
    }
    /// The index of an event loaded by [`Graph::load`].
    pub(crate) fn index(&self, id: &str) -> Option<Ix> {
        self.ids.get(id).copied()
    }
    pub(crate) fn event(&self, ix: Ix) -> &'a E {
        match &self.events {
            Events::Loaded(events) => events[ix as usize],
            Events::Slice(events) => &events[ix as usize],
        }
    }
    pub(crate) fn auth(&self, ix: Ix) -> &[Ix] {
        let (start, end) = self.spans[ix as usize];
        &self.edges[start as usize..end as usize]
    }

    /// A graph over events already interned by the caller: `events[i]`'s auth events are
    /// `edges[spans[i].0..spans[i].1]`, all indices into `events`.
    /// `keys[i]` numbers event `i`'s `(type, state_key)` (`u32::MAX` for none).
    pub(crate) fn interned(
        events: &'a [E],
        spans: &'a [(u32, u32)],
        edges: &'a [Ix],
        keys: &'a [u32],
        create: Option<Ix>,
    ) -> Self {
        Graph {
            events: Events::Slice(events),
            ids: FxHashMap::default(),
            spans: Cow::Borrowed(spans),
            edges: Cow::Borrowed(edges),
            create,
            keys: Some(keys),
        }
    }
}

impl<E: StateEvent> AuthDag for Graph<'_, E> {
    fn len(&self) -> usize {
        Graph::len(self)
    }
    fn auth_events(&self, event: u32) -> &[u32] {
        self.auth(event)
    }
    /// The auth event of the same type and state key (the previous power levels, the same
    /// user's previous membership): chains follow the state they replace.
    fn chain_hint(&self, event: u32) -> Option<u32> {
        if let Some(keys) = self.keys {
            let key = keys[event as usize];
            return self
                .auth(event)
                .iter()
                .copied()
                .find(|&a| key != u32::MAX && keys[a as usize] == key);
        }
        let e = self.event(event);
        let key = (e.kind(), e.state_key());
        self.auth(event).iter().copied().find(|&a| {
            let p = self.event(a);
            (p.kind(), p.state_key()) == key
        })
    }
}
