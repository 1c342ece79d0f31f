//! Simplified sliding sync (MSC4186) with the real Rust SDK (crates.io `matrix-sdk` and
//! `matrix-sdk-ui`), as Element X runs it: the client discovers sliding sync from `/versions`
//! at login, runs a `SyncService` (the room list's connection `room-list` and the encryption
//! connection `encryption`, each long-polling
//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`), shows the
//! `RoomListService`'s rooms through the same sorting and filters as the app, and opens a
//! room's `Timeline`.
//!
//! The other user (`bob`) uses the SDK's ordinary `/sync`, so that what the first user sees is
//! what sliding sync brought.
//!
//! `RUST_LOG=matrix_sdk::http_client=debug` shows every request and its status;
//! `RUST_LOG=matrix_sdk::sliding_sync=trace` adds what the SDK made of each answer.

use std::future::IntoFuture;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use matrix_homeserver::testing::TestHomeserver;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::encryption::{BackupDownloadStrategy, EncryptionSettings};
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::sliding_sync::{Version, VersionBuilder};
use matrix_sdk::{Client, Room, RoomState, SlidingSyncList, SlidingSyncMode};
use matrix_sdk_ui::encryption_sync_service;
use matrix_sdk_ui::eyeball_im::{Vector, VectorDiff};
use matrix_sdk_ui::room_list_service::{self, filters::new_filter_non_left};
use matrix_sdk_ui::room_list_service::{RoomList, RoomListItem, RoomListLoadingState};
use matrix_sdk_ui::sync_service::{self, SyncService};
use matrix_sdk_ui::timeline::{LatestEventValue, RoomExt, TimelineItem};

const PASSWORD: &str = "correct horse battery staple";

/// The longest one step may take; a step that hangs fails the test with its name.
const STEP: Duration = Duration::from_secs(60);

/// How often a wait looks again at what is not announced by a stream (counts, states).
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// The SDK's logs, as `RUST_LOG` asks, printed with the test's output.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Runs one step, bounded by [`STEP`], and says how long it took.
async fn step<T>(what: &str, future: impl IntoFuture<Output = T>) -> T {
    let started = Instant::now();
    let answer = tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {} s", STEP.as_secs()));
    eprintln!("{what}: {} ms", started.elapsed().as_millis());
    answer
}

/// Logs `localpart` in as Element X does: the client is built from the homeserver's URL with
/// sliding sync discovered from `/versions` (Element X refuses a server where it is not found),
/// cross-signing set up and backups enabled automatically, then a password login.
async fn element_x_login(server: &TestHomeserver, localpart: &str) -> Client {
    let client = step(
        "building the client (discovering sliding sync)",
        Client::builder()
            .homeserver_url(server.base_url())
            .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
            .with_encryption_settings(EncryptionSettings {
                auto_enable_cross_signing: true,
                backup_download_strategy: BackupDownloadStrategy::AfterDecryptionFailure,
                auto_enable_backups: true,
            })
            .build(),
    )
    .await
    .unwrap_or_else(|e| panic!("the server advertises simplified sliding sync: {e}"));
    assert!(
        matches!(client.sliding_sync_version(), Version::Native),
        "the client uses simplified sliding sync: {:?}",
        client.sliding_sync_version()
    );
    step(
        "logging in",
        client
            .matrix_auth()
            .login_username(localpart, PASSWORD)
            .initial_device_display_name("Element X (test)"),
    )
    .await
    .unwrap_or_else(|e| panic!("{localpart} logs in: {e}"));
    client
}

/// A client that syncs with the ordinary `/sync` (the other side of each scenario).
async fn classic_login(server: &TestHomeserver, localpart: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(server.base_url())
        .build()
        .await
        .expect("the SDK client builds");
    step("logging in", client.matrix_auth().login_username(localpart, PASSWORD))
        .await
        .unwrap_or_else(|e| panic!("{localpart} logs in: {e}"));
    sync(&client).await;
    client
}

async fn sync(client: &Client) {
    step("sync", client.sync_once(SyncSettings::default().timeout(Duration::ZERO)))
        .await
        .expect("a sync succeeds");
}

fn user_id(client: &Client) -> OwnedUserId {
    client.user_id().expect("logged in").to_owned()
}

