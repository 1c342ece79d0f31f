//! A purge is durable: the sled store (its write-ahead log replayed at open) still has the
//! room gone after a reopen.

use std::sync::Arc;

use matrix_storage::{
    ChangeSet, EventStatus, EventStore, NewEvent, RoomChanges, RoomStore, Storage,
};

fn event(id: &str, room: &str) -> NewEvent {
    NewEvent {
        event_id: id.to_owned(),
        room_id: room.to_owned(),
        json: Arc::from(&b"{}"[..]),
        status: EventStatus::Accepted,
        auth_events: Vec::new(),
        prev_events: Vec::new(),
        in_timeline: true,
        state_after: None,
    }
}

#[tokio::test]
async fn a_purge_survives_reopening() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    {
        let options = matrix_storage::sled::SledOptions::default();
        let store = matrix_storage::sled::SledStore::open(dir.path(), &options).expect("opens");
        let mut changes = ChangeSet::new();
        for room in ["!gone", "!kept"] {
            changes.rooms.push(RoomChanges {
                room_id: room.to_owned(),
                create_with_version: Some("12".to_owned()),
                memberships: vec![("@a:s".to_owned(), "join".to_owned())],
                ..RoomChanges::default()
            });
            changes.events.push(event(&format!("${room}"), room));
        }
        store.apply(changes).await.expect("applies");
        assert_eq!(store.purge_room("!gone").await.expect("purges"), ["$!gone"]);
    }
    let store = super::reopen(dir.path()).await;
    assert!(store.room("!gone").await.expect("reads").is_none());
    assert!(store.event("$!gone").await.expect("reads").is_none());
    assert_eq!(
        store.rooms_of_user("@a:s").await.expect("reads"),
        [("!kept".to_owned(), "join".to_owned())]
    );
    assert!(store.event("$!kept").await.expect("reads").is_some());
}
