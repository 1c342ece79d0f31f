//! Model-based property test: random sequences of writes, key claims (and, for the embedded
//! stores on sled and fjall, reopens)
//! give the same observable store as the in-memory backend, the oracle.

use std::sync::Arc;

use matrix_storage::memory::MemoryStore;
use matrix_storage::sled::SledStore;
use matrix_storage::{
    Alias, AuthChainEntry, BackupScope, ChangeSet, CrossSigningKeyKind, DehydratedDevice, Device,
    EventStatus, FallbackKey, KeySignature, NewBackupSession, NewBackupVersion, NewEvent,
    NewSnapshot, NewToDevice, OneTimeKey, Pusher, Receipt, ReceiptKey, RoomChanges, SnapshotId,
    Storage, StreamPos, TokenOwner, TransactionId, User,
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
    DeleteAccountData(u8, Option<u8>, u8),
    /// Device keys, a one-time key and a fallback key of a device.
    Keys(u8, u8, u8),
    ToDevice(u8, u8, u8),
    Delivered(u8, u8, u8),
    Receipt(u8, Option<u8>, u8),
    DeleteReceipt(u8, Option<u8>),
    DeviceList(u8),
    TxnId(u8, u8, u8),
    Alias(u8, u8),
    DeleteAlias(u8),
    /// A cross-signing key `(user, kind, value)`.
    CrossSigning(u8, u8, u8),
    /// A signature on `(user, device)` by a user's key.
    Signature(u8, u8, u8, u8),
    NewBackup(u8),
    /// `(user, version, value)`.
    UpdateBackup(u8, u8, u8),
    /// `(user, version, room, session, value)`.
    BackupSession(u8, u8, u8, u8, u8),
    /// `(user, version, scope)`: all, a room or a session.
    DeleteBackupSessions(u8, u8, u8),
    DeleteBackup(u8, u8),
    /// `(user, app, pushkey, value)`.
    Pusher(u8, u8, u8, u8),
    DeletePusher(u8, u8, u8),
    ExclusivePusher(u8, u8, u8),
    /// A dehydrated-device record `(user, device, value)`.
    Dehydrated(u8, u8, u8),
    /// An auth-chain index entry `(room, number, chain, links)`.
    AuthChain(u8, u8, u8, Vec<(u8, u8)>),
    /// Several of the above in one change set.
    Many(Vec<Op>),
    Claim(u8, u8),
    /// Purges some events of the room (`$e{n}`).
    PurgeEvents(Vec<u16>),
    /// Purges the room, then makes it again (empty).
    PurgeRoom,
    Reopen,
}

/// One change set's worth of writes.
fn write_op() -> impl Strategy<Value = Op> {
    let small = 0u8..4;
    prop_oneof![
        (small.clone(), any::<bool>()).prop_map(|(u, a)| Op::NewUser(u, a)),
        (small.clone(), any::<bool>()).prop_map(|(u, a)| Op::UpdateUser(u, a)),
        (small.clone(), small.clone()).prop_map(|(u, d)| Op::Device(u, d)),
        (small.clone(), small.clone()).prop_map(|(u, d)| Op::DeleteDevice(u, d)),
        (small.clone(), small.clone(), small.clone()).prop_map(|(t, u, d)| Op::Token(t, u, d)),
        (small.clone(), prop::option::of(small.clone()), small.clone(), any::<u8>())
            .prop_map(|(u, r, k, v)| Op::AccountData(u, r, k, v)),
        (small.clone(), prop::option::of(small.clone()), small.clone())
            .prop_map(|(u, r, k)| Op::DeleteAccountData(u, r, k)),
        (0u16..50, any::<bool>()).prop_map(|(e, t)| Op::Event(e, t)),
        (small.clone(), small.clone(), 0u8..6).prop_map(|(u, d, k)| Op::Keys(u, d, k)),
        (small.clone(), small.clone(), small.clone()).prop_map(|(u, d, s)| Op::ToDevice(u, d, s)),
        (small.clone(), small.clone(), 0u8..40).prop_map(|(u, d, n)| Op::Delivered(u, d, n)),
        (small.clone(), prop::option::of(0u8..2), 0u8..40)
            .prop_map(|(u, t, e)| Op::Receipt(u, t, e)),
        (small.clone(), prop::option::of(0u8..2)).prop_map(|(u, t)| Op::DeleteReceipt(u, t)),
        small.clone().prop_map(Op::DeviceList),
        (small.clone(), small.clone(), 0u8..3).prop_map(|(u, d, t)| Op::TxnId(u, d, t)),
        (small.clone(), small.clone()).prop_map(|(a, r)| Op::Alias(a, r)),
        small.clone().prop_map(Op::DeleteAlias),
        (small.clone(), small.clone(), any::<u8>()).prop_map(|(u, d, v)| Op::Dehydrated(u, d, v)),
        (0u8..2, 0u8..6, any::<u8>(), prop::collection::vec(any::<(u8, u8)>(), 0..3))
            .prop_map(|(r, i, c, l)| Op::AuthChain(r, i, c, l)),
        user_data_op(),
    ]
}