/// Starts the sync service (room list and encryption) as the app does after login.
async fn start_sync_service(client: &Client) -> SyncService {
    let service = step("building the sync service", SyncService::builder(client.clone()).build())
        .await
        .expect("the sync service builds");
    step("starting the sync service", service.start()).await;
    service
}

/// Fails with the sync service's error if it stopped on one.
fn check_running(service: &SyncService) {
    if let sync_service::State::Error(e) = service.state().get() {
        panic!("the sync service stopped on an error: {e:?}");
    }
}

type Entries<'a> = Pin<Box<dyn Stream<Item = Vec<VectorDiff<RoomListItem>>> + Send + 'a>>;

/// The room list as the app shows it: `all_rooms`, non-left rooms, sorted as the SDK sorts
/// (rooms with unsent events first, then by recency, then by name).
struct Screen<'a> {
    entries: Entries<'a>,
    rooms: Vector<RoomListItem>,
    _controller: matrix_sdk_ui::room_list_service::RoomListDynamicEntriesController,
}

impl<'a> Screen<'a> {
    fn new(list: &'a RoomList) -> Self {
        let (entries, controller) = list.entries_with_dynamic_adapters(100);
        assert!(controller.set_filter(Box::new(new_filter_non_left())), "the filter is set");
        Screen { entries: Box::pin(entries), rooms: Vector::new(), _controller: controller }
    }

    /// The room ids on screen, top first.
    fn ids(&self) -> Vec<OwnedRoomId> {
        self.rooms.iter().map(|r| r.room_id().to_owned()).collect()
    }

    fn room(&self, id: &RoomId) -> Option<&RoomListItem> {
        self.rooms.iter().find(|r| r.room_id() == id)
    }

    /// Applies the list's updates until `done` holds, for at most [`STEP`]; says why not.
    async fn until(
        &mut self,
        service: &SyncService,
        what: &str,
        done: impl Fn(&Self) -> Result<(), String>,
    ) {
        let started = Instant::now();
        let deadline = started + STEP;
        loop {
            let why_not = match done(self) {
                Ok(()) => {
                    eprintln!("{what}: {} ms", started.elapsed().as_millis());
                    return;
                }
                Err(why) => why,
            };
            check_running(service);
            assert!(
                Instant::now() < deadline,
                "{what}: not within {} s: {why_not}; on screen: {:?}",
                STEP.as_secs(),
                self.describe()
            );
            match tokio::time::timeout(LOOK_AGAIN, self.entries.next()).await {
                Ok(Some(diffs)) => {
                    for diff in diffs {
                        diff.apply(&mut self.rooms);
                    }
                }
                Ok(None) => panic!("{what}: the room list's stream ended"),
                Err(_) => {} // nothing new: look at the rooms again
            }
        }
    }

    fn describe(&self) -> Vec<String> {
        self.rooms
            .iter()
            .map(|r| {
                format!(
                    "{} {:?} {:?} notifications {} recency {:?}",
                    r.room_id(),
                    r.cached_display_name(),
                    r.state(),
                    r.unread_notification_counts().notification_count,
                    r.recency_stamp(),
                )
            })
            .collect()
    }
}

/// Where `room` is on screen, or why it is not there.
fn position(screen: &Screen<'_>, room: &RoomId) -> Result<usize, String> {
    screen.ids().iter().position(|id| id == room).ok_or_else(|| format!("{room} is not shown"))
}

/// The rooms are shown in exactly this order, and the server's bump stamps (the SDK's
/// recency stamps) agree with it: the SDK sorts by the latest event's timestamp where it has
/// one, so the order alone would not show what the server said.
fn shown_in_order(screen: &Screen<'_>, expected: &[&OwnedRoomId]) -> Result<(), String> {
    let ids = screen.ids();
    let shown: Vec<&OwnedRoomId> = ids.iter().collect();
    if shown != expected {
        return Err(format!("expected {expected:?}, shown {shown:?}"));
    }
    let stamps: Vec<Option<u64>> =
        screen.rooms.iter().map(|r| r.recency_stamp().map(u64::from)).collect();
    let descending = stamps.windows(2).all(|w| matches!(w, [Some(a), Some(b)] if a > b));
    if stamps.iter().all(Option::is_some) && descending {
        Ok(())
    } else {
        Err(format!("the bump stamps are not descending: {stamps:?}"))
    }
}

