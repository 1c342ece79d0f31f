//! A writer for the crash test: applies change sets to a sled store in a loop and prints
//! `ack N` after each one is acknowledged, until it is killed.
//!
//! `crash-writer DIR START` writes events `$crash-START`, `$crash-START+1`, ...

use std::io::Write as _;
use std::sync::Arc;

use matrix_storage::sled::{SledOptions, SledStore};
use matrix_storage::{ChangeSet, EventStatus, NewEvent, RoomChanges, Storage, User};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(start)) = (args.next(), args.next().and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: crash-writer DIR START");
        std::process::exit(2);
    };
    let store = SledStore::open(&dir, &SledOptions::default()).expect("the store opens");
    if matrix_storage::RoomStore::room(&store, "!crash").await.expect("reads").is_none() {
        let mut changes = ChangeSet::new();
        changes.rooms.push(RoomChanges {
            room_id: "!crash".into(),
            create_with_version: Some("12".into()),
            ..RoomChanges::default()
        });
        store.apply(changes).await.expect("creates the room");
    }
    let mut out = std::io::stdout().lock();
    for n in start.. {
        let mut changes = ChangeSet::new();
        changes.events.push(NewEvent {
            event_id: format!("$crash-{n}"),
            room_id: "!crash".into(),
            json: Arc::from(format!(r#"{{"n":{n}}}"#).as_bytes()),
            status: EventStatus::Accepted,
            auth_events: Vec::new(),
            prev_events: Vec::new(),
            in_timeline: true,
            state_after: None,
        });
        changes.new_users.push(User {
            user_id: format!("@crash-{n}:x"),
            password_hash: None,
            admin: false,
            deactivated: false,
        });
        store.apply(changes).await.expect("applies");
        // Acknowledged: only now may the parent count on it.
        writeln!(out, "ack {n}").expect("stdout");
        out.flush().expect("stdout");
    }
}
