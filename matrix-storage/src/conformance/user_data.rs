//! The conformance tests of cross-signing keys and signatures, key backups and pushers.

use super::{Store, apply};
use crate::{
    Applied, BackupScope, BackupSession, ChangeSet, CrossSigningKeyKind, CrossSigningKeys, Device,
    ErrorKind, KeySignature, NewBackupSession, NewBackupVersion, Pusher, StreamPos, TokenOwner,
    User,
};

fn s(text: &str) -> String {
    text.to_owned()
}

fn user(id: &str) -> User {
    User { user_id: s(id), password_hash: None, admin: false, deactivated: false }
}

fn key(kind: CrossSigningKeyKind, public: &str) -> Vec<u8> {
    format!(r#"{{"usage":["{}"],"keys":{{"ed25519:{public}":"{public}"}}}}"#, kind.as_str())
        .into_bytes()
}

fn signature(target: (&str, &str), signer: (&str, &str), value: &str) -> KeySignature {
    KeySignature {
        target_user: s(target.0),
        target_key: s(target.1),
        signer_user: s(signer.0),
        signer_key_id: s(signer.1),
        signature: s(value),
    }
}

fn version(user: &str, auth: &str) -> NewBackupVersion {
    NewBackupVersion {
        user_id: s(user),
        algorithm: s("m.megolm_backup.v1.curve25519-aes-sha2"),
        auth_data: format!(r#"{{"public_key":"{auth}"}}"#).into_bytes(),
    }
}

fn session(user: &str, version: &str, room: &str, id: &str, index: u32) -> NewBackupSession {
    NewBackupSession {
        user_id: s(user),
        version: s(version),
        room_id: s(room),
        session_id: s(id),
        data: format!(r#"{{"first_message_index":{index},"session_data":{{}}}}"#).into_bytes(),
    }
}

fn stored(room: &str, id: &str, index: u32) -> BackupSession {
    let new = session("", "", room, id, index);
    BackupSession { room_id: new.room_id, session_id: new.session_id, data: new.data }
}

fn pusher(user: &str, app: &str, pushkey: &str, device: &str, lang: &str) -> Pusher {
    Pusher {
        user_id: s(user),
        app_id: s(app),
        pushkey: s(pushkey),
        device_id: s(device),
        data: format!(r#"{{"kind":"http","lang":"{lang}","data":{{"url":"https://p/"}}}}"#)
            .into_bytes(),
    }
}

/// A change set that fails: it creates a user that exists (made by [`conflicting_user`]).
fn doomed(mut changes: ChangeSet) -> ChangeSet {
    changes.new_users.push(user("@exists:x"));
    changes
}

async fn conflicting_user(store: &Store) {
    let mut changes = ChangeSet::new();
    changes.new_users.push(user("@exists:x"));
    apply(store, changes).await;
}

async fn head(store: &Store) -> StreamPos {
    store.stream_position().await.expect("reads")
}

/// Cross-signing keys: set per kind, replaced whole, read per user; an upload and its
/// device-list change commit in one change set, or not at all.
pub async fn cross_signing_keys(store: Store) {
    conflicting_user(&store).await;
    assert_eq!(store.cross_signing_keys("@a:x").await.expect("reads"), CrossSigningKeys::default());
    let before = head(&store).await;
    let mut upload = ChangeSet::new();
    for (kind, public) in CrossSigningKeyKind::ALL.into_iter().zip(["M1", "S1", "U1"]) {
        upload.cross_signing_keys.push((s("@a:x"), kind, key(kind, public)));
    }
    upload.device_list_changes.push(s("@a:x"));

    // Refused whole: neither the keys nor the device-list change.
    let refused = store.apply(doomed(upload.clone())).await.expect_err("the user exists");
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    assert_eq!(store.cross_signing_keys("@a:x").await.expect("reads"), CrossSigningKeys::default());
    // (The head may pass a failed change set's positions, as gaps: nothing in them is read.)
    let refused_head = head(&store).await;
    let changes = store.device_list_changes(before, refused_head).await.expect("reads");
    assert!(changes.is_empty(), "a refused change set's device-list change: {changes:?}");

    apply(&store, upload).await;
    let after = head(&store).await;
    assert!(after > before);
    assert_eq!(store.device_list_changes(before, after).await.expect("reads"), vec![s("@a:x")]);
    let keys = store.cross_signing_keys("@a:x").await.expect("reads");
    let expected = CrossSigningKeys {
        master: Some(key(CrossSigningKeyKind::Master, "M1")),
        self_signing: Some(key(CrossSigningKeyKind::SelfSigning, "S1")),
        user_signing: Some(key(CrossSigningKeyKind::UserSigning, "U1")),
    };
    assert_eq!(keys, expected);
    assert_eq!(keys.get(CrossSigningKeyKind::SelfSigning), expected.self_signing.as_deref());
    assert_eq!(
        store.cross_signing_keys("@b:x").await.expect("reads"),
        CrossSigningKeys::default(),
        "another user's keys are apart"
    );

    // A new master key replaces the old one whole; the others stay. Of two writes of one key
    // in a change set, the later wins.
    let mut changes = ChangeSet::new();
    changes.cross_signing_keys = vec![
        (s("@a:x"), CrossSigningKeyKind::Master, key(CrossSigningKeyKind::Master, "M2")),
        (s("@a:x"), CrossSigningKeyKind::Master, key(CrossSigningKeyKind::Master, "M3")),
        (s("@b:x"), CrossSigningKeyKind::SelfSigning, b"{}".to_vec()),
    ];
    apply(&store, changes).await;
    let keys = store.cross_signing_keys("@a:x").await.expect("reads");
    assert_eq!(keys.master, Some(key(CrossSigningKeyKind::Master, "M3")));
    assert_eq!(keys.self_signing, expected.self_signing);
    assert_eq!(keys.user_signing, expected.user_signing);
    let other = store.cross_signing_keys("@b:x").await.expect("reads");
    assert_eq!((other.master, other.self_signing), (None, Some(b"{}".to_vec())));
    assert_eq!(
        CrossSigningKeyKind::from_usage("self_signing"),
        Some(CrossSigningKeyKind::SelfSigning)
    );
    assert_eq!(CrossSigningKeyKind::from_usage("other"), None);
}

/// Signatures on keys: stored per target and signer key, listed sorted per target user,
/// replaced by a newer one; deleting a device deletes the signatures on it, not those it
/// made nor those on other keys.
pub async fn key_signatures(store: Store) {
    conflicting_user(&store).await;
    let mut changes = ChangeSet::new();
    changes.devices = ["DEV", "OTHER"]
        .map(|d| Device { user_id: s("@a:x"), device_id: s(d), display_name: None })
        .to_vec();
    changes.key_signatures = vec![
        signature(("@a:x", "DEV"), ("@a:x", "ed25519:S1"), "sig-dev"),
        signature(("@a:x", "M1"), ("@b:x", "ed25519:BU"), "sig-b-on-master"),
        signature(("@a:x", "M1"), ("@a:x", "ed25519:DEV"), "sig-dev-on-master"),
        signature(("@a:x", "OTHER"), ("@a:x", "ed25519:S1"), "sig-other"),
        signature(("@b:x", "BM"), ("@a:x", "ed25519:U1"), "sig-a-on-b"),
    ];
    apply(&store, changes).await;
    let on_a = store.key_signatures("@a:x").await.expect("reads");
    assert_eq!(
        on_a,
        vec![
            signature(("@a:x", "DEV"), ("@a:x", "ed25519:S1"), "sig-dev"),
            signature(("@a:x", "M1"), ("@a:x", "ed25519:DEV"), "sig-dev-on-master"),
            signature(("@a:x", "M1"), ("@b:x", "ed25519:BU"), "sig-b-on-master"),
            signature(("@a:x", "OTHER"), ("@a:x", "ed25519:S1"), "sig-other"),
        ],
        "sorted by target key, signer, signer key"
    );
    assert_eq!(
        store.key_signatures("@b:x").await.expect("reads"),
        vec![signature(("@b:x", "BM"), ("@a:x", "ed25519:U1"), "sig-a-on-b")]
    );
    assert!(store.key_signatures("@c:x").await.expect("reads").is_empty());

    // Replaced by a new signature of the same signer key; a failed change set adds nothing.
    let mut changes = ChangeSet::new();
    changes.key_signatures = vec![signature(("@a:x", "DEV"), ("@a:x", "ed25519:S1"), "sig-dev-2")];
    apply(&store, changes).await;
    let mut failing = ChangeSet::new();
    failing.key_signatures = vec![signature(("@a:x", "DEV"), ("@c:x", "ed25519:C"), "never")];
    store.apply(doomed(failing)).await.expect_err("the user exists");
    let on_a = store.key_signatures("@a:x").await.expect("reads");
    assert_eq!(on_a.len(), 4);
    assert_eq!(on_a[0].signature, "sig-dev-2");

    // Deleting DEV deletes the signature on it; the one DEV made on the master key stays.
    let mut changes = ChangeSet::new();
    changes.deleted_devices = vec![(s("@a:x"), s("DEV"))];
    apply(&store, changes).await;
    let targets: Vec<(String, String)> = store
        .key_signatures("@a:x")
        .await
        .expect("reads")
        .into_iter()
        .map(|sig| (sig.target_key, sig.signer_key_id))
        .collect();
    assert_eq!(
        targets,
        vec![
            (s("M1"), s("ed25519:DEV")),
            (s("M1"), s("ed25519:BU")),
            (s("OTHER"), s("ed25519:S1"))
        ]
    );
    assert_eq!(store.key_signatures("@b:x").await.expect("reads").len(), 1);
}

/// Backup versions: numbered `1`, `2`... per user by the store, never twice (also after a
/// deletion); the latest is the highest not deleted; `auth_data` replaced; a deleted version
/// reads as deleted, and deleting it again does nothing.
pub async fn backup_versions(store: Store) {
    conflicting_user(&store).await;
    assert_eq!(store.latest_backup_version("@a:x").await.expect("reads"), None);
    let mut changes = ChangeSet::new();
    changes.new_backup_versions =
        vec![version("@a:x", "first"), version("@b:x", "b"), version("@a:x", "second")];
    let applied = apply(&store, changes).await;
    assert_eq!(applied.backup_versions, vec![s("1"), s("1"), s("2")]);

    let second = store.backup_version("@a:x", "2").await.expect("reads").expect("stored");
    assert_eq!(second.user_id, "@a:x");
    assert_eq!(second.version, "2");
    assert_eq!(second.algorithm, "m.megolm_backup.v1.curve25519-aes-sha2");
    assert_eq!(second.auth_data, version("@a:x", "second").auth_data);
    assert_eq!((second.count, second.deleted), (0, false));
    assert_eq!(store.latest_backup_version("@a:x").await.expect("reads"), Some(second.clone()));
    let first = store.backup_version("@a:x", "1").await.expect("reads").expect("stored");
    assert_eq!(first.auth_data, version("@a:x", "first").auth_data);
    for name in ["3", "01", "", "x", "-1", "0", "99999999999999999999999"] {
        assert_eq!(store.backup_version("@a:x", name).await.expect("reads"), None, "{name:?}");
    }

    // auth_data replaced; a failed change set creates no version and takes no number.
    let mut changes = ChangeSet::new();
    changes.updated_backup_versions = vec![(s("@a:x"), s("1"), b"{\"new\":1}".to_vec())];
    apply(&store, changes).await;
    let mut failing = ChangeSet::new();
    failing.new_backup_versions = vec![version("@a:x", "lost")];
    store.apply(doomed(failing)).await.expect_err("the user exists");
    let first = store.backup_version("@a:x", "1").await.expect("reads").expect("stored");
    assert_eq!(first.auth_data, b"{\"new\":1}".to_vec());
    assert_eq!(store.backup_version("@a:x", "2").await.expect("reads"), Some(second));
    assert_eq!(store.backup_version("@a:x", "3").await.expect("reads"), None);

    // Deleting 2: it reads as deleted, 1 is the latest, and the next version is 3.
    let mut changes = ChangeSet::new();
    changes.deleted_backup_versions = vec![(s("@a:x"), s("2"))];
    apply(&store, changes).await;
    let deleted = store.backup_version("@a:x", "2").await.expect("reads").expect("kept");
    assert!(deleted.deleted);
    let latest = store.latest_backup_version("@a:x").await.expect("reads").expect("one left");
    assert_eq!(latest.version, "1");
    let mut changes = ChangeSet::new();
    changes.new_backup_versions = vec![version("@a:x", "third")];
    changes.deleted_backup_versions = vec![(s("@a:x"), s("2")), (s("@a:x"), s("7"))];
    let applied = apply(&store, changes).await;
    assert_eq!(applied.backup_versions, vec![s("3")], "a deleted version's number is not reused");
    assert_eq!(store.latest_backup_version("@a:x").await.expect("reads").expect("3").version, "3");
    assert_eq!(store.backup_version("@a:x", "7").await.expect("reads"), None);

    // Writing to a deleted, unknown or misspelt version is refused whole.
    for name in ["2", "9", "03"] {
        let mut changes = ChangeSet::new();
        changes.backup_sessions = vec![session("@a:x", "3", "!r", "s", 0)];
        changes.updated_backup_versions = vec![(s("@a:x"), s(name), b"{}".to_vec())];
        let refused = store.apply(changes).await.expect_err("no such version");
        assert_eq!(refused.kind(), ErrorKind::MissingReference, "{name}");
    }
    assert!(store.backup_sessions("@a:x", "3", None).await.expect("reads").is_empty());
    let mut changes = ChangeSet::new();
    changes.backup_sessions = vec![session("@b:x", "2", "!r", "s", 0)];
    assert_eq!(
        store.apply(changes).await.expect_err("b has 1").kind(),
        ErrorKind::MissingReference
    );
    let mut changes = ChangeSet::new();
    changes.deleted_backup_sessions = vec![(s("@a:x"), s("2"), BackupScope::All)];
    assert_eq!(
        store.apply(changes).await.expect_err("deleted").kind(),
        ErrorKind::MissingReference
    );
}

/// Backed-up sessions: written, replaced, read all, per room and one, sorted; counted; the
/// etag changes with each change set that writes or deletes sessions; deleted per session,
/// room and version, and with the version.
pub async fn backup_sessions(store: Store) {
    conflicting_user(&store).await;
    let mut changes = ChangeSet::new();
    changes.new_backup_versions = vec![version("@a:x", "one"), version("@a:x", "two")];
    apply(&store, changes).await;
    let read = |version: &'static str| {
        let store = store.clone();
        async move { store.backup_version("@a:x", version).await.expect("reads").expect("stored") }
    };
    let etag0 = read("1").await.etag;

    let mut changes = ChangeSet::new();
    changes.backup_sessions = vec![
        session("@a:x", "1", "!r2", "sB", 1),
        session("@a:x", "1", "!r1", "sZ", 2),
        session("@a:x", "1", "!r1", "sA", 3),
        session("@a:x", "1", "!r1", "sA", 4),
        session("@a:x", "2", "!r1", "sA", 9),
    ];
    apply(&store, changes).await;
    let all = store.backup_sessions("@a:x", "1", None).await.expect("reads");
    assert_eq!(
        all,
        vec![stored("!r1", "sA", 4), stored("!r1", "sZ", 2), stored("!r2", "sB", 1)],
        "sorted by room and session; of two writes the later wins"
    );
    let v1 = read("1").await;
    assert_eq!(v1.count, 3);
    assert_ne!(v1.etag, etag0, "the etag changed");
    assert_eq!(read("2").await.count, 1);
    assert_eq!(
        store.backup_sessions("@a:x", "1", Some("!r1")).await.expect("reads"),
        vec![stored("!r1", "sA", 4), stored("!r1", "sZ", 2)]
    );
    assert!(store.backup_sessions("@a:x", "1", Some("!none")).await.expect("reads").is_empty());
    assert_eq!(
        store.backup_session("@a:x", "2", "!r1", "sA").await.expect("reads"),
        Some(session("", "", "", "", 9).data)
    );
    assert_eq!(store.backup_session("@a:x", "1", "!r1", "nope").await.expect("reads"), None);
    assert_eq!(store.backup_session("@b:x", "1", "!r1", "sA").await.expect("reads"), None);
    assert!(store.backup_sessions("@a:x", "01", None).await.expect("reads").is_empty());

    // Replacing a session keeps the count and changes the etag; a failed change set changes
    // neither.
    let mut changes = ChangeSet::new();
    changes.backup_sessions = vec![session("@a:x", "1", "!r2", "sB", 0)];
    apply(&store, changes).await;
    let replaced = read("1").await;
    assert_eq!(replaced.count, 3);
    assert_ne!(replaced.etag, v1.etag);
    let mut failing = ChangeSet::new();
    failing.backup_sessions = vec![session("@a:x", "1", "!r3", "new", 0)];
    failing.deleted_backup_sessions = vec![(s("@a:x"), s("1"), BackupScope::All)];
    store.apply(doomed(failing)).await.expect_err("the user exists");
    assert_eq!(read("1").await, replaced);
    assert_eq!(store.backup_sessions("@a:x", "1", None).await.expect("reads").len(), 3);

    // Deleted: one session, then a room (with a write after the deletion in one change set).
    let mut changes = ChangeSet::new();
    changes.deleted_backup_sessions =
        vec![(s("@a:x"), s("1"), BackupScope::Session(s("!r1"), s("sZ")))];
    apply(&store, changes).await;
    assert_eq!(
        store.backup_sessions("@a:x", "1", None).await.expect("reads"),
        vec![stored("!r1", "sA", 4), stored("!r2", "sB", 0)]
    );
    assert_eq!(read("1").await.count, 2);
    let mut changes = ChangeSet::new();
    changes.deleted_backup_sessions = vec![(s("@a:x"), s("1"), BackupScope::Room(s("!r1")))];
    changes.backup_sessions = vec![session("@a:x", "1", "!r1", "sNew", 5)];
    apply(&store, changes).await;
    assert_eq!(
        store.backup_sessions("@a:x", "1", None).await.expect("reads"),
        vec![stored("!r1", "sNew", 5), stored("!r2", "sB", 0)]
    );
    assert_eq!(read("1").await.count, 2);
    assert_eq!(read("2").await.count, 1, "other versions are untouched");

    // All of a version's sessions, then the other version with its sessions.
    let before = read("1").await.etag;
    let mut changes = ChangeSet::new();
    changes.deleted_backup_sessions = vec![(s("@a:x"), s("1"), BackupScope::All)];
    apply(&store, changes).await;
    let emptied = read("1").await;
    assert_eq!(emptied.count, 0);
    assert_ne!(emptied.etag, before);
    assert!(store.backup_sessions("@a:x", "1", None).await.expect("reads").is_empty());
    let mut changes = ChangeSet::new();
    changes.backup_sessions = vec![session("@a:x", "2", "!r9", "s9", 1)];
    changes.deleted_backup_versions = vec![(s("@a:x"), s("2"))];
    apply(&store, changes).await;
    let gone = read("2").await;
    assert!(gone.deleted);
    assert_eq!(gone.count, 0);
    assert!(store.backup_sessions("@a:x", "2", None).await.expect("reads").is_empty());
    assert_eq!(store.backup_session("@a:x", "2", "!r1", "sA").await.expect("reads"), None);
}

/// Pushers: set per user and `(app_id, pushkey)`, replaced, listed per user and all (sorted),
/// deleted; an exclusive pusher deletes the other users' pushers of its key; deleting the
/// device that created a pusher does not delete it.
pub async fn pushers(store: Store) {
    conflicting_user(&store).await;
    let mut changes = ChangeSet::new();
    changes.devices = vec![Device { user_id: s("@a:x"), device_id: s("DA"), display_name: None }];
    changes.new_tokens = vec![(s("tok"), TokenOwner { user_id: s("@a:x"), device_id: s("DA") })];
    changes.pushers = vec![
        pusher("@b:x", "app", "shared", "DB", "en"),
        pusher("@a:x", "app", "key2", "DA", "en"),
        pusher("@a:x", "app", "key1", "DA", "en"),
        pusher("@a:x", "app", "shared", "DA", "en"),
        pusher("@a:x", "other.app", "key1", "DA", "en"),
        pusher("@c:x", "app", "shared", "DC", "en"),
    ];
    apply(&store, changes).await;
    let mine = store.pushers("@a:x").await.expect("reads");
    let keys: Vec<(&str, &str)> =
        mine.iter().map(|p| (p.app_id.as_str(), p.pushkey.as_str())).collect();
    assert_eq!(
        keys,
        vec![("app", "key1"), ("app", "key2"), ("app", "shared"), ("other.app", "key1")]
    );
    assert_eq!(mine[0], pusher("@a:x", "app", "key1", "DA", "en"));
    assert!(store.pushers("@z:x").await.expect("reads").is_empty());
    let all = store.all_pushers().await.expect("reads");
    let owners: Vec<(&str, &str)> =
        all.iter().map(|p| (p.user_id.as_str(), p.pushkey.as_str())).collect();
    assert_eq!(
        owners,
        vec![
            ("@a:x", "key1"),
            ("@a:x", "key2"),
            ("@a:x", "shared"),
            ("@a:x", "key1"),
            ("@b:x", "shared"),
            ("@c:x", "shared"),
        ]
    );

    // Replaced, deleted; a failed change set changes nothing.
    let mut changes = ChangeSet::new();
    changes.pushers = vec![pusher("@a:x", "app", "key1", "DA2", "fr")];
    changes.deleted_pushers = vec![(s("@a:x"), s("app"), s("key2")), (s("@a:x"), s("no"), s("ne"))];
    apply(&store, changes).await;
    let mut failing = ChangeSet::new();
    failing.deleted_pushers = vec![(s("@a:x"), s("app"), s("key1"))];
    failing.exclusive_pushers = vec![(s("@a:x"), s("app"), s("shared"))];
    failing.pushers = vec![pusher("@d:x", "app", "x", "DD", "en")];
    store.apply(doomed(failing)).await.expect_err("the user exists");
    let mine = store.pushers("@a:x").await.expect("reads");
    assert_eq!(mine.len(), 3);
    assert_eq!(mine[0], pusher("@a:x", "app", "key1", "DA2", "fr"));
    assert_eq!(store.all_pushers().await.expect("reads").len(), 5);

    // `append: false`: setting A's pusher deletes B's and C's of the same key, and no other.
    let mut changes = ChangeSet::new();
    changes.exclusive_pushers = vec![(s("@a:x"), s("app"), s("shared"))];
    changes.pushers = vec![pusher("@a:x", "app", "shared", "DA", "de")];
    apply(&store, changes).await;
    assert!(store.pushers("@b:x").await.expect("reads").is_empty());
    assert!(store.pushers("@c:x").await.expect("reads").is_empty());
    let mine = store.pushers("@a:x").await.expect("reads");
    assert_eq!(mine.len(), 3);
    assert_eq!(mine[1], pusher("@a:x", "app", "shared", "DA", "de"));

    // Deleting the device (and its token) keeps its pushers.
    let mut changes = ChangeSet::new();
    changes.deleted_devices = vec![(s("@a:x"), s("DA"))];
    changes.deleted_tokens = vec![s("tok")];
    apply(&store, changes).await;
    assert_eq!(store.pushers("@a:x").await.expect("reads").len(), 3);
}

/// Adds one item of every domain above to a change set (for the reopen test).
pub(super) fn fill(changes: &mut ChangeSet) {
    changes.cross_signing_keys.push((
        s("@a:x"),
        CrossSigningKeyKind::Master,
        key(CrossSigningKeyKind::Master, "M"),
    ));
    changes.key_signatures.push(signature(("@a:x", "D"), ("@a:x", "ed25519:S"), "sig"));
    changes.new_backup_versions.push(version("@a:x", "reopen"));
    changes.pushers.push(pusher("@a:x", "app", "key", "D", "en"));
}

/// A change set of sessions in the version [`fill`] made (for the reopen test).
pub(super) fn fill_sessions(applied: &Applied) -> ChangeSet {
    let mut changes = ChangeSet::new();
    for version in &applied.backup_versions {
        changes.backup_sessions.push(session("@a:x", version, "!r", "s1", 1));
        changes.backup_sessions.push(session("@a:x", version, "!r", "s2", 2));
    }
    changes
}

/// What [`fill`] and [`fill_sessions`] wrote, as text (for the reopen test).
pub(super) async fn everything(store: &Store) -> Vec<String> {
    let latest = store.latest_backup_version("@a:x").await.expect("reads");
    let version = latest.as_ref().map(|v| v.version.clone()).unwrap_or_default();
    vec![
        format!("{:?}", store.cross_signing_keys("@a:x").await.expect("reads")),
        format!("{:?}", store.key_signatures("@a:x").await.expect("reads")),
        format!("{latest:?}"),
        format!("{:?}", store.backup_sessions("@a:x", &version, None).await.expect("reads")),
        format!("{:?}", store.all_pushers().await.expect("reads")),
    ]
}
