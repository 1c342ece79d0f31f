//! Lean events against full PDUs: random forked rooms, with random events marked rejected,
//! resolve to the same state through `LeanRoom::resolve` (interned ids, chain cover) and
//! through `resolve` over PDUs (ids looked up by string, auth graph loaded from the source).

use std::collections::HashMap;

use benches::rooms::{self, Rng, RoomSpec, generate};
use matrix_core::json::Object;
use matrix_core::{AuthEvent, Pdu};
use matrix_stateres::lean::LeanRoom;
use matrix_stateres::{StateEvent, StateMap, resolve, state_map_from_ids};
use proptest::prelude::*;

/// A PDU that may be rejected.
struct Marked {
    pdu: Pdu,
    rejected: bool,
}

impl AuthEvent for Marked {
    fn event_id(&self) -> &str {
        self.pdu.event_id()
    }
    fn room_id(&self) -> &str {
        self.pdu.room_id()
    }
    fn has_room_id(&self) -> bool {
        self.pdu.has_room_id()
    }
    fn sender(&self) -> &str {
        self.pdu.sender()
    }
    fn kind(&self) -> &str {
        self.pdu.kind()
    }
    fn state_key(&self) -> Option<&str> {
        self.pdu.state_key()
    }
    fn content(&self) -> &Object {
        self.pdu.content()
    }
    fn redacts(&self) -> Option<&str> {
        self.pdu.redacts()
    }
    fn prev_event_ids(&self) -> impl Iterator<Item = &str> {
        self.pdu.prev_events()
    }
    fn has_signature_from(&self, server: &str) -> bool {
        AuthEvent::has_signature_from(&self.pdu, server)
    }
}

impl StateEvent for Marked {
    fn origin_server_ts(&self) -> i64 {
        self.pdu.origin_server_ts()
    }
    fn auth_event_ids(&self) -> impl Iterator<Item = &str> {
        self.pdu.auth_events()
    }
    fn depth(&self) -> i64 {
        self.pdu.depth()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn lean_resolves_as_pdus_do(
        version in prop::sample::select(vec!["6", "11", "12"]),
        members in 2usize..30,
        servers in 1usize..6,
        fork_events in 1usize..20,
        seed in any::<u64>(),
        reject_one_in in 0usize..6,
    ) {
        let room = generate(RoomSpec { version, members, servers, fork_events, seed });
        let mut rng = Rng::new(seed ^ 0x5eed);
        // Never the create event: a room whose create event is rejected has no state.
        let rejected: Vec<bool> = (0..room.events.len())
            .map(|i| i > 0 && reject_one_in > 0 && rng.below(reject_one_in * 4) == 0)
            .collect();

        let marked: HashMap<String, Marked> = room
            .events
            .iter()
            .zip(&rejected)
            .map(|(pdu, &rejected)| (pdu.event_id().to_owned(), Marked { pdu: pdu.clone(), rejected }))
            .collect();
        let maps: Vec<StateMap<'_>> = room
            .state_sets
            .iter()
            .map(|set| {
                let ids: Vec<&str> = set.iter().map(String::as_str).collect();
                state_map_from_ids(&ids, &marked).expect("valid state")
            })
            .collect();
        let generic = resolve(room.rules, &maps, &marked).map(|state| rooms::rows(&state));

        let mut builder = LeanRoom::builder(room.rules);
        for (pdu, &rejected) in room.events.iter().zip(&rejected) {
            let ix = builder.push_pdu(pdu).expect("distinct ids");
            if rejected {
                builder.set_rejected(ix);
            }
        }
        let lean = builder.build();
        let sets: Vec<Vec<u32>> = room
            .state_sets
            .iter()
            .map(|set| set.iter().map(|id| lean.index(id).expect("in the room")).collect())
            .collect();
        let got = lean.resolve(&sets, None).map(|state| crate::fixtures::lean_rows(&lean, &state));
        prop_assert_eq!(got, generic);
    }
}
