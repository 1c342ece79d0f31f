//! The conformance tests of the smaller domains: end-to-end encryption keys, to-device
//! messages, receipts, transaction ids, aliases and the directory, profiles, redactions,
//! forgotten rooms, the media quota and account-data changes, and the stream they share.

use std::collections::{BTreeMap, BTreeSet};

use super::{Store, apply, create_room, event};
use crate::{
    AccountDataChange, Alias, ChangeSet, ClaimedKey, DehydratedDevice, Device, ErrorKind,
    FallbackKey, NewToDevice, OneTimeKey, Presence, PresenceState, Profile, Receipt, ReceiptKey,
    StreamPos, TokenOwner, TransactionId,
};

fn s(text: &str) -> String {
    text.to_owned()
}

fn otk(device: &str, key_id: &str) -> OneTimeKey {
    OneTimeKey {
        user_id: s("@a:x"),
        device_id: s(device),
        key_id: s(key_id),
        key: format!(r#"{{"key":"{key_id}"}}"#).into_bytes(),
    }
}

fn fallback(device: &str, key_id: &str) -> FallbackKey {
    FallbackKey {
        user_id: s("@a:x"),
        device_id: s(device),
        algorithm: key_id.split(':').next().unwrap_or_default().to_owned(),
        key_id: s(key_id),
        key: format!(r#"{{"fallback":"{key_id}"}}"#).into_bytes(),
        used: false,
    }
}

fn to_device(device: &str, sender: &str, content: &str) -> NewToDevice {
    NewToDevice {
        user_id: s("@a:x"),
        device_id: s(device),
        sender: s(sender),
        kind: s("m.room_key"),
        content: content.as_bytes().to_vec(),
    }
}

fn receipt(room: &str, user: &str, thread: Option<&str>, event: &str, pos: u64) -> Receipt {
    Receipt {
        key: ReceiptKey {
            room_id: s(room),
            user_id: s(user),
            kind: s("m.read"),
            thread: thread.map(str::to_owned),
        },
        event_id: s(event),
        event_pos: StreamPos(pos),
        ts: 1000 + pos,
    }
}

fn txn(device: &str, scope: &str, id: &str, result: &str) -> TransactionId {
    TransactionId {
        user_id: s("@a:x"),
        device_id: s(device),
        scope: s(scope),
        txn_id: s(id),
        result: s(result),
    }
}

async fn head(store: &Store) -> StreamPos {
    store.stream_position().await.expect("reads")
}

/// Device keys, one-time keys (counted per algorithm, claimed once, in key-id order) and
/// fallback keys (handed out when no one-time key is left, then marked used).
pub async fn e2ee_keys(store: Store) {
    let mut changes = ChangeSet::new();
    changes.device_keys =
        vec![(s("@a:x"), s("D2"), b"{\"d\":2}".to_vec()), (s("@a:x"), s("D1"), b"{}".to_vec())];
    changes.one_time_keys = vec![
        otk("D1", "signed_curve25519:B"),
        otk("D1", "signed_curve25519:A"),
        otk("D1", "curve25519:Z"),
        otk("D2", "signed_curve25519:A"),
    ];
    changes.fallback_keys = vec![fallback("D1", "signed_curve25519:F")];
    apply(&store, changes).await;

    let keys = store.device_keys("@a:x").await.expect("reads");
    assert_eq!(keys, vec![(s("D1"), b"{}".to_vec()), (s("D2"), b"{\"d\":2}".to_vec())]);
    assert!(store.device_keys("@b:x").await.expect("reads").is_empty());
    let counts = store.one_time_key_counts("@a:x", "D1").await.expect("reads");
    assert_eq!(counts, BTreeMap::from([(s("curve25519"), 1), (s("signed_curve25519"), 2)]));
    assert_eq!(
        store.one_time_key("@a:x", "D1", "signed_curve25519:A").await.expect("reads"),
        Some(otk("D1", "signed_curve25519:A").key)
    );

    // Adding a held key id again keeps the stored key; replacing device keys replaces.
    let mut changes = ChangeSet::new();
    let mut other = otk("D1", "signed_curve25519:A");
    other.key = b"{\"other\":1}".to_vec();
    changes.one_time_keys = vec![other];
    changes.device_keys = vec![(s("@a:x"), s("D1"), b"{\"new\":1}".to_vec())];
    apply(&store, changes).await;
    assert_eq!(
        store.one_time_key("@a:x", "D1", "signed_curve25519:A").await.expect("reads"),
        Some(otk("D1", "signed_curve25519:A").key)
    );
    assert_eq!(store.device_keys("@a:x").await.expect("reads")[0].1, b"{\"new\":1}".to_vec());

    // Claims: the one-time keys in key-id order, each once, then the fallback key.
    let claim = |algorithm: &'static str| {
        let store = store.clone();
        async move { store.claim_key("@a:x", "D1", algorithm).await.expect("claims") }
    };
    let first = claim("signed_curve25519").await.expect("a key");
    assert_eq!(
        first,
        ClaimedKey {
            key_id: s("signed_curve25519:A"),
            key: otk("D1", "signed_curve25519:A").key,
            fallback: false
        }
    );
    assert_eq!(store.one_time_key("@a:x", "D1", "signed_curve25519:A").await.expect("reads"), None);
    assert_eq!(claim("signed_curve25519").await.expect("a key").key_id, "signed_curve25519:B");
    let unused = store.fallback_keys("@a:x", "D1").await.expect("reads");
    assert_eq!(unused, vec![fallback("D1", "signed_curve25519:F")]);
    let from_fallback = claim("signed_curve25519").await.expect("the fallback key");
    assert!(from_fallback.fallback);
    assert_eq!(from_fallback.key_id, "signed_curve25519:F");
    assert!(store.fallback_keys("@a:x", "D1").await.expect("reads")[0].used);
    // The fallback key is handed out again (it is kept), and other algorithms are apart.
    assert!(claim("signed_curve25519").await.expect("again").fallback);
    assert_eq!(claim("curve25519").await.expect("a key").key_id, "curve25519:Z");
    assert_eq!(claim("curve25519").await, None);
    assert_eq!(claim("unknown").await, None);
    assert_eq!(store.claim_key("@a:x", "NONE", "signed_curve25519").await.expect("claims"), None);
    assert_eq!(
        store.one_time_key_counts("@a:x", "D1").await.expect("reads"),
        BTreeMap::new(),
        "claimed keys are gone"
    );
    // The other device's keys are untouched.
    assert_eq!(store.one_time_key_counts("@a:x", "D2").await.expect("reads").len(), 1);

    // A new fallback key replaces the algorithm's old one, unused.
    let mut changes = ChangeSet::new();
    changes.fallback_keys = vec![fallback("D1", "signed_curve25519:G")];
    apply(&store, changes).await;
    assert_eq!(
        store.fallback_keys("@a:x", "D1").await.expect("reads"),
        vec![fallback("D1", "signed_curve25519:G")]
    );
}

/// Of many concurrent claims, each one-time key is handed out exactly once.
pub async fn claims_are_exactly_once(store: Store) {
    const KEYS: usize = 120;
    let mut changes = ChangeSet::new();
    changes.one_time_keys = (0..KEYS).map(|i| otk("D", &format!("alg:{i:04}"))).collect();
    apply(&store, changes).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..20 {
                if let Some(key) = store.claim_key("@a:x", "D", "alg").await.expect("claims") {
                    got.push(key.key_id);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("joins"));
    }
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), KEYS, "every key handed out, none twice: {all:?}");
    assert_eq!(distinct.len(), KEYS);
    assert_eq!(store.one_time_key_counts("@a:x", "D").await.expect("reads"), BTreeMap::new());
}

