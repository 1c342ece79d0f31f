//! The Rust Matrix SDK (crates.io `matrix-sdk`) against our homeserver, in process: a user
//! bootstraps cross-signing (user-interactive auth with the password), enables recovery (secret
//! storage and a server-side key backup, one recovery key), sends encrypted messages; a second
//! device logs in with a fresh store, recovers with the recovery key, takes the room keys from
//! the backup and decrypts the history, signs itself with the recovered self-signing key, and
//! the first device sees it as verified.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use matrix_homeserver::testing::TestHomeserver;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{TimelineEventKind, VerificationState};
use matrix_sdk::encryption::CrossSigningResetAuthType;
use matrix_sdk::encryption::recovery::RecoveryState;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoomRequest;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::{MessageType, RoomMessageEventContent};
use matrix_sdk::ruma::events::{
    AnyMessageLikeEvent, AnySyncMessageLikeEvent, AnySyncTimelineEvent, AnyTimelineEvent,
    InitialStateEvent,
};
use matrix_sdk::ruma::{OwnedUserId, UInt, UserId};
use matrix_sdk::{Client, Room};

const PASSWORD: &str = "correct horse battery staple";

/// The longest one step may take; a step that hangs fails the test with its name.
const STEP: Duration = Duration::from_secs(60);

/// The SDK's logs, as `RUST_LOG` asks (`RUST_LOG=matrix_sdk::http_client=debug` shows every
/// request and its status), printed with the test's output.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Runs one step of the scenario, bounded by [`STEP`], and says how long it took (shown with
/// `--nocapture`, or when the test fails).
async fn step<T>(what: &str, future: impl IntoFuture<Output = T>) -> T {
    let started = Instant::now();
    let answer = tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {} s", STEP.as_secs()));
    eprintln!("{what}: {} ms", started.elapsed().as_millis());
    answer
}

/// A client of the server with its own in-memory stores, logged in as `alice` on a new device.
async fn log_in(server: &TestHomeserver, device_name: &str) -> Client {
    step("logging in", log_in_unbounded(server, device_name)).await
}

async fn log_in_unbounded(server: &TestHomeserver, device_name: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(server.base_url())
        .build()
        .await
        .expect("the SDK client builds");
    client
        .matrix_auth()
        .login_username("alice", PASSWORD)
        .initial_device_display_name(device_name)
        .await
        .unwrap_or_else(|e| panic!("device {device_name} logs in: {e}"));
    client
}

/// The master key the server gives `client` for `user_id` (a fresh `/keys/query`).
async fn master_key(client: &Client, user_id: &UserId) -> String {
    let identity = step("/keys/query", client.encryption().request_user_identity(user_id))
        .await
        .expect("the keys are queried")
        .expect("the user has a cross-signing identity");
    identity.master_key().get_first_key().expect("a master key").to_base64()
}

async fn sync(client: &Client) {
    step("sync", client.sync_once(SyncSettings::default().timeout(Duration::ZERO)))
        .await
        .expect("a sync succeeds");
}

/// A new encrypted room of `client`'s.
async fn encrypted_room(client: &Client) -> Room {
    let mut create = CreateRoomRequest::new();
    let encryption = InitialStateEvent::with_empty_state_key(
        RoomEncryptionEventContent::with_recommended_defaults(),
    );
    create.initial_state = vec![encryption.to_raw_any()];
    let room = step("createRoom", client.create_room(create)).await.expect("the room is created");
    sync(client).await;
    room
}

