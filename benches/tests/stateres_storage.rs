//! Resolution from storage through the persisted auth-chain index gives ruma-state-res's
//! state on random forked rooms (room versions 6, 11 and 12), on the in-memory and sled
//! stores, reads far fewer events than the room holds, and grows the index only with what is
//! new.

use std::sync::Arc;

use benches::rooms::{RoomSpec, generate};
use benches::ruma_stateres::RumaRoom;
use benches::stored_room::{StoredRoom, rows, state_ids, store_room};
use matrix_federation::inbound::{self, RoomContext, StateSplit};
use matrix_storage::Storage;
use matrix_storage::memory::MemoryStore;
use matrix_storage::sled::{SledOptions, SledStore};
use proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

fn theirs(room: &benches::rooms::Room) -> Vec<(String, String, String)> {
    RumaRoom::resolved_rows(room, &room.state_sets)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn resolution_from_storage_is_ruma_s(
        version in prop::sample::select(vec!["6", "11", "12"]),
        members in 2usize..40,
        servers in 1usize..6,
        fork_events in 1usize..20,
        seed in any::<u64>(),
    ) {
        let room = generate(RoomSpec { version, members, servers, fork_events, seed });
        let storage: Arc<dyn Storage> = Arc::new(MemoryStore::new());
        let states = state_ids(&room);
        let ours = runtime().block_on(async {
            store_room(&storage, &room).await;
            let stored = StoredRoom::new(storage.clone(), &room);
            assert!(stored.resolution_plan(&StateSplit::new(&states)).await.expect("plans").is_some());
            inbound::resolve(room.rules, &states, &stored).await.expect("resolves")
        });
        prop_assert_eq!(rows(&ours), theirs(&room));
    }
}

/// On sled, in a 3,000-member room: the first resolution indexes the room and stores the
/// index; a store opened again resolves from it (nothing new indexed) and reads a few
/// hundred events, not the room.
#[test]
fn the_index_is_stored_and_read_back() {
    let room =
        generate(RoomSpec { version: "11", members: 3_000, servers: 20, fork_events: 30, seed: 3 });
    let states = state_ids(&room);
    let expected = theirs(&room);
    let dir = tempfile::tempdir().expect("a directory");
    let rt = runtime();
    let indexed = rt.block_on(async {
        let storage: Arc<dyn Storage> =
            Arc::new(SledStore::open(dir.path(), &SledOptions::default()).expect("opens"));
        store_room(&storage, &room).await;
        let stored = StoredRoom::new(storage.clone(), &room);
        let resolved = inbound::resolve(room.rules, &states, &stored).await.expect("resolves");
        assert_eq!(rows(&resolved), expected);
        let entries =
            storage.auth_chain_index(&stored.room_id, 0, usize::MAX).await.expect("reads");
        assert!(entries.len() >= 3_000, "{} entries", entries.len());
        entries.len()
    });
    rt.block_on(async {
        let storage: Arc<dyn Storage> =
            Arc::new(SledStore::open(dir.path(), &SledOptions::default()).expect("reopens"));
        let stored = StoredRoom::new(storage.clone(), &room);
        let plan = stored
            .resolution_plan(&StateSplit::new(&states))
            .await
            .expect("plans")
            .expect("a plan");
        assert!(plan.events.len() < 1_000, "{} events to read", plan.events.len());
        let resolved = inbound::resolve(room.rules, &states, &stored).await.expect("resolves");
        assert_eq!(rows(&resolved), expected);
        let entries =
            storage.auth_chain_index(&stored.room_id, 0, usize::MAX).await.expect("reads");
        assert_eq!(entries.len(), indexed, "nothing indexed twice");
    });
}

/// A state naming an event whose auth event is not stored cannot be indexed: no plan, nothing
/// stored for it, and resolution goes the way it went before the index (here it names the
/// missing event).
#[test]
fn an_event_that_cannot_be_indexed_leaves_no_plan() {
    let room =
        generate(RoomSpec { version: "11", members: 50, servers: 3, fork_events: 10, seed: 5 });
    let states = state_ids(&room);
    // A member event some state event names as an auth event, left out of the store.
    let named: std::collections::HashSet<&str> =
        room.events.iter().flat_map(|e| e.auth_events()).collect();
    let dropped = room
        .events
        .iter()
        .position(|e| e.kind() == "m.room.member" && named.contains(e.event_id()))
        .expect("a member event named as an auth event");
    let dropped_id = room.events[dropped].event_id().to_owned();
    let kept = benches::rooms::Room {
        rules: room.rules,
        events: room.events.iter().filter(|e| e.event_id() != dropped_id).cloned().collect(),
        state_sets: room.state_sets.clone(),
    };
    let storage: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    runtime().block_on(async {
        store_room(&storage, &kept).await;
        let stored = StoredRoom::new(storage.clone(), &kept);
        assert_eq!(
            stored.resolution_plan(&StateSplit::new(&states)).await.expect("no storage error"),
            None
        );
        let error = inbound::resolve(kept.rules, &states, &stored).await.expect_err("missing");
        assert!(error.to_string().contains(&dropped_id), "{error}");
        let index = storage.auth_chain_index(&stored.room_id, 0, usize::MAX).await.expect("reads");
        assert!(index.is_empty(), "nothing indexed: {} entries", index.len());
    });
}
