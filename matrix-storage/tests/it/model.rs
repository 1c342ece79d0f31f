//! Model-based property test: random sequences of writes (and, for sled, reopens) give the same
//! observable store as the in-memory backend, the oracle.

use std::sync::Arc;

use matrix_storage::memory::MemoryStore;
use matrix_storage::sled::{SledOptions, SledStore};
use matrix_storage::{
    ChangeSet, Device, EventStatus, NewEvent, NewSnapshot, RoomChanges, SnapshotId, Storage,
    StreamPos, TokenOwner, User,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    NewUser(u8, bool),
    UpdateUser(u8, bool),
    Device(u8, u8),
    DeleteDevice(u8, u8),
    Token(u8, u8, u8),
    DeleteToken(u8),
    AccountData(u8, Option<u8>, u8, u8),
    Enqueue(u8, u8),
    Acknowledge(u8, u8),
    Snapshot(Option<u8>, Vec<(u8, Option<u8>)>),
    Event(u16, bool),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let small = 0u8..4;
    prop_oneof![
        (small.clone(), any::<bool>()).prop_map(|(u, a)| Op::NewUser(u, a)),
        (small.clone(), any::<bool>()).prop_map(|(u, a)| Op::UpdateUser(u, a)),
        (small.clone(), small.clone()).prop_map(|(u, d)| Op::Device(u, d)),
        (small.clone(), small.clone()).prop_map(|(u, d)| Op::DeleteDevice(u, d)),
        (small.clone(), small.clone(), small.clone()).prop_map(|(t, u, d)| Op::Token(t, u, d)),
        small.clone().prop_map(Op::DeleteToken),
        (small.clone(), prop::option::of(small.clone()), small.clone(), any::<u8>())
            .prop_map(|(u, r, k, v)| Op::AccountData(u, r, k, v)),
        (small.clone(), any::<u8>()).prop_map(|(d, p)| Op::Enqueue(d, p)),
        (small.clone(), 0u8..10).prop_map(|(d, n)| Op::Acknowledge(d, n)),
        (
            prop::option::of(0u8..8),
            prop::collection::vec((small.clone(), prop::option::of(small.clone())), 0..4)
        )
            .prop_map(|(p, c)| Op::Snapshot(p, c)),
        (0u16..50, any::<bool>()).prop_map(|(e, t)| Op::Event(e, t)),
        Just(Op::Reopen),
    ]
}

fn changes(op: &Op) -> Option<ChangeSet> {
    let user = |u: u8, admin: bool| User {
        user_id: format!("@u{u}:x"),
        password_hash: Some(format!("hash{u}")),
        admin,
        deactivated: false,
    };
    let mut c = ChangeSet::new();
    match op {
        Op::NewUser(u, a) => c.new_users.push(user(*u, *a)),
        Op::UpdateUser(u, a) => c.updated_users.push(user(*u, *a)),
        Op::Device(u, d) => c.devices.push(Device {
            user_id: format!("@u{u}:x"),
            device_id: format!("D{d}"),
            display_name: Some(format!("n{d}")),
        }),
        Op::DeleteDevice(u, d) => c.deleted_devices.push((format!("@u{u}:x"), format!("D{d}"))),
        Op::Token(t, u, d) => c.new_tokens.push((
            format!("t{t}"),
            TokenOwner { user_id: format!("@u{u}:x"), device_id: format!("D{d}") },
        )),
        Op::DeleteToken(t) => c.deleted_tokens.push(format!("t{t}")),
        Op::AccountData(u, r, k, v) => c.account_data.push((
            format!("@u{u}:x"),
            r.map(|r| format!("!r{r}")),
            format!("k{k}"),
            vec![*v],
        )),
        Op::Enqueue(d, p) => c.enqueue.push((format!("d{d}"), Arc::from(&[*p][..]))),
        Op::Acknowledge(d, n) => c.acknowledge.push((format!("d{d}"), u64::from(*n))),
        Op::Snapshot(parent, entries) => {
            c.snapshot = Some(NewSnapshot {
                parent: parent.map(|p| SnapshotId(u64::from(p))),
                changes: entries
                    .iter()
                    .map(|(k, v)| (format!("t{k}"), String::new(), v.map(|v| format!("$s{v}"))))
                    .collect(),
            })
        }
        Op::Event(e, timeline) => c.events.push(NewEvent {
            event_id: format!("$e{e}"),
            room_id: "!r".into(),
            json: Arc::from(format!("{{\"e\":{e}}}").as_bytes()),
            status: EventStatus::Accepted,
            auth_events: vec![format!("$e{}", e / 2)],
            prev_events: Vec::new(),
            in_timeline: *timeline,
            state_after: None,
        }),
        Op::Reopen => return None,
    }
    Some(c)
}

/// Everything observable about the store, for comparison.
async fn observe(store: &dyn Storage, snapshots: u64) -> String {
    let mut out = String::new();
    for u in 0..4u8 {
        let user = format!("@u{u}:x");
        out += &format!("{:?}\n", store.user(&user).await.expect("reads"));
        out += &format!("{:?}\n", store.devices(&user).await.expect("reads"));
        out += &format!("{:?}\n", store.all_account_data(&user).await.expect("reads"));
        out += &format!("{:?}\n", store.token(&format!("t{u}")).await.expect("reads"));
        out += &format!("{:?}\n", store.outbound(&format!("d{u}"), 100).await.expect("reads"));
    }
    let head = store.stream_position().await.expect("reads");
    out += &format!(
        "{head:?} {:?}\n",
        store.stream_range(StreamPos(0), head, 1000).await.expect("reads")
    );
    for s in 0..snapshots {
        out += &format!("{:?}\n", store.state_full(SnapshotId(s)).await.expect("reads"));
    }
    out += &format!("{:?}\n", store.auth_chain(&["$e49", "$e20"]).await.expect("reads"));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn sled_behaves_like_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let model = MemoryStore::new();
            let mut sled = SledStore::open(dir.path(), &SledOptions::default()).expect("opens");
            let mut room = ChangeSet::new();
            room.rooms.push(RoomChanges { room_id: "!r".into(), create_with_version: Some("12".into()), ..RoomChanges::default() });
            model.apply(room.clone()).await.expect("room");
            sled.apply(room).await.expect("room");
            let mut snapshots = 0;
            for op in &ops {
                let Some(changes) = changes(op) else {
                    drop(sled);
                    sled = crate::reopen(dir.path()).await;
                    continue;
                };
                let expected = model.apply(changes.clone()).await;
                let got = sled.apply(changes).await;
                match (&expected, &got) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{:?}", op),
                    (Err(a), Err(b)) => prop_assert_eq!(a.kind(), b.kind(), "{:?}", op),
                    _ => prop_assert!(false, "{:?}: model {:?}, sled {:?}", op, expected, got),
                }
                if let Ok(applied) = &expected && applied.snapshot.is_some() {
                    snapshots += 1;
                }
            }
            prop_assert_eq!(observe(&model, snapshots).await, observe(&sled, snapshots).await);
            Ok(())
        })?;
    }
}