/// One write of cross-signing keys, signatures, key backups or pushers: two users, and the
/// versions `0` (never one), `1` and `2`, so that writes meet the versions made before.
fn user_data_op() -> impl Strategy<Value = Op> {
    let users = 0u8..2;
    let versions = 0u8..3;
    prop_oneof![
        (users.clone(), 0u8..3, any::<u8>()).prop_map(|(u, k, v)| Op::CrossSigning(u, k, v)),
        (users.clone(), 0u8..2, users.clone(), any::<u8>())
            .prop_map(|(u, d, s, v)| Op::Signature(u, d, s, v)),
        users.clone().prop_map(Op::NewBackup),
        users.clone().prop_map(Op::NewBackup),
        (users.clone(), versions.clone(), any::<u8>())
            .prop_map(|(u, n, v)| Op::UpdateBackup(u, n, v)),
        (users.clone(), versions.clone(), 0u8..3, 0u8..2, any::<u8>())
            .prop_map(|(u, n, r, s, v)| Op::BackupSession(u, n, r, s, v)),
        (users.clone(), versions.clone(), any::<u8>())
            .prop_map(|(u, n, v)| Op::BackupSession(u, n, 1, 0, v)),
        (users.clone(), versions.clone(), 0u8..5)
            .prop_map(|(u, n, s)| Op::DeleteBackupSessions(u, n, s)),
        (users.clone(), versions.clone()).prop_map(|(u, n)| Op::DeleteBackup(u, n)),
        (0u8..3, 0u8..2, 0u8..2, any::<u8>()).prop_map(|(u, a, k, v)| Op::Pusher(u, a, k, v)),
        (0u8..3, 0u8..2, 0u8..2).prop_map(|(u, a, k)| Op::DeletePusher(u, a, k)),
        (0u8..3, 0u8..2, 0u8..2).prop_map(|(u, a, k)| Op::ExclusivePusher(u, a, k)),
    ]
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
        write_op(),
        prop::collection::vec(write_op(), 2..5).prop_map(Op::Many),
        // Three more chances for the domains of `user_data_op`, whose writes depend on one
        // another (sessions need a version made before).
        user_data_op(),
        user_data_op(),
        user_data_op(),
        (small.clone(), small.clone()).prop_map(|(u, d)| Op::Claim(u, d)),
        prop::collection::vec(0u16..50, 0..6).prop_map(Op::PurgeEvents),
        Just(Op::PurgeRoom),
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
        Op::DeleteAccountData(u, r, k) => c.deleted_account_data.push((
            format!("@u{u}:x"),
            r.map(|r| format!("!r{r}")),
            format!("k{k}"),
        )),
        Op::Keys(u, d, k) => {
            let (user_id, device_id) = (format!("@u{u}:x"), format!("D{d}"));
            c.device_keys.push((user_id.clone(), device_id.clone(), vec![*k]));
            c.one_time_keys.push(OneTimeKey {
                user_id: user_id.clone(),
                device_id: device_id.clone(),
                key_id: format!("alg:{k}"),
                key: vec![*k],
            });
            c.fallback_keys.push(FallbackKey {
                user_id,
                device_id,
                algorithm: "alg".into(),
                key_id: format!("alg:F{k}"),
                key: vec![*k],
                used: false,
            });
        }
        Op::ToDevice(u, d, s) => c.to_device.push(NewToDevice {
            user_id: format!("@u{u}:x"),
            device_id: format!("D{d}"),
            sender: format!("@u{s}:x"),
            kind: "m.k".into(),
            content: vec![*s; usize::from(*s) + 1],
        }),
        Op::Delivered(u, d, n) => c.to_device_delivered.push((
            format!("@u{u}:x"),
            format!("D{d}"),
            StreamPos(u64::from(*n)),
        )),
        Op::Receipt(u, t, e) => c.receipts.push(Receipt {
            key: receipt_key(*u, *t),
            event_id: format!("$e{e}"),
            event_pos: StreamPos(u64::from(*e)),
            ts: u64::from(*e),
        }),
        Op::DeleteReceipt(u, t) => c.deleted_receipts.push(receipt_key(*u, *t)),
        Op::DeviceList(u) => c.device_list_changes.push(format!("@u{u}:x")),
        Op::TxnId(u, d, t) => c.transaction_ids.push(TransactionId {
            user_id: format!("@u{u}:x"),
            device_id: format!("D{d}"),
            scope: "send".into(),
            txn_id: format!("t{t}"),
            result: format!("$t{t}"),
        }),
        Op::Alias(a, r) => c.aliases.push(Alias {
            alias: format!("#a{a}:x"),
            room_id: format!("!r{r}"),
            creator: "@u0:x".into(),
        }),
        Op::DeleteAlias(a) => c.deleted_aliases.push(format!("#a{a}:x")),
        Op::Dehydrated(u, d, v) => c.dehydrated_devices.push(DehydratedDevice {
            user_id: format!("@u{u}:x"),
            device_id: format!("D{d}"),
            device_data: vec![*v],
        }),
        Op::CrossSigning(u, k, v) => c.cross_signing_keys.push((
            format!("@u{u}:x"),
            CrossSigningKeyKind::ALL[usize::from(*k) % 3],
            vec![*v],
        )),
        Op::Signature(u, d, signer, v) => c.key_signatures.push(KeySignature {
            target_user: format!("@u{u}:x"),
            target_key: format!("D{d}"),
            signer_user: format!("@u{signer}:x"),
            signer_key_id: format!("ed25519:S{signer}"),
            signature: format!("sig{v}"),
        }),
        Op::NewBackup(u) => c.new_backup_versions.push(NewBackupVersion {
            user_id: format!("@u{u}:x"),
            algorithm: "alg".into(),
            auth_data: vec![*u],
        }),
        Op::UpdateBackup(u, n, v) => {
            c.updated_backup_versions.push((format!("@u{u}:x"), n.to_string(), vec![*v]))
        }
        Op::BackupSession(u, n, r, session, v) => c.backup_sessions.push(NewBackupSession {
            user_id: format!("@u{u}:x"),
            version: n.to_string(),
            room_id: format!("!r{r}"),
            session_id: format!("s{session}"),
            data: vec![*v],
        }),
        Op::DeleteBackupSessions(u, n, scope) => c.deleted_backup_sessions.push((
            format!("@u{u}:x"),
            n.to_string(),
            match scope {
                0 => BackupScope::All,
                1 | 2 => BackupScope::Room(format!("!r{scope}")),
                _ => BackupScope::Session("!r1".into(), format!("s{}", scope - 3)),
            },
        )),
        Op::DeleteBackup(u, n) => {
            c.deleted_backup_versions.push((format!("@u{u}:x"), n.to_string()))
        }
        Op::Pusher(u, a, k, v) => c.pushers.push(Pusher {
            user_id: format!("@u{u}:x"),
            app_id: format!("app{a}"),
            pushkey: format!("key{k}"),
            device_id: format!("D{v}"),
            data: vec![*v],
        }),
        Op::DeletePusher(u, a, k) => {
            c.deleted_pushers.push((format!("@u{u}:x"), format!("app{a}"), format!("key{k}")))
        }
        Op::ExclusivePusher(u, a, k) => {
            c.exclusive_pushers.push((format!("@u{u}:x"), format!("app{a}"), format!("key{k}")))
        }
        Op::AuthChain(r, i, chain, links) => c.auth_chain.push(AuthChainEntry {
            room_id: format!("!r{r}"),
            index: u32::from(*i),
            event_id: format!("$e{chain}"),
            // Numbers of several bytes, as a big room has.
            chain: u32::from(*chain) * 1000,
            seq: u32::from(*i) + 1,
            links: links.iter().map(|&(c, s)| (u32::from(c) << 16, u32::from(s))).collect(),
        }),
        Op::Many(ops) => {
            for op in ops {
                let Some(more) = changes(op) else { continue };
                merge(&mut c, more);
            }
        }
        Op::Claim(..) | Op::PurgeEvents(_) | Op::PurgeRoom | Op::Reopen => return None,
    }
    Some(c)
}