/// Deleting a device deletes its keys, its to-device queue and its transaction ids, and
/// nothing of another device.
pub async fn deleting_a_device_deletes_what_it_held(store: Store) {
    let mut changes = ChangeSet::new();
    changes.devices = ["D", "E"]
        .iter()
        .map(|d| Device { user_id: s("@a:x"), device_id: s(d), display_name: None })
        .collect();
    changes.new_tokens = vec![(s("tok"), TokenOwner { user_id: s("@a:x"), device_id: s("D") })];
    for device in ["D", "E"] {
        changes.device_keys.push((s("@a:x"), s(device), b"{}".to_vec()));
        changes.one_time_keys.push(otk(device, "alg:1"));
        changes.fallback_keys.push(fallback(device, "alg:F"));
        changes.to_device.push(to_device(device, "@b:x", "{}"));
        changes.transaction_ids.push(txn(device, "send", "t1", "$e"));
    }
    apply(&store, changes).await;
    let mut changes = ChangeSet::new();
    changes.deleted_devices = vec![(s("@a:x"), s("D"))];
    apply(&store, changes).await;
    let upto = head(&store).await;
    let keys = store.device_keys("@a:x").await.expect("reads");
    assert_eq!(keys.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(), vec!["E"]);
    for (device, present) in [("D", false), ("E", true)] {
        let counts = store.one_time_key_counts("@a:x", device).await.expect("reads");
        assert_eq!(!counts.is_empty(), present, "{device}");
        let fallback = store.fallback_keys("@a:x", device).await.expect("reads");
        assert_eq!(!fallback.is_empty(), present, "{device}");
        let inbox = store.to_device("@a:x", device, StreamPos(0), upto, 10).await.expect("reads");
        assert_eq!(!inbox.is_empty(), present, "{device}");
        let id = store.transaction_id("@a:x", device, "send", "t1").await.expect("reads");
        assert_eq!(id.is_some(), present, "{device}");
    }
    let ranged = store.to_device_range(StreamPos(0), upto, 10).await.expect("reads");
    assert_eq!(
        ranged.iter().map(|m| m.device_id.as_str()).collect::<Vec<_>>(),
        vec!["E"],
        "a deleted device's messages are gone from the range too"
    );
    assert_eq!(store.token("tok").await.expect("reads"), None);
}