/// The body of a decrypted `m.room.message` of `m.text`, or why it is not one.
fn decrypted_text(kind: &TimelineEventKind) -> Result<String, String> {
    let TimelineEventKind::Decrypted(decrypted) = kind else {
        return Err(format!("not decrypted: {kind:?}"));
    };
    let content = match decrypted.event.deserialize() {
        Ok(AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(message))) => {
            message.as_original().map(|m| m.content.msgtype.clone()).ok_or("a redacted message")?
        }
        Ok(other) => return Err(format!("decrypted to {:?}", other.event_type())),
        Err(e) => return Err(format!("decrypted to an unreadable event: {e}")),
    };
    match content {
        MessageType::Text(text) => Ok(text.body),
        other => Err(format!("a message of type {}", other.msgtype())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_key_restores_history_and_cross_signs_the_new_device() {
    logs();
    let started = Instant::now();
    let server = TestHomeserver::start().await;
    let alice = server.register_user("alice", PASSWORD).await;
    let user_id: OwnedUserId = alice.user_id.as_str().try_into().expect("a user id");

    // Device A. The first cross-signing keys need no user-interactive auth (there are none
    // to replace); replacing them does, and the password is one way.
    let a = log_in(&server, "A").await;
    sync(&a).await;
    step("first cross-signing keys", a.encryption().bootstrap_cross_signing(None))
        .await
        .expect("the first cross-signing keys are uploaded without auth");
    let first_master = master_key(&a, &user_id).await;
    let reset = step("resetting cross-signing", a.encryption().reset_cross_signing())
        .await
        .expect("the reset starts")
        .expect("replacing the keys asks for user-interactive auth");
    let CrossSigningResetAuthType::Uiaa(uiaa_info) = reset.auth_type().clone() else {
        panic!("user-interactive auth, not OAuth: {:?}", reset.auth_type());
    };
    assert!(
        uiaa_info.flows.iter().any(|f| f.stages.contains(&uiaa::AuthType::Password)),
        "the password is one way to authenticate: {:?}",
        uiaa_info.flows
    );
    let password = |password: &str| {
        let mut auth = uiaa::Password::new(
            uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new("alice".to_owned())),
            password.to_owned(),
        );
        auth.session = uiaa_info.session.clone();
        uiaa::AuthData::Password(auth)
    };
    let wrong = step("a wrong password", reset.auth(Some(password("not the password")))).await;
    assert!(wrong.is_err(), "a wrong password does not replace the keys");
    step("the password", reset.auth(Some(password(PASSWORD))))
        .await
        .expect("the password replaces the cross-signing keys");
    let master = master_key(&a, &user_id).await;
    assert_ne!(master, first_master, "the server holds the new master key");
    let status = a.encryption().cross_signing_status().await.expect("a cross-signing status");
    assert!(status.is_complete(), "A has the three private keys: {status:?}");

    // Recovery: a key backup, secret storage, the recovery key.
    let recovery_key = step("enabling recovery", a.encryption().recovery().enable())
        .await
        .expect("recovery is enabled");
    assert_eq!(a.encryption().recovery().state(), RecoveryState::Enabled);

    // An encrypted room, three messages, their keys backed up.
    let room = encrypted_room(&a).await;
    let room_id = room.room_id().to_owned();
    let texts = ["first secret", "second secret", "third secret"];
    for text in texts {
        step("sending", room.send(RoomMessageEventContent::text_plain(text)))
            .await
            .unwrap_or_else(|e| panic!("{text:?} is sent: {e}"));
    }
    assert!(
        room.latest_encryption_state().await.expect("the room's encryption").is_encrypted(),
        "the room is encrypted"
    );
    step("backing up the room keys", a.encryption().backups().wait_for_steady_state())
        .await
        .expect("the room keys are backed up");

    // Device B: a fresh store, the same user.
    let b = log_in(&server, "B").await;
    let device_b = b.device_id().expect("B has a device id").to_owned();
    sync(&b).await;
    let room_b = b.get_room(&room_id).expect("B knows the room after a sync");

    // Before recovery B cannot read the history.
    let mut options = MessagesOptions::backward();
    options.limit = UInt::from(50_u32);
    let before = step("history before recovery", room_b.messages(options))
        .await
        .expect("B reads the history");
    let unreadable = before.chunk.iter().filter(|e| e.kind.is_utd()).count();
    assert_eq!(unreadable, texts.len(), "B has no room key yet");

    step("recovering", b.encryption().recovery().recover(&recovery_key))
        .await
        .expect("B recovers with the recovery key");
    let status = b.encryption().cross_signing_status().await.expect("a cross-signing status");
    assert!(status.is_complete(), "B has the private cross-signing keys: {status:?}");
    assert!(b.encryption().backups().are_enabled().await, "B uses the backup");
    assert_eq!(b.encryption().recovery().state(), RecoveryState::Enabled);

    step(
        "downloading the room's keys",
        b.encryption().backups().download_room_keys_for_room(&room_id),
    )
    .await
    .expect("the room keys come from the backup");
    let mut options = MessagesOptions::backward();
    options.limit = UInt::from(50_u32);
    let history = step("history after recovery", room_b.messages(options))
        .await
        .expect("B reads the history");
    let mut read: Vec<String> = Vec::new();
    for event in &history.chunk {
        match &event.kind {
            TimelineEventKind::PlainText { event } => {
                if let Ok(AnySyncTimelineEvent::MessageLike(
                    AnySyncMessageLikeEvent::RoomMessage(_),
                )) = event.deserialize()
                {
                    panic!("a message in the clear in an encrypted room");
                }
            }
            kind => read.push(decrypted_text(kind).unwrap_or_else(|e| panic!("B reads it: {e}"))),
        }
    }
    read.reverse();
    assert_eq!(read, texts, "B decrypts the three messages, in order");

    // B signed itself with the recovered self-signing key.
    let own = b.encryption().get_own_device().await.expect("the store").expect("B's device");
    assert!(own.is_cross_signed_by_owner(), "B is cross-signed by alice's self-signing key");
    assert!(own.is_verified(), "B trusts itself through cross-signing");

    // A sees B as verified once it has heard of the new signature.
    let deadline = Instant::now() + STEP;
    loop {
        sync(&a).await;
        let seen = a.encryption().get_device(&user_id, &device_b).await.expect("A's store");
        if let Some(device) = &seen
            && device.is_verified()
        {
            assert!(device.is_cross_signed_by_owner());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A does not see B as verified: {:?}",
            seen.map(|d| (d.is_cross_signed_by_owner(), d.is_verified()))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a_device = a.device_id().expect("A's device id").to_owned();
    let a_seen_by_b = b.encryption().get_device(&user_id, &a_device).await.expect("B's store");
    assert!(
        a_seen_by_b.as_ref().is_some_and(|d| d.is_verified()),
        "B sees A as verified (A signed itself when it bootstrapped)"
    );

    // B writes in the room (its room key reaches A in an Olm to-device message: one-time key
    // claimed, sendToDevice, to-device in A's sync); A decrypts it and knows it comes from a
    // verified device.
    let reply = "a reply from B";
    step("B sends", room_b.send(RoomMessageEventContent::text_plain(reply)))
        .await
        .expect("B's message is sent");
    let deadline = Instant::now() + STEP;
    loop {
        sync(&a).await;
        let mut options = MessagesOptions::backward();
        options.limit = UInt::from(1_u32);
        let latest = step("A's latest event", room.messages(options)).await.expect("A reads");
        let event = latest.chunk.first().expect("the room has events");
        match decrypted_text(&event.kind) {
            Ok(text) => {
                assert_eq!(text, reply);
                let info = event.encryption_info().expect("it was encrypted");
                assert_eq!(info.sender_device.as_deref(), Some(&*device_b));
                assert_eq!(
                    info.verification_state,
                    VerificationState::Verified,
                    "B's message comes from a device A trusts"
                );
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "A cannot read B's message: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("the scenario took {:.1} s", started.elapsed().as_secs_f64());
}

/// Another device replaces the backup version: the first device's next upload is refused with
/// `M_WRONG_ROOM_KEYS_VERSION` naming the new version, and the SDK stops backing up to the old
/// one (it does so only if it can read the error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_backup_version_stops_the_old_devices_uploads() {
    logs();
    let server = TestHomeserver::start().await;
    server.register_user("alice", PASSWORD).await;
    let a = log_in(&server, "A").await;
    sync(&a).await;
    step("cross-signing", a.encryption().bootstrap_cross_signing(None))
        .await
        .expect("the first cross-signing keys are uploaded");
    step("enabling recovery", a.encryption().recovery().enable())
        .await
        .expect("recovery is enabled");
    let room = encrypted_room(&a).await;
    step("sending", room.send(RoomMessageEventContent::text_plain("backed up")))
        .await
        .expect("the message is sent");
    step("backing up", a.encryption().backups().wait_for_steady_state())
        .await
        .expect("the room key is backed up");
    assert!(a.encryption().backups().are_enabled().await);

    let b = log_in(&server, "B").await;
    sync(&b).await;
    step("a new backup version", b.encryption().backups().create())
        .await
        .expect("B creates a backup version");

    // A new room, a new room key: A's upload goes to the old version.
    let other = encrypted_room(&a).await;
    step("sending", other.send(RoomMessageEventContent::text_plain("not backed up")))
        .await
        .expect("the message is sent");
    let waited = step("backing up", a.encryption().backups().wait_for_steady_state()).await;
    assert!(waited.is_err(), "the upload to the replaced version fails");
    assert!(
        !a.encryption().backups().are_enabled().await,
        "A stops using the replaced backup version ({:?})",
        a.encryption().backups().state()
    );
}