fn receipt_key(u: u8, thread: Option<u8>) -> ReceiptKey {
    ReceiptKey {
        room_id: "!r".into(),
        user_id: format!("@u{u}:x"),
        kind: "m.read".into(),
        thread: thread.map(|t| format!("t{t}")),
    }
}

/// Appends the writes of `more` to `c` (a later snapshot replaces an earlier one).
fn merge(c: &mut ChangeSet, more: ChangeSet) {
    c.events.extend(more.events);
    if more.snapshot.is_some() {
        c.snapshot = more.snapshot;
    }
    c.new_users.extend(more.new_users);
    c.updated_users.extend(more.updated_users);
    c.devices.extend(more.devices);
    c.deleted_devices.extend(more.deleted_devices);
    c.dehydrated_devices.extend(more.dehydrated_devices);
    c.new_tokens.extend(more.new_tokens);
    c.deleted_tokens.extend(more.deleted_tokens);
    c.enqueue.extend(more.enqueue);
    c.acknowledge.extend(more.acknowledge);
    c.account_data.extend(more.account_data);
    c.deleted_account_data.extend(more.deleted_account_data);
    c.device_keys.extend(more.device_keys);
    c.one_time_keys.extend(more.one_time_keys);
    c.fallback_keys.extend(more.fallback_keys);
    c.device_list_changes.extend(more.device_list_changes);
    c.to_device.extend(more.to_device);
    c.to_device_delivered.extend(more.to_device_delivered);
    c.receipts.extend(more.receipts);
    c.deleted_receipts.extend(more.deleted_receipts);
    c.transaction_ids.extend(more.transaction_ids);
    c.aliases.extend(more.aliases);
    c.deleted_aliases.extend(more.deleted_aliases);
    c.cross_signing_keys.extend(more.cross_signing_keys);
    c.key_signatures.extend(more.key_signatures);
    c.new_backup_versions.extend(more.new_backup_versions);
    c.updated_backup_versions.extend(more.updated_backup_versions);
    c.deleted_backup_sessions.extend(more.deleted_backup_sessions);
    c.backup_sessions.extend(more.backup_sessions);
    c.deleted_backup_versions.extend(more.deleted_backup_versions);
    c.deleted_pushers.extend(more.deleted_pushers);
    c.exclusive_pushers.extend(more.exclusive_pushers);
    c.pushers.extend(more.pushers);
    c.auth_chain.extend(more.auth_chain);
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
        out += &format!("{:?}\n", store.dehydrated_device(&user).await.expect("reads"));
        out += &format!("{:?}\n", store.outbound(&format!("d{u}"), 100).await.expect("reads"));
    }
    out += &format!("{:?}\n", store.outbound_destinations().await.expect("reads"));
    let head = store.stream_position().await.expect("reads");
    let zero = StreamPos(0);
    out += &format!("{:?}\n", store.to_device_range(zero, head, 1000).await);
    for u in 0..4u8 {
        let user = format!("@u{u}:x");
        out += &format!("{:?}\n", store.device_keys(&user).await.expect("reads"));
        out += &format!("{:?}\n", store.account_data_changes(&user, zero, head).await);
        out += &format!("{:?}\n", store.user_receipts("!r", &user).await.expect("reads"));
        for d in 0..4u8 {
            let device = format!("D{d}");
            out += &format!("{:?}\n", store.one_time_key_counts(&user, &device).await);
            out += &format!("{:?}\n", store.fallback_keys(&user, &device).await);
            out += &format!("{:?}\n", store.to_device(&user, &device, zero, head, 100).await);
            out += &format!("{:?}\n", store.to_device_usage(&user, &device, "@u1:x").await);
            for t in 0..3 {
                let id = store.transaction_id(&user, &device, "send", &format!("t{t}")).await;
                out += &format!("{:?}\n", id.expect("reads"));
            }
        }
        out += &format!("{:?}\n", store.cross_signing_keys(&user).await.expect("reads"));
        out += &format!("{:?}\n", store.key_signatures(&user).await.expect("reads"));
        out += &format!("{:?}\n", store.latest_backup_version(&user).await.expect("reads"));
        for n in 0..5u8 {
            let version = n.to_string();
            out += &format!("{:?}\n", store.backup_version(&user, &version).await.expect("reads"));
            let sessions = store.backup_sessions(&user, &version, None).await.expect("reads");
            out += &format!("{sessions:?}\n");
        }
        out += &format!("{:?}\n", store.pushers(&user).await.expect("reads"));
        out += &format!("{:?}\n", store.alias(&format!("#a{u}:x")).await.expect("reads"));
        out += &format!("{:?}\n", store.room_aliases(&format!("!r{u}")).await.expect("reads"));
    }
    out += &format!("{:?}\n", store.all_pushers().await.expect("reads"));
    out += &format!("{:?}\n", store.receipts("!r", zero, head).await.expect("reads"));
    out += &format!("{:?}\n", store.device_list_changes(zero, head).await.expect("reads"));
    out += &format!(
        "{head:?} {:?}\n",
        store.stream_range(StreamPos(0), head, 1000).await.expect("reads")
    );
    for s in 0..snapshots {
        out += &format!("{:?}\n", store.state_full(SnapshotId(s)).await.expect("reads"));
        for k in 0..4 {
            let got = store.state_get(SnapshotId(s), &format!("t{k}"), "").await;
            out += &format!("{:?}\n", got.expect("reads"));
        }
    }
    out += &format!("{:?}\n", store.auth_chain(&["$e49", "$e20"]).await.expect("reads"));
    for r in 0..2 {
        let room = format!("!r{r}");
        out += &format!("{:?}\n", store.auth_chain_index(&room, 0, 100).await.expect("reads"));
        out += &format!("{:?}\n", store.auth_chain_index(&room, 2, 2).await.expect("reads"));
    }
    let ids: Vec<String> = (0..50).map(|e| format!("$e{e}")).chain(["$e3".into()]).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut events = store.events(&ids).await.expect("reads");
    events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    out += &format!("{events:?}\n");
    out
}