fn dehydrated(user: &str, device: &str, data: &str) -> DehydratedDevice {
    DehydratedDevice { user_id: s(user), device_id: s(device), device_data: data.into() }
}

/// A user's dehydrated device: one record per user, replaced by the next; deleting the
/// device it names (with its keys and queue, as any device's) deletes it, deleting another
/// device does not; in one change set, a deletion comes before a new record.
pub async fn dehydrated_devices(store: Store) {
    assert_eq!(store.dehydrated_device("@a:x").await.expect("reads"), None);
    let mut changes = ChangeSet::new();
    for device in ["D1", "L"] {
        changes.devices.push(Device {
            user_id: s("@a:x"),
            device_id: s(device),
            display_name: None,
        });
        changes.device_keys.push((s("@a:x"), s(device), b"{}".to_vec()));
    }
    changes.to_device.push(to_device("D1", "@b:x", "{}"));
    changes.dehydrated_devices.push(dehydrated("@a:x", "D1", r#"{"v":1}"#));
    changes.dehydrated_devices.push(dehydrated("@b:x", "B1", r#"{"v":"b"}"#));
    apply(&store, changes).await;
    let held = store.dehydrated_device("@a:x").await.expect("reads");
    assert_eq!(held, Some(dehydrated("@a:x", "D1", r#"{"v":1}"#)));
    assert_eq!(store.dehydrated_device("@c:x").await.expect("reads"), None);

    // Another device deleted: the record stays.
    let mut changes = ChangeSet::new();
    changes.deleted_devices.push((s("@a:x"), s("L")));
    apply(&store, changes).await;
    assert_eq!(store.dehydrated_device("@a:x").await.expect("reads"), held);

    // Replaced: the old device deleted and the new one recorded in one change set.
    let mut changes = ChangeSet::new();
    changes.deleted_devices.push((s("@a:x"), s("D1")));
    changes.devices.push(Device { user_id: s("@a:x"), device_id: s("D2"), display_name: None });
    changes.dehydrated_devices.push(dehydrated("@a:x", "D2", r#"{"v":2}"#));
    apply(&store, changes).await;
    let held = store.dehydrated_device("@a:x").await.expect("reads");
    assert_eq!(held, Some(dehydrated("@a:x", "D2", r#"{"v":2}"#)));
    let upto = head(&store).await;
    let inbox = store.to_device("@a:x", "D1", StreamPos(0), upto, 10).await.expect("reads");
    assert!(inbox.is_empty(), "the old device's queue went with it");

    // The same device recorded again (a deletion first, in the same change set).
    let mut changes = ChangeSet::new();
    changes.deleted_devices.push((s("@a:x"), s("D2")));
    changes.dehydrated_devices.push(dehydrated("@a:x", "D2", r#"{"v":3}"#));
    apply(&store, changes).await;
    let held = store.dehydrated_device("@a:x").await.expect("reads");
    assert_eq!(held, Some(dehydrated("@a:x", "D2", r#"{"v":3}"#)));

    // Its device deleted: no record; the other user's stays.
    let mut changes = ChangeSet::new();
    changes.deleted_devices.push((s("@a:x"), s("D2")));
    apply(&store, changes).await;
    assert_eq!(store.dehydrated_device("@a:x").await.expect("reads"), None);
    let other = store.dehydrated_device("@b:x").await.expect("reads");
    assert_eq!(other, Some(dehydrated("@b:x", "B1", r#"{"v":"b"}"#)));
}

/// The device-list stream: each change a position, read by range, each user once.
pub async fn device_list_stream(store: Store) {
    let start = head(&store).await;
    let mut changes = ChangeSet::new();
    changes.device_list_changes = vec![s("@b:x"), s("@a:x")];
    apply(&store, changes).await;
    let middle = head(&store).await;
    assert!(middle > start);
    let mut changes = ChangeSet::new();
    changes.device_list_changes = vec![s("@a:x"), s("@c:x")];
    apply(&store, changes).await;
    let end = head(&store).await;
    let all = store.device_list_changes(start, end).await.expect("reads");
    assert_eq!(all, vec![s("@a:x"), s("@b:x"), s("@c:x")]);
    let later = store.device_list_changes(middle, end).await.expect("reads");
    assert_eq!(later, vec![s("@a:x"), s("@c:x")]);
    assert!(store.device_list_changes(end, end).await.expect("reads").is_empty());
    let early = store.device_list_changes(start, middle).await.expect("reads");
    assert_eq!(early, vec![s("@a:x"), s("@b:x")]);
}

/// To-device queues: in stream order per device, read up to a position, counted per sender,
/// deleted once delivered.
pub async fn to_device_inbox(store: Store) {
    let mut changes = ChangeSet::new();
    changes.to_device = vec![
        to_device("D", "@b:x", r#"{"n":1}"#),
        to_device("E", "@b:x", r#"{"n":2}"#),
        to_device("D", "@c:x", r#"{"n":3}"#),
    ];
    apply(&store, changes).await;
    let first = head(&store).await;
    let mut changes = ChangeSet::new();
    changes.to_device = vec![to_device("D", "@b:x", r#"{"n":4}"#)];
    apply(&store, changes).await;
    let second = head(&store).await;

    let all = store.to_device("@a:x", "D", StreamPos(0), second, 10).await.expect("reads");
    let contents: Vec<&[u8]> = all.iter().map(|m| m.content.as_slice()).collect();
    assert_eq!(contents, vec![&br#"{"n":1}"#[..], br#"{"n":3}"#, br#"{"n":4}"#]);
    assert!(all.windows(2).all(|w| w[0].pos < w[1].pos));
    assert_eq!((all[0].sender.as_str(), all[0].kind.as_str()), ("@b:x", "m.room_key"));
    let upto_first = store.to_device("@a:x", "D", StreamPos(0), first, 10).await.expect("reads");
    assert_eq!(upto_first.len(), 2, "what came after the position waits");
    let limited = store.to_device("@a:x", "D", StreamPos(0), second, 1).await.expect("reads");
    assert_eq!(limited, all[..1].to_vec());

    // Every device's messages by position, with their devices.
    let ranged = store.to_device_range(StreamPos(0), second, 10).await.expect("reads");
    let addressed: Vec<(&str, &[u8])> =
        ranged.iter().map(|m| (m.device_id.as_str(), m.message.content.as_slice())).collect();
    assert_eq!(
        addressed,
        vec![
            ("D", &br#"{"n":1}"#[..]),
            ("E", br#"{"n":2}"#),
            ("D", br#"{"n":3}"#),
            ("D", br#"{"n":4}"#)
        ]
    );
    assert!(ranged.iter().all(|m| m.user_id == "@a:x"));
    assert_eq!(ranged[0].message, all[0]);
    let after_first = store.to_device_range(ranged[0].message.pos, first, 10).await;
    assert_eq!(after_first.expect("reads"), ranged[1..3].to_vec());
    let limited = store.to_device_range(StreamPos(0), second, 2).await.expect("reads");
    assert_eq!(limited, ranged[..2].to_vec());
    assert!(store.to_device_range(second, second, 10).await.expect("reads").is_empty());

    let usage = store.to_device_usage("@a:x", "D", "@b:x").await.expect("reads");
    let size = to_device("D", "@b:x", r#"{"n":1}"#).size();
    assert_eq!((usage.messages, usage.bytes), (3, 3 * size));
    assert_eq!((usage.sender_messages, usage.sender_bytes), (2, 2 * size));

    // Delivered up to the second message: the first two are gone, the third stays.
    let mut changes = ChangeSet::new();
    changes.to_device_delivered = vec![(s("@a:x"), s("D"), all[1].pos)];
    apply(&store, changes).await;
    let left = store.to_device("@a:x", "D", StreamPos(0), head(&store).await, 10).await;
    assert_eq!(left.expect("reads"), all[2..].to_vec());
    let other = store.to_device("@a:x", "E", StreamPos(0), head(&store).await, 10).await;
    assert_eq!(other.expect("reads").len(), 1, "other devices keep theirs");
    let usage = store.to_device_usage("@a:x", "D", "@c:x").await.expect("reads");
    assert_eq!((usage.messages, usage.sender_messages), (1, 0));
    let ranged_left = store.to_device_range(StreamPos(0), head(&store).await, 10).await;
    let left: Vec<(String, StreamPos)> =
        ranged_left.expect("reads").into_iter().map(|m| (m.device_id, m.message.pos)).collect();
    assert_eq!(left, vec![(s("E"), ranged[1].message.pos), (s("D"), all[2].pos)]);
}

/// Receipts: one per key, replaced by a newer one, listed by the position of their last
/// change, deleted on request.
pub async fn receipts_replace_and_stream(store: Store) {
    let start = head(&store).await;
    let mut changes = ChangeSet::new();
    changes.receipts = vec![
        receipt("!r", "@a:x", None, "$1", 1),
        receipt("!r", "@b:x", None, "$1", 1),
        receipt("!r", "@a:x", Some("main"), "$1", 1),
        receipt("!other", "@a:x", None, "$9", 9),
    ];
    apply(&store, changes).await;
    let middle = head(&store).await;
    let mut changes = ChangeSet::new();
    changes.receipts = vec![receipt("!r", "@a:x", None, "$2", 2)];
    apply(&store, changes).await;
    let end = head(&store).await;

    let all = store.receipts("!r", start, end).await.expect("reads");
    assert_eq!(all.len(), 3, "one per key: {all:?}");
    assert!(all.windows(2).all(|w| w[0].pos < w[1].pos), "in stream order");
    assert_eq!(all[2].receipt, receipt("!r", "@a:x", None, "$2", 2));
    let later = store.receipts("!r", middle, end).await.expect("reads");
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].receipt.event_id, "$2");
    assert!(later[0].pos > middle && later[0].pos <= end);
    let early = store.receipts("!r", start, middle).await.expect("reads");
    assert_eq!(early.len(), 2, "a replaced receipt is listed at its new position only");

    let mine = store.user_receipts("!r", "@a:x").await.expect("reads");
    let keys: Vec<Option<&str>> = mine.iter().map(|r| r.receipt.key.thread.as_deref()).collect();
    assert_eq!(keys, vec![None, Some("main")]);

    let mut changes = ChangeSet::new();
    changes.deleted_receipts = vec![receipt("!r", "@a:x", Some("main"), "$1", 1).key];
    apply(&store, changes).await;
    assert_eq!(store.user_receipts("!r", "@a:x").await.expect("reads").len(), 1);
    let all = store.receipts("!r", start, head(&store).await).await.expect("reads");
    assert_eq!(all.len(), 2);
}

/// A transaction id commits with what it names, once: a second change set with the same id
/// is refused whole.
pub async fn transaction_ids_commit_once(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms.push(create_room("!r"));
    changes.events = vec![event("$first", "!r", &[], true)];
    changes.transaction_ids = vec![txn("D", "send", "t1", "$first")];
    apply(&store, changes).await;
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$second", "!r", &[], true)];
    changes.transaction_ids = vec![txn("D", "send", "t1", "$second")];
    let refused = store.apply(changes).await.expect_err("a used transaction id");
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    assert_eq!(store.event("$second").await.expect("reads"), None, "nothing of it applied");
    assert_eq!(
        store.transaction_id("@a:x", "D", "send", "t1").await.expect("reads").as_deref(),
        Some("$first")
    );
    // Ids are per device and per endpoint; one change set may not use one twice.
    let mut changes = ChangeSet::new();
    changes.transaction_ids =
        vec![txn("E", "send", "t1", "$x"), txn("D", "sendToDevice", "t1", "")];
    apply(&store, changes).await;
    assert_eq!(
        store.transaction_id("@a:x", "D", "sendToDevice", "t1").await.expect("reads").as_deref(),
        Some("")
    );
    assert_eq!(store.transaction_id("@a:x", "F", "send", "t1").await.expect("reads"), None);
    let mut changes = ChangeSet::new();
    changes.transaction_ids = vec![txn("G", "send", "t", "$1"), txn("G", "send", "t", "$2")];
    assert_eq!(store.apply(changes).await.expect_err("twice").kind(), ErrorKind::Conflict);
    assert_eq!(store.transaction_id("@a:x", "G", "send", "t").await.expect("reads"), None);
}

/// Aliases, the public room directory, redactions, profiles, forgotten rooms and the media
/// quota: set, read, replaced, deleted.
pub async fn records_round_trip(store: Store) {
    let alias = |name: &str, room: &str| Alias {
        alias: format!("#{name}:x"),
        room_id: s(room),
        creator: s("@a:x"),
    };
    let mut changes = ChangeSet::new();
    changes.aliases = vec![alias("b", "!r"), alias("a", "!r"), alias("c", "!other")];
    changes.directory = vec![(s("!r"), true), (s("!other"), true), (s("!gone"), true)];
    changes.redactions = vec![(s("$victim"), s("$redaction"))];
    let profile = Profile { displayname: Some(s("Alice")), avatar_url: None };
    changes.profiles = vec![(s("@a:x"), profile.clone())];
    changes.forgotten = vec![(s("@a:x"), s("!r"), true), (s("@a:x"), s("!old"), true)];
    changes.media_usage = vec![(s("@a:x"), 1234)];
    apply(&store, changes).await;

    assert_eq!(store.alias("#a:x").await.expect("reads"), Some(alias("a", "!r")));
    assert_eq!(store.alias("#zzz:x").await.expect("reads"), None);
    let of_room = store.room_aliases("!r").await.expect("reads");
    assert_eq!(of_room, vec![alias("a", "!r"), alias("b", "!r")]);
    assert!(store.published("!r").await.expect("reads"));
    assert!(!store.published("!never").await.expect("reads"));
    assert_eq!(store.redaction_of("$victim").await.expect("reads").as_deref(), Some("$redaction"));
    assert_eq!(store.redaction_of("$other").await.expect("reads"), None);
    assert_eq!(store.profile("@a:x").await.expect("reads"), Some(profile));
    assert_eq!(store.profile("@b:x").await.expect("reads"), None);
    assert!(store.forgotten("!r", "@a:x").await.expect("reads"));
    assert!(!store.forgotten("!r", "@b:x").await.expect("reads"));
    assert_eq!(store.media_usage("@a:x").await.expect("reads"), 1234);
    assert_eq!(store.media_usage("@b:x").await.expect("reads"), 0);

    let mut changes = ChangeSet::new();
    changes.deleted_aliases = vec![s("#b:x")];
    changes.aliases = vec![alias("c", "!r")];
    changes.directory = vec![(s("!gone"), false)];
    let profile = Profile { displayname: None, avatar_url: Some(s("mxc://x/y")) };
    changes.profiles = vec![(s("@a:x"), profile.clone())];
    changes.forgotten = vec![(s("@a:x"), s("!r"), false)];
    changes.media_usage = vec![(s("@a:x"), 99)];
    apply(&store, changes).await;
    let of_room = store.room_aliases("!r").await.expect("reads");
    assert_eq!(of_room, vec![alias("a", "!r"), alias("c", "!r")]);
    assert!(store.room_aliases("!other").await.expect("reads").is_empty());
    assert_eq!(store.published_rooms().await.expect("reads"), vec![s("!other"), s("!r")]);
    assert_eq!(store.profile("@a:x").await.expect("reads"), Some(profile));
    assert!(!store.forgotten("!r", "@a:x").await.expect("reads"));
    assert!(store.forgotten("!old", "@a:x").await.expect("reads"));
    assert_eq!(store.media_usage("@a:x").await.expect("reads"), 99);
}

/// Application services' room lists: per service and network, apart from the directory,
/// taken out again on request, the last change to one entry in a change set winning.
pub async fn appservice_room_lists(store: Store) {
    let listing = |service: &str, network: &str, room: &str| crate::AppserviceListing {
        appservice_id: s(service),
        network_id: s(network),
        room_id: s(room),
    };
    assert!(store.appservice_listings().await.expect("reads").is_empty());
    let mut changes = ChangeSet::new();
    changes.appservice_directory = vec![
        (listing("irc", "libera", "!b"), true),
        (listing("irc", "libera", "!a"), true),
        (listing("irc", "oftc", "!a"), true),
        (listing("discord", "guild", "!c"), true),
        (listing("discord", "guild", "!gone"), true),
        (listing("discord", "guild", "!gone"), false),
    ];
    apply(&store, changes).await;
    assert_eq!(
        store.appservice_listings().await.expect("reads"),
        vec![
            listing("discord", "guild", "!c"),
            listing("irc", "libera", "!a"),
            listing("irc", "libera", "!b"),
            listing("irc", "oftc", "!a"),
        ]
    );
    assert!(store.published_rooms().await.expect("reads").is_empty(), "not the directory");
    let mut changes = ChangeSet::new();
    changes.appservice_directory = vec![
        (listing("irc", "libera", "!a"), false),
        (listing("irc", "libera", "!never"), false),
        (listing("irc", "oftc", "!a"), true),
    ];
    apply(&store, changes).await;
    assert_eq!(
        store.appservice_listings().await.expect("reads"),
        vec![
            listing("discord", "guild", "!c"),
            listing("irc", "libera", "!b"),
            listing("irc", "oftc", "!a"),
        ]
    );
}

/// Account-data writes take stream positions: what changed since a position is listed once
/// per item; deleted items are gone.
pub async fn account_data_changes(store: Store) {
    let start = head(&store).await;
    let mut changes = ChangeSet::new();
    changes.account_data = vec![
        (s("@a:x"), None, s("m.push_rules"), b"{}".to_vec()),
        (s("@a:x"), Some(s("!r")), s("m.tag"), b"{}".to_vec()),
        (s("@b:x"), None, s("m.push_rules"), b"{}".to_vec()),
    ];
    apply(&store, changes).await;
    let middle = head(&store).await;
    let mut changes = ChangeSet::new();
    changes.account_data = vec![(s("@a:x"), None, s("m.push_rules"), b"[]".to_vec())];
    apply(&store, changes).await;
    let end = head(&store).await;
    let change = |room: Option<&str>, kind: &str| AccountDataChange {
        room_id: room.map(str::to_owned),
        kind: s(kind),
    };
    let all = store.account_data_changes("@a:x", start, end).await.expect("reads");
    assert_eq!(all, vec![change(None, "m.push_rules"), change(Some("!r"), "m.tag")]);
    let later = store.account_data_changes("@a:x", middle, end).await.expect("reads");
    assert_eq!(later, vec![change(None, "m.push_rules")]);
    let early = store.account_data_changes("@a:x", start, middle).await.expect("reads");
    assert_eq!(
        early,
        vec![change(Some("!r"), "m.tag")],
        "rewritten items move to their new position"
    );
    assert!(store.account_data_changes("@c:x", start, end).await.expect("reads").is_empty());

    let mut changes = ChangeSet::new();
    changes.deleted_account_data = vec![(s("@a:x"), Some(s("!r")), s("m.tag"))];
    apply(&store, changes).await;
    assert_eq!(store.account_data("@a:x", Some("!r"), "m.tag").await.expect("reads"), None);
    assert_eq!(store.all_account_data("@a:x").await.expect("reads").len(), 1);
    let all = store.account_data_changes("@a:x", start, head(&store).await).await;
    assert_eq!(all.expect("reads"), vec![change(None, "m.push_rules")]);
}

/// Timeline events, receipts, to-device messages, device-list changes and account data take
/// their positions from one stream, in commit order, and the readable position covers them.
pub async fn one_stream_for_everything(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms.push(create_room("!r"));
    changes.events = vec![event("$1", "!r", &[], true)];
    let first = apply(&store, changes).await.stream[0];
    let mut changes = ChangeSet::new();
    changes.receipts = vec![receipt("!r", "@a:x", None, "$1", first.0)];
    changes.to_device = vec![to_device("D", "@b:x", "{}")];
    changes.device_list_changes = vec![s("@a:x")];
    changes.account_data = vec![(s("@a:x"), None, s("t"), b"{}".to_vec())];
    apply(&store, changes).await;
    let after_others = head(&store).await;
    assert!(after_others.0 >= first.0 + 4, "four more positions: {after_others:?}");
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$2", "!r", &[], true)];
    let second = apply(&store, changes).await.stream[0];
    assert!(second > after_others);
    assert_eq!(head(&store).await, second);
    let receipts = store.receipts("!r", first, after_others).await.expect("reads");
    let inbox = store.to_device("@a:x", "D", first, after_others, 10).await.expect("reads");
    assert_eq!((receipts.len(), inbox.len()), (1, 1));
    assert!(receipts[0].pos > first && inbox[0].pos > first);
    assert_ne!(receipts[0].pos, inbox[0].pos);
    let timeline = store.stream_range(StreamPos(0), second, 10).await.expect("reads");
    let ids: Vec<&str> = timeline.iter().map(|i| i.event_id.as_str()).collect();
    assert_eq!(ids, vec!["$1", "$2"], "the timeline holds events only");
}

/// Adds one item of every domain above to a change set (for the reopen test).
pub(super) fn fill(changes: &mut ChangeSet) {
    changes.device_keys.push((s("@a:x"), s("D"), b"{\"k\":1}".to_vec()));
    changes.one_time_keys.push(otk("D", "alg:1"));
    changes.fallback_keys.push(fallback("D", "alg:F"));
    changes.device_list_changes.push(s("@a:x"));
    changes.receipts.push(receipt("!r", "@a:x", Some("main"), "$m", 2));
    changes.transaction_ids.push(txn("D", "send", "t1", "$m"));
    changes.aliases.push(Alias { alias: s("#a:x"), room_id: s("!r"), creator: s("@a:x") });
    changes.directory.push((s("!r"), true));
    changes.appservice_directory.push((
        crate::AppserviceListing { appservice_id: s("as"), network_id: s("n"), room_id: s("!r") },
        true,
    ));
    changes.redactions.push((s("$c"), s("$m")));
    changes.profiles.push((s("@a:x"), Profile { displayname: Some(s("A")), avatar_url: None }));
    changes.forgotten.push((s("@a:x"), s("!old"), true));
    changes.media_usage.push((s("@a:x"), 77));
    changes.to_device.push(to_device("D", "@b:x", "{\"last\":true}"));
    changes.presence.push((s("@a:x"), presence(PresenceState::Unavailable, Some("away"), 1234)));
    changes.directory_users.push(crate::DirectoryUser {
        user_id: s("@a:x"),
        displayname: Some(s("A")),
        avatar_url: None,
    });
    changes.public_join_rules.push((s("!r"), true));
}

/// What [`fill`] wrote, as text (for the reopen test).
pub(super) async fn everything(store: &Store) -> Vec<String> {
    let upto = head(store).await;
    let zero = StreamPos(0);
    let fallback = store.fallback_keys("@a:x", "D").await.expect("reads");
    let receipts = store.receipts("!r", zero, upto).await.expect("reads");
    let inbox = store.to_device("@a:x", "D", zero, upto, 10).await.expect("reads");
    let mut out = vec![
        format!("{:?}", store.device_keys("@a:x").await.expect("reads")),
        format!("{:?}", store.one_time_key_counts("@a:x", "D").await.expect("reads")),
        format!("{:?}", store.one_time_key("@a:x", "D", "alg:1").await.expect("reads")),
        format!("{fallback:?}"),
        format!("{:?}", store.device_list_changes(zero, upto).await.expect("reads")),
        format!("{receipts:?}"),
        format!("{:?}", store.transaction_id("@a:x", "D", "send", "t1").await.expect("reads")),
        format!("{:?}", store.room_aliases("!r").await.expect("reads")),
        format!("{:?}", store.published_rooms().await.expect("reads")),
        format!("{:?}", store.appservice_listings().await.expect("reads")),
        format!("{:?}", store.redaction_of("$c").await.expect("reads")),
        format!("{:?}", store.profile("@a:x").await.expect("reads")),
        format!("{:?}", store.forgotten("!old", "@a:x").await.expect("reads")),
        format!("{:?}", store.media_usage("@a:x").await.expect("reads")),
        format!("{inbox:?}"),
        format!("{:?}", store.to_device_range(zero, upto, 10).await.expect("reads")),
        format!("{:?}", store.presence("@a:x").await.expect("reads")),
        format!("{:?}", store.search_user_directory("", 10).await.expect("reads")),
        format!("{:?}", store.public_join_rooms().await.expect("reads")),
    ];
    out.retain(|item| !item.is_empty());
    out
}

fn presence(state: PresenceState, status_msg: Option<&str>, last_active_ts: u64) -> Presence {
    Presence {
        state,
        status_msg: status_msg.map(str::to_owned),
        last_active_ts,
        currently_active: state == PresenceState::Online,
    }
}

/// Presence: set for users of this server and of others (no user record needed), replaced
/// whole (a status message set to none is gone), the last of a change set winning; read one
/// by one and many at once (each once, sorted, users without presence left out).
pub async fn presence_round_trip(store: Store) {
    assert_eq!(store.presence("@a:x").await.expect("reads"), None);
    assert!(store.presences(&[]).await.expect("reads").is_empty());
    let mut changes = ChangeSet::new();
    let away = presence(PresenceState::Unavailable, Some("lunch \u{1f354}"), 1_700_000_000_000);
    let online = presence(PresenceState::Online, None, u64::from(u32::MAX) * 1000);
    changes.presence = vec![
        (s("@a:x"), presence(PresenceState::Online, Some("first"), 1)),
        (s("@a:x"), away.clone()),
        (s("@remote:elsewhere.example"), online.clone()),
    ];
    apply(&store, changes).await;
    assert_eq!(store.presence("@a:x").await.expect("reads"), Some(away.clone()));
    assert_eq!(
        store.presence("@remote:elsewhere.example").await.expect("reads"),
        Some(online.clone())
    );
    assert_eq!(store.presence("@nobody:x").await.expect("reads"), None);
    let many = store
        .presences(&["@remote:elsewhere.example", "@nobody:x", "@a:x", "@a:x"])
        .await
        .expect("reads");
    assert_eq!(
        many,
        vec![(s("@a:x"), away.clone()), (s("@remote:elsewhere.example"), online.clone())]
    );
    let present = store.present_users().await.expect("reads");
    assert_eq!(present, vec![(s("@a:x"), away), (s("@remote:elsewhere.example"), online.clone())]);

    let mut changes = ChangeSet::new();
    let offline = presence(PresenceState::Offline, None, 5);
    changes.presence = vec![(s("@a:x"), offline.clone())];
    apply(&store, changes).await;
    assert_eq!(store.presence("@a:x").await.expect("reads"), Some(offline));
    let present = store.present_users().await.expect("reads");
    assert_eq!(
        present,
        vec![(s("@remote:elsewhere.example"), online)],
        "offline users are left out"
    );
}

/// The user directory: entries replaced whole and deleted, searched case-insensitively in
/// user ids and display names (non-ASCII too), sorted by user id and cut at the limit; the
/// rooms whose join rule is public, added and taken out.
pub async fn user_directory_round_trip(store: Store) {
    use crate::DirectoryUser;
    let user = |id: &str, name: Option<&str>| DirectoryUser {
        user_id: s(id),
        displayname: name.map(s),
        avatar_url: Some(s("mxc://x/a")),
    };
    assert!(store.search_user_directory("", 10).await.expect("reads").is_empty());
    assert!(store.public_join_rooms().await.expect("reads").is_empty());
    let mut changes = ChangeSet::new();
    changes.directory_users = vec![
        user("@zed:x", Some("first")),
        user("@zed:x", Some("Zed Ärger")),
        user("@bob:other.example", None),
        user("@alice:x", Some("Alice")),
        user("@gone:x", Some("Gone")),
    ];
    changes.deleted_directory_users = vec![s("@gone:x")];
    changes.public_join_rules = vec![(s("!b:x"), true), (s("!a:x"), true), (s("!c:x"), true)];
    apply(&store, changes).await;
    let ids = |users: Vec<DirectoryUser>| users.into_iter().map(|u| u.user_id).collect::<Vec<_>>();
    let all = store.search_user_directory("", 10).await.expect("reads");
    assert_eq!(all[0], user("@alice:x", Some("Alice")));
    assert_eq!(ids(all), vec![s("@alice:x"), s("@bob:other.example"), s("@zed:x")]);
    assert_eq!(ids(store.search_user_directory("", 2).await.expect("reads")).len(), 2);
    let found = store.search_user_directory("ärg", 10).await.expect("reads");
    assert_eq!(found, vec![user("@zed:x", Some("Zed Ärger"))], "names, lowercased");
    assert_eq!(
        ids(store.search_user_directory("other.ex", 10).await.expect("reads")),
        vec![s("@bob:other.example")]
    );
    assert_eq!(
        ids(store.search_user_directory("alice", 10).await.expect("reads")),
        vec![s("@alice:x")]
    );
    assert!(store.search_user_directory("first", 10).await.expect("reads").is_empty());
    assert!(store.search_user_directory("gone", 10).await.expect("reads").is_empty());
    assert_eq!(
        store.public_join_rooms().await.expect("reads"),
        vec![s("!a:x"), s("!b:x"), s("!c:x")]
    );

    let mut changes = ChangeSet::new();
    changes.directory_users = vec![user("@alice:x", None)];
    changes.public_join_rules = vec![(s("!b:x"), false), (s("!nope:x"), false)];
    apply(&store, changes).await;
    assert!(store.search_user_directory("alice", 10).await.expect("reads").len() == 1);
    assert_eq!(
        store.search_user_directory("@alice", 10).await.expect("reads"),
        vec![user("@alice:x", None)]
    );
    assert_eq!(store.public_join_rooms().await.expect("reads"), vec![s("!a:x"), s("!c:x")]);
}