/// A public room of `client`'s named `name`.
async fn public_room(client: &Client, name: &str) -> Room {
    let mut create = CreateRoomRequest::new();
    create.name = Some(name.to_owned());
    create.preset = Some(RoomPreset::PublicChat);
    step("createRoom", client.create_room(create)).await.expect("the room is created")
}

async fn say(room: &Room, text: &str) {
    step("sending", room.send(RoomMessageEventContent::text_plain(text)))
        .await
        .unwrap_or_else(|e| panic!("{text:?} is sent: {e}"));
}

/// Two events in a row can carry the same millisecond; the SDK sorts by timestamp, so the
/// scenario's activities are spaced out.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_list_sorts_by_recency_counts_unread_and_accepts_an_invite() {
    logs();
    let started = Instant::now();
    let server = TestHomeserver::start().await;
    server.register_user("alice", PASSWORD).await;
    server.register_user("bob", PASSWORD).await;

    // Alice has three rooms before she logs in with Element X; bob is in each. Names sort the
    // other way from recency, so a name sort cannot pass for a recency sort.
    let setup = classic_login(&server, "alice").await;
    let bob = classic_login(&server, "bob").await;
    let mut rooms = Vec::new();
    for name in ["c oldest", "b middle", "a newest"] {
        let room = public_room(&setup, name).await;
        step("bob joins", bob.join_room_by_id(room.room_id())).await.expect("bob joins");
        tick().await;
        say(&room, &format!("welcome to {name}")).await;
        tick().await;
        rooms.push(room.room_id().to_owned());
    }
    let [oldest, middle, newest] = [&rooms[0], &rooms[1], &rooms[2]];

    let alice = element_x_login(&server, "alice").await;
    let alice_id = user_id(&alice);
    let service = start_sync_service(&alice).await;
    let room_list_service = service.room_list_service();
    let all_rooms =
        step("all_rooms", room_list_service.all_rooms()).await.expect("the all_rooms list exists");
    let mut screen = Screen::new(&all_rooms);

    // The three rooms appear, the most recent first, named.
    screen
        .until(&service, "the rooms appear by recency", |s| {
            shown_in_order(s, &[newest, middle, oldest])
        })
        .await;
    screen
        .until(&service, "the rooms are named", |s| {
            let names: Vec<Option<String>> = s
                .ids()
                .iter()
                .map(|id| s.room(id).and_then(|r| r.cached_display_name()).map(|n| n.to_string()))
                .collect();
            let expected = ["a newest", "b middle", "c oldest"].map(|n| Some(n.to_owned()));
            if names == expected { Ok(()) } else { Err(format!("names {names:?}")) }
        })
        .await;
    for id in [oldest, middle, newest] {
        let room = screen.room(id).expect("shown");
        assert_eq!(room.state(), RoomState::Joined, "alice is joined to {id}");
        assert_eq!(
            room.unread_notification_counts().notification_count,
            0,
            "alice wrote last in {id}: nothing unread"
        );
    }

    // Bob writes in the oldest room: it moves to the top, with one unread notification.
    let bob_oldest = bob.get_room(oldest).expect("bob knows the room");
    say(&bob_oldest, "hello alice").await;
    screen
        .until(&service, "a new message moves its room to the top", |s| {
            shown_in_order(s, &[oldest, newest, middle])
        })
        .await;
    screen
        .until(&service, "the new message from bob is unread", |s| {
            let room = s.room(oldest).ok_or("the room is gone")?;
            // The server's count, and the SDK's own from the events, push rules and
            // receipts sliding sync brought (what Element X shows).
            let server = room.unread_notification_counts().notification_count;
            let client = (room.num_unread_notifications(), room.num_unread_messages());
            if server == 1 && client == (1, 1) {
                Ok(())
            } else {
                Err(format!(
                    "notification_count {server}, the SDK's (notifications, messages) {client:?}"
                ))
            }
        })
        .await;
    for id in [middle, newest] {
        let room = screen.room(id).expect("shown");
        assert_eq!(room.unread_notification_counts().notification_count, 0, "{id} is read");
        assert_eq!(room.num_unread_notifications(), 0, "{id} is read");
    }

    // Alice opens the room (a room subscription, its timeline), sees bob typing, reads the
    // message and marks it read: the unread count goes back to zero.
    room_list_service.subscribe_to_rooms(&[oldest]).await;
    let alice_oldest = alice.get_room(oldest).expect("alice knows the room");
    let timeline = step("the room's timeline", alice_oldest.timeline()).await.expect("a timeline");
    let (_typing_guard, mut typing) = alice_oldest.subscribe_to_typing_notifications();
    step("bob types", bob_oldest.typing_notice(true)).await.expect("bob's typing notice");
    step("alice sees bob typing", async {
        loop {
            let typists = typing.recv().await.expect("typing notifications");
            if typists.contains(&user_id(&bob)) {
                break;
            }
        }
    })
    .await;
    let begun = Instant::now();
    loop {
        let items = timeline.items().await;
        if items.iter().any(|item| message_text(item).as_deref() == Some("hello alice")) {
            break;
        }
        assert!(begun.elapsed() < STEP, "bob's message is not in the timeline: {:?}", {
            describe_timeline(&items)
        });
        tokio::time::sleep(LOOK_AGAIN).await;
    }
    let marked = step("alice marks the room read", timeline.mark_as_read(ReceiptType::Read))
        .await
        .expect("the receipt is sent");
    assert!(marked, "a receipt was sent");
    screen
        .until(&service, "the read message is no longer unread", |s| {
            // The SDK's count, from alice's receipt as the receipts extension returns it:
            // what Element X shows. (Whether the server sends the room again with a new
            // `notification_count` when only a receipt changed it is not checked here.)
            let room = s.room(oldest).ok_or("the room is gone")?;
            let client = (room.num_unread_notifications(), room.num_unread_messages());
            if client == (0, 0) {
                Ok(())
            } else {
                Err(format!("the SDK's (notifications, messages) {client:?}"))
            }
        })
        .await;

    // Bob invites alice to a new room: it appears as an invite, at the top.
    let mut create = CreateRoomRequest::new();
    create.name = Some("d invite".to_owned());
    create.invite = vec![alice_id.clone()];
    create.preset = Some(RoomPreset::PrivateChat);
    let invite = step("bob creates a room and invites alice", bob.create_room(create))
        .await
        .expect("the room is created")
        .room_id()
        .to_owned();
    screen
        .until(&service, "the invite appears, named from its stripped state", |s| {
            let room = s.room(&invite).ok_or("the invite is not shown")?;
            let name = room.cached_display_name().map(|n| n.to_string());
            match room.state() {
                RoomState::Invited if name.as_deref() == Some("d invite") => Ok(()),
                other => Err(format!("the room is {other:?}, named {name:?}")),
            }
        })
        .await;
    // The SDK may show the room before it has stored the invite's stripped state: the
    // details are asked for until they are there.
    let invited = alice.get_room(&invite).expect("alice knows the invite");
    let begun = Instant::now();
    let details = loop {
        match step("the invite's details", invited.invite_details()).await {
            Ok(details) => break details,
            Err(e) => assert!(begun.elapsed() < STEP, "the invite has no details: {e}"),
        }
        tokio::time::sleep(LOOK_AGAIN).await;
    };
    assert_eq!(
        details.inviter.as_ref().map(|m| m.user_id().to_owned()),
        Some(user_id(&bob)),
        "bob invited alice"
    );

    // Alice accepts: the room becomes joined, and stays on screen.
    step("alice accepts the invite", invited.join()).await.expect("alice joins");
    screen
        .until(&service, "the accepted invite is a joined room", |s| {
            let room = s.room(&invite).ok_or("the room is not shown")?;
            match room.state() {
                RoomState::Joined => Ok(()),
                other => Err(format!("the room is {other:?}")),
            }
        })
        .await;
    screen
        .until(&service, "the joined room's member count", |s| {
            let room = s.room(&invite).ok_or("the room is not shown")?;
            let joined = room.joined_members_count();
            if joined == 2 { Ok(()) } else { Err(format!("joined_members_count {joined}")) }
        })
        .await;
    assert_eq!(screen.ids().len(), 4, "four rooms on screen: {:?}", screen.describe());

    // A message of alice's own in the middle room moves it up too.
    tick().await;
    let alice_middle = alice.get_room(middle).expect("alice knows the room");
    say(&alice_middle, "still here").await;
    screen
        .until(&service, "alice's own message moves its room to the top", |s| {
            position(s, middle)
                .and_then(|p| if p == 0 { Ok(()) } else { Err(format!("{middle} is at {p}")) })
        })
        .await;

    step("stopping the sync service", service.stop()).await;
    eprintln!("the scenario took {:.1} s", started.elapsed().as_secs_f64());
}

