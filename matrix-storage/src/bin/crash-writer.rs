//! A writer for the crash test: applies change sets in a loop and prints `ack N` after each
//! one is acknowledged, until it is killed.
//!
//! `crash-writer sled DIR START`, `crash-writer fjall DIR START` or
//! `crash-writer postgres URL SCHEMA START` writes events
//! `$crash-START`, `$crash-START+1`, ... each with a user `@crash-N:x`, a pusher of that
//! user and the event's entry numbered N in the room's auth-chain index (chain N, sequence 1,
//! one link to `(N, N)`) in the same change set.

use std::io::Write as _;
use std::sync::Arc;

use matrix_storage::postgres::{PostgresOptions, PostgresStore};
use matrix_storage::sled::{SledOptions, SledStore};
use matrix_storage::{
    AuthChainEntry, ChangeSet, EventStatus, NewEvent, Pusher, RoomChanges, Storage, User,
};

fn usage() -> ! {
    eprintln!(
        "usage: crash-writer sled DIR START | crash-writer fjall DIR START | \
         crash-writer postgres URL SCHEMA START"
    );
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (store, start): (Arc<dyn Storage>, &str) = match args.as_slice() {
        [backend, dir, start] if backend == "sled" => (
            Arc::new(SledStore::open(dir, &SledOptions::default()).expect("the store opens")),
            start,
        ),
        [backend, dir, start] if backend == "fjall" => {
            let options = matrix_storage::fjall::FjallOptions::default();
            let store = matrix_storage::fjall::FjallStore::open(dir, &options);
            (Arc::new(store.expect("the store opens")), start)
        }
        [backend, url, schema, start] if backend == "postgres" => {
            let options = PostgresOptions::new(url).with_schema(schema);
            (Arc::new(PostgresStore::open(&options).await.expect("the store opens")), start)
        }
        _ => usage(),
    };
    let Ok(start) = start.parse::<u64>() else { usage() };
    if store.room("!crash").await.expect("reads").is_none() {
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
        changes.pushers.push(Pusher {
            user_id: format!("@crash-{n}:x"),
            app_id: "crash".into(),
            pushkey: n.to_string(),
            device_id: "D".into(),
            data: format!(r#"{{"n":{n}}}"#).into_bytes(),
        });
        let index = u32::try_from(n).expect("an event number below 2^32");
        changes.auth_chain.push(AuthChainEntry {
            room_id: "!crash".into(),
            index,
            event_id: format!("$crash-{n}"),
            chain: index,
            seq: 1,
            links: vec![(index, index)],
        });
        store.apply(changes).await.expect("applies");
        // Acknowledged: only now may the parent count on it.
        writeln!(out, "ack {n}").expect("stdout");
        out.flush().expect("stdout");
    }
}