/// Runs `ops` on the model and on a store `open` opens in a new directory (and opens again
/// at each reopen), and compares what they answer and hold; then copies the store with
/// `copy` (into a new directory, on the other engine) and compares what the copy holds.
fn behaves_like_the_model<F, Fut>(
    ops: &[Op],
    open: F,
    copy: impl Fn(&SledStore, &std::path::Path) -> SledStore,
) -> Result<(), TestCaseError>
where
    F: Fn(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = SledStore>,
{
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let model = MemoryStore::new();
        let mut store = open(dir.path().to_owned()).await;
        let mut room = ChangeSet::new();
        room.rooms.push(RoomChanges {
            room_id: "!r".into(),
            create_with_version: Some("12".into()),
            ..RoomChanges::default()
        });
        model.apply(room.clone()).await.expect("room");
        store.apply(room.clone()).await.expect("room");
        let mut snapshots = 0;
        for op in ops {
            if let Op::Claim(u, d) = op {
                let (user, device) = (format!("@u{u}:x"), format!("D{d}"));
                let expected = model.claim_key(&user, &device, "alg").await.expect("claims");
                let got = store.claim_key(&user, &device, "alg").await.expect("claims");
                prop_assert_eq!(expected, got, "{:?}", op);
                continue;
            }
            if let Op::PurgeEvents(events) = op {
                let ids: Vec<String> = events.iter().map(|e| format!("$e{e}")).collect();
                let expected = model.purge_events("!r", &ids).await.expect("purges");
                let got = store.purge_events("!r", &ids).await.expect("purges");
                prop_assert_eq!(expected, got, "{:?}", op);
                continue;
            }
            if let Op::PurgeRoom = op {
                let expected = model.purge_room("!r").await.expect("purges");
                let got = store.purge_room("!r").await.expect("purges");
                prop_assert_eq!(expected, got, "{:?}", op);
                model.apply(room.clone()).await.expect("room");
                store.apply(room.clone()).await.expect("room");
                continue;
            }
            let Some(changes) = changes(op) else {
                drop(store);
                store = open(dir.path().to_owned()).await;
                continue;
            };
            let expected = model.apply(changes.clone()).await;
            let got = store.apply(changes).await;
            match (&expected, &got) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{:?}", op),
                (Err(a), Err(b)) => prop_assert_eq!(a.kind(), b.kind(), "{:?}", op),
                _ => prop_assert!(false, "{:?}: model {:?}, store {:?}", op, expected, got),
            }
            if let Ok(applied) = &expected
                && applied.snapshot.is_some()
            {
                snapshots += 1;
            }
        }
        let expected = observe(&model, snapshots).await;
        prop_assert_eq!(&expected, &observe(&store, snapshots).await);
        let copy_dir = tempfile::tempdir().expect("a temporary directory");
        let copied = copy(&store, copy_dir.path());
        prop_assert_eq!(&expected, &observe(&copied, snapshots).await, "the copy");
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn sled_behaves_like_the_model(ops in prop::collection::vec(op(), 1..40)) {
        behaves_like_the_model(&ops, |path| async move { crate::reopen(&path).await }, |store, dir| {
            let options = matrix_storage::fjall::FjallOptions::default();
            store.copy_to(dir, &options).expect("copies");
            matrix_storage::fjall::FjallStore::open(dir, &options).expect("the copy opens")
        })?;
    }
}

proptest! {
    // Fewer cases: each opens fjall (and its threads) several times, about 0.6 s a case.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn fjall_behaves_like_the_model(ops in prop::collection::vec(op(), 1..40)) {
        behaves_like_the_model(&ops, |path| async move {
            let options = matrix_storage::fjall::FjallOptions::default();
            matrix_storage::fjall::FjallStore::open(&path, &options).expect("opens")
        }, |store, dir| {
            let options = matrix_storage::sled::SledOptions::default();
            store.copy_to(dir, &options).expect("copies");
            crate::reopen_blocking(dir)
        })?;
    }
}