/// The text of a timeline item's message, if it is one.
fn message_text(item: &TimelineItem) -> Option<String> {
    let event = item.as_event()?;
    Some(event.content().as_message()?.body().to_owned())
}

fn describe_timeline(items: &Vector<std::sync::Arc<TimelineItem>>) -> Vec<String> {
    items
        .iter()
        .filter_map(|item| item.as_event())
        .map(|event| {
            let content = event.content();
            if content.is_unable_to_decrypt() {
                format!("{}: unable to decrypt", event.sender())
            } else if let Some(message) = content.as_message() {
                format!("{}: {:?}", event.sender(), message.body())
            } else {
                format!("{}: {:.100}", event.sender(), format!("{content:?}"))
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_message_from_another_user_is_decrypted() {
    logs();
    let started = Instant::now();
    let server = TestHomeserver::start().await;
    server.register_user("alice", PASSWORD).await;
    server.register_user("bob", PASSWORD).await;

    let alice = element_x_login(&server, "alice").await;
    let alice_id = user_id(&alice);
    let alice_device = alice.device_id().expect("a device").to_owned();
    let service = start_sync_service(&alice).await;
    let room_list_service = service.room_list_service();
    let all_rooms =
        step("all_rooms", room_list_service.all_rooms()).await.expect("the all_rooms list exists");
    let mut screen = Screen::new(&all_rooms);

    // Bob opens an encrypted direct chat with alice (no name: Element X names it after bob's
    // display name, from the room's heroes); she accepts from the room list. (A hero without
    // a display name is left out by the SDK unless it has the member's event, and `$LAZY`
    // brings only the timeline's senders: bob sets a display name first.)
    let bob = classic_login(&server, "bob").await;
    step("bob sets a display name", bob.account().set_display_name(Some("Bob")))
        .await
        .expect("bob's display name is set");
    let room_id = step("bob creates a direct chat", bob.create_dm(&alice_id))
        .await
        .expect("the room is created")
        .room_id()
        .to_owned();
    screen
        .until(&service, "the invite appears", |s| {
            let room = s.room(&room_id).ok_or("the invite is not shown")?;
            match room.state() {
                RoomState::Invited => Ok(()),
                other => Err(format!("the room is {other:?}")),
            }
        })
        .await;
    let room = alice.get_room(&room_id).expect("alice knows the room");
    step("alice accepts the invite", room.join()).await.expect("alice joins");
    screen
        .until(&service, "the room is joined", |s| {
            let room = s.room(&room_id).ok_or("the room is not shown")?;
            match room.state() {
                RoomState::Joined => Ok(()),
                other => Err(format!("the room is {other:?}")),
            }
        })
        .await;
    let encrypted = step("the room's encryption state", room.latest_encryption_state())
        .await
        .expect("the encryption state is known");
    assert!(encrypted.is_encrypted(), "alice sees the room as encrypted");
    // The name comes from the heroes; the room is a direct chat once alice's `m.direct`
    // comes back through the account data extension. (The SDK writes it when it finishes the
    // join only if the room is still an invite then: when the sync that shows the join
    // arrives before the join's answer, it does not; so the test writes it.)
    step("alice marks the room direct", room.set_is_direct(true))
        .await
        .expect("m.direct is written");
    screen
        .until(&service, "the direct chat is named after Bob and is direct", |s| {
            let room = s.room(&room_id).ok_or("the room is not shown")?;
            let name = room.cached_display_name().map(|n| n.to_string());
            let direct = room.direct_targets_length();
            if name.as_deref() == Some("Bob") && direct == 1 {
                Ok(())
            } else {
                Err(format!("name {name:?}, direct targets {direct}"))
            }
        })
        .await;

    // Bob's client learns alice's device (she uploaded its keys through her sync's
    // outgoing requests), so its room key goes to her in an Olm to-device message.
    let bob_room = bob.get_room(&room_id).expect("bob knows the room");
    let deadline = Instant::now() + STEP;
    loop {
        sync(&bob).await;
        let devices = bob.encryption().get_user_devices(&alice_id).await.expect("bob's store");
        if devices.get(&alice_device).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob does not learn alice's device {alice_device}: {:?}",
            devices.devices().map(|d| d.device_id().to_owned()).collect::<Vec<_>>()
        );
        tokio::time::sleep(LOOK_AGAIN).await;
    }
    let secret = "the secret is 42";
    say(&bob_room, secret).await;

    // Alice opens the room as Element X does (a room subscription, then its timeline) and
    // reads the message: the room key came by to-device through the encryption connection.
    room_list_service.subscribe_to_rooms(&[&room_id]).await;
    let timeline = step("the room's timeline", room.timeline()).await.expect("a timeline");
    let begun = Instant::now();
    let deadline = begun + STEP;
    loop {
        check_running(&service);
        let items = timeline.items().await;
        if items.iter().any(|item| message_text(item).as_deref() == Some(secret)) {
            eprintln!("decrypting bob's message: {} ms", begun.elapsed().as_millis());
            let event = items
                .iter()
                .filter_map(|item| item.as_event())
                .find(|e| e.content().as_message().is_some_and(|m| m.body() == secret))
                .expect("found above");
            assert_eq!(event.sender(), bob.user_id().expect("bob"), "bob sent it");
            assert!(event.encryption_info().is_some(), "it was encrypted");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice does not read bob's message within {} s: timeline {:?}",
            STEP.as_secs(),
            describe_timeline(&items)
        );
        tokio::time::sleep(LOOK_AGAIN).await;
    }

    // The room list's preview of the room (its latest event) is the decrypted message too.
    let begun = Instant::now();
    loop {
        let latest = room.latest_event().await;
        if let LatestEventValue::Remote { content, .. } = &latest
            && content.as_message().is_some_and(|m| m.body() == secret)
        {
            eprintln!("the decrypted latest event: {} ms", begun.elapsed().as_millis());
            break;
        }
        assert!(begun.elapsed() < STEP, "the room's latest event is not bob's message: {latest:?}");
        tokio::time::sleep(LOOK_AGAIN).await;
    }

    step("stopping the sync service", service.stop()).await;
    eprintln!("the scenario took {:.1} s", started.elapsed().as_secs_f64());
}

/// More rooms than the room list's first range (0..=19): the SDK asks for them in a growing
/// range once the first answer's `count` says there are more, and shows them all in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_room_list_loads_past_the_first_range() {
    logs();
    let started = Instant::now();
    let server = TestHomeserver::start().await;
    server.register_user("alice", PASSWORD).await;
    let setup = classic_login(&server, "alice").await;
    const ROOMS: usize = 25;
    let mut rooms = Vec::new();
    for i in 0..ROOMS {
        // Names sort the other way from recency.
        let room = public_room(&setup, &format!("room {:02}", ROOMS - i)).await;
        tick().await;
        rooms.push(room.room_id().to_owned());
    }
    rooms.reverse(); // the most recent first

    let alice = element_x_login(&server, "alice").await;
    let service = start_sync_service(&alice).await;
    let room_list_service = service.room_list_service();
    let all_rooms =
        step("all_rooms", room_list_service.all_rooms()).await.expect("the all_rooms list exists");
    let mut screen = Screen::new(&all_rooms);
    let expected: Vec<&OwnedRoomId> = rooms.iter().collect();
    screen
        .until(&service, "every room appears, by recency", |s| shown_in_order(s, &expected))
        .await;
    assert_eq!(
        all_rooms.loading_state().get(),
        RoomListLoadingState::Loaded { maximum_number_of_rooms: Some(ROOMS as u32) },
        "the list's count is the number of rooms"
    );
    step("stopping the sync service", service.stop()).await;
    eprintln!("the scenario took {:.1} s", started.elapsed().as_secs_f64());
}

/// Whether the sync service stopped on the server's `M_UNKNOWN_POS` (either connection's).
fn unknown_pos(error: &sync_service::Error) -> bool {
    let sdk_error = match error {
        sync_service::Error::RoomList(room_list_service::Error::SlidingSync(e)) => e,
        sync_service::Error::EncryptionSync(encryption_sync_service::Error::SlidingSync(e)) => e,
        _ => return false,
    };
    sdk_error.client_api_error_kind() == Some(&ErrorKind::UnknownPos)
}

/// The server keeps two connections per device here; while the app is in the background
/// another two connections of the same device push its two out. Back in the foreground its
/// next request is answered `M_UNKNOWN_POS`: the SDK forgets its position, and when the app
/// starts syncing again it starts both connections afresh and shows what happened meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_connection_answers_unknown_pos_and_the_app_starts_again() {
    logs();
    let started = Instant::now();
    let mut config = TestHomeserver::config();
    config.limits.max_sliding_sync_connections_per_device = 2;
    let server = TestHomeserver::start_with(config).await;
    server.register_user("alice", PASSWORD).await;
    let other_device = classic_login(&server, "alice").await;
    let general = public_room(&other_device, "general").await;
    say(&general, "first").await;
    let general = general.room_id().to_owned();

    let alice = element_x_login(&server, "alice").await;
    let service = start_sync_service(&alice).await;
    let room_list_service = service.room_list_service();
    let all_rooms =
        step("all_rooms", room_list_service.all_rooms()).await.expect("the all_rooms list exists");
    let mut screen = Screen::new(&all_rooms);
    screen.until(&service, "the room appears", |s| shown_in_order(s, &[&general])).await;

    // The app goes to the background; two other connections of the device take the places.
    step("stopping the sync service", service.stop()).await;
    for conn_id in ["other-1", "other-2"] {
        let other = alice
            .sliding_sync(conn_id)
            .expect("a sliding sync")
            .add_list(
                SlidingSyncList::builder("list")
                    .sync_mode(SlidingSyncMode::new_selective().add_range(0..=0)),
            )
            .build()
            .await
            .expect("the other connection builds");
        let sync = other.sync();
        let mut sync = std::pin::pin!(sync);
        step(conn_id, sync.next())
            .await
            .expect("an answer")
            .unwrap_or_else(|e| panic!("{conn_id} syncs: {e}"));
    }

    // Meanwhile: a message, and a new room.
    tick().await;
    let newer = public_room(&other_device, "newer").await;
    tick().await;
    say(&other_device.get_room(&general).expect("known"), "while you were away").await;
    let newer = newer.room_id().to_owned();

    // Back in the foreground: the forgotten position is refused with M_UNKNOWN_POS.
    step("starting the sync service again", service.start()).await;
    let mut state = service.state();
    let error = step("the sync service stops on the forgotten position", async {
        loop {
            if let sync_service::State::Error(e) = state.get() {
                return e;
            }
            state.next().await.expect("the sync service's state");
        }
    })
    .await;
    assert!(unknown_pos(&error), "stopped on M_UNKNOWN_POS, not on {error:?}");

    // The app starts syncing again (as Element X does on an error): both connections start
    // afresh and the list shows the room with the new message first.
    step("starting the sync service afresh", service.start()).await;
    screen
        .until(&service, "the list is up to date", |s| shown_in_order(s, &[&general, &newer]))
        .await;
    let room = alice.get_room(&general).expect("known");
    let begun = Instant::now();
    loop {
        let latest = room.latest_event().await;
        let text = match &latest {
            LatestEventValue::Remote { content, .. } => {
                content.as_message().map(|m| m.body().to_owned())
            }
            _ => None,
        };
        if text.as_deref() == Some("while you were away") {
            eprintln!("the room's latest event: {} ms", begun.elapsed().as_millis());
            break;
        }
        assert!(
            begun.elapsed() < STEP,
            "the room's latest event is not the message sent meanwhile: {latest:?}"
        );
        tokio::time::sleep(LOOK_AGAIN).await;
    }
    step("stopping the sync service", service.stop()).await;
    eprintln!("the scenario took {:.1} s", started.elapsed().as_secs_f64());
}
