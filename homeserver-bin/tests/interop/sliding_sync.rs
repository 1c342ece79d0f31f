//! Simplified sliding sync (MSC4186,
//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`) on our server and on
//! Synapse, compared: the same scripted actions on both (users, a DM in `m.direct`, an
//! encrypted room, a space with children, invites, messages, a rename, a leave, kicks, tags,
//! account data, to-device messages, keys, typing, receipts), then the same requests
//! (ranges, `required_state` with `$LAZY`, `$ME` and wildcards, every filter, room
//! subscriptions, an incremental request after a new message, a larger `timeline_limit`, the
//! five extensions), and the answers compared field by field once ids, timestamps and tokens
//! are replaced by placeholders ([`Names`]: each server's users, rooms and events named by
//! the role the scenario gave them).
//!
//! What is printed for each difference is its path, our value and Synapse's. The few
//! differences kept on purpose are in [`KEPT`], each with the reason; any other fails the
//! test. The same scenario run twice on Synapse must agree with itself (the normalisation
//! removes everything that differs between two runs and nothing else).
//!
//! Synapse 1.163 serves the endpoint without a setting (`experimental_features:
//! msc3575_enabled` defaults to true), so `interop/synapse/start` needs nothing for it.
//!
//! The normalised answers of the last run are written to
//! `$TMPDIR/sliding-sync-diff/<test>/<step>.<server>.json` to read beside the diff.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::client::{Session, encode, request};
use crate::ours::OurServer;
use crate::synapse::Synapse;

const PASSWORD: &str = "a long enough password";

/// The endpoint, after the server's base URL.
const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// The `required_state` of the main list: names, creation, encryption, members lazily and
/// the user's own membership.
fn main_required_state() -> Value {
    json!([
        ["m.room.name", ""],
        ["m.room.create", ""],
        ["m.room.encryption", ""],
        ["m.room.topic", ""],
        ["m.room.member", "$LAZY"],
        ["m.room.member", "$ME"]
    ])
}

/// A difference kept on purpose: where (the step, then the answer's keys; `*` is any one
/// segment, `**` any run of them), when (what each side holds there), and why we answer
/// differently from Synapse there.
struct Kept {
    pattern: &'static [&'static str],
    when: fn(&Difference) -> bool,
    why: &'static str,
}

fn always(_: &Difference) -> bool {
    true
}

fn only_theirs_empty(difference: &Difference) -> bool {
    difference.ours.is_none() && difference.theirs == Some(json!([]))
}

fn only_ours(difference: &Difference) -> bool {
    difference.ours.is_some() && difference.theirs.is_none()
}

fn ours_is_guest_access(difference: &Difference) -> bool {
    difference.theirs.is_none()
        && difference.ours.as_ref().is_some_and(|e| e["type"] == "m.room.guest_access")
}

/// An event of createRoom's first ones only Synapse shows: the timeline's window holds our
/// extra `m.room.guest_access` event instead.
fn theirs_is_pushed_out_by_guest_access(difference: &Difference) -> bool {
    const FIRST: [&str; 4] =
        ["m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility"];
    difference.ours.is_none()
        && difference.theirs.as_ref().is_some_and(|e| FIRST.iter().any(|kind| e["type"] == *kind))
}

fn only_theirs(difference: &Difference) -> bool {
    difference.ours.is_none() && difference.theirs.is_some()
}

const KEPT: &[Kept] = &[
    Kept {
        pattern: &["spaces_filter", "**"],
        when: always,
        why: "Synapse 1.163 does not implement the `spaces` filter (NotImplementedError: a 500 \
              M_UNKNOWN); we answer the space's children (checked on its own in the test)",
    },
    Kept {
        pattern: &["*", "rooms", "*", "notification_count"],
        when: always,
        why: "Synapse's sliding sync answers notification_count 0 always (a constant in \
              synapse/handlers/sliding_sync); we answer the stored unread notifications, as \
              /sync does",
    },
    Kept {
        pattern: &["*", "rooms", "*", "highlight_count"],
        when: always,
        why: "Synapse's sliding sync answers highlight_count 0 always; we answer the stored \
              highlights, as /sync does",
    },
    Kept {
        pattern: &["*", "extensions", "account_data", "rooms", "*"],
        when: only_theirs_empty,
        why: "Synapse lists every room of the request with no account data as []; we leave \
              such rooms out: nothing either way",
    },
    Kept {
        pattern: &["*", "rooms", "!kicked", "timeline", "*"],
        when: only_ours,
        why: "history visibility `shared` for a user who is no longer in the room: the spec's \
              algorithm (step 3: the user joined after the event) shows the events before her \
              join; Synapse shows them only while she is joined",
    },
    Kept {
        pattern: &["*", "rooms", "*", "timeline", "*", "unsigned", "membership"],
        when: only_theirs,
        why: "unsigned.membership (MSC4115) is optional in the spec (v1.11: servers MAY send \
              it); /sync does not send it either",
    },
    Kept {
        pattern: &["*", "rooms", "*", "*", "*", "unsigned", "prev_sender"],
        when: only_theirs,
        why: "unsigned.prev_sender is Synapse's own, not in the spec's UnsignedData; we send \
              prev_content and replaces_state",
    },
    Kept {
        pattern: &["*", "rooms", "*", "invite_state", "*", "event_id"],
        when: only_ours,
        why: "the invitee's own membership event in invite_state carries its event_id and \
              origin_server_ts, as in our /sync (clients show when and by which event they \
              were invited); the rest is stripped as Synapse strips it",
    },
    Kept {
        pattern: &["*", "rooms", "*", "invite_state", "*", "origin_server_ts"],
        when: only_ours,
        why: "as above: the invitee's own membership event keeps its origin_server_ts",
    },
    Kept {
        pattern: &["*", "rooms", "*", "**", "content", "events", "m.room.tombstone"],
        when: always,
        why: "createRoom's power levels: Synapse gives m.room.tombstone 150 in room version 12 \
              (only creators may upgrade); we use the spec's default levels (100 for state \
              events of that kind, like every other admin event)",
    },
    Kept {
        pattern: &["*", "rooms", "*", "**", "content", "events", "m.call.invite"],
        when: only_theirs,
        why: "createRoom's power levels: m.call.invite 50 is Synapse's own default, not the \
              spec's",
    },
    Kept {
        pattern: &["*", "rooms", "*", "timeline", "*"],
        when: ours_is_guest_access,
        why: "createRoom's public_chat preset: the spec's table sets guest_access \"forbidden\" \
              and we send that event; Synapse leaves it out (forbidden is the default anyway)",
    },
    Kept {
        pattern: &["*", "rooms", "*", "timeline", "*"],
        when: theirs_is_pushed_out_by_guest_access,
        why: "a limited timeline's window holds that m.room.guest_access event of ours, so the \
              oldest of createRoom's first state events falls out of it (it is in the state)",
    },
    Kept {
        pattern: &["*", "rooms", "*", "required_state", "*"],
        when: ours_is_guest_access,
        why: "the same m.room.guest_access event, in the state",
    },
    Kept {
        pattern: &["*", "extensions", "account_data", "global", "*", "content", "**"],
        when: always,
        why: "the default push rules of a user who never changed them: ours are the spec's \
              (ruma's Ruleset::server_default, the rules our push evaluator runs), Synapse's \
              its own list (another order, legacy rules such as .m.rule.contains_user_name, \
              empty kinds as [])",
    },
    Kept {
        pattern: &["timeline_expanded", "rooms", "*", "joined_count"],
        when: only_ours,
        why: "a grown timeline limit: with the older events come their member changes, so we \
              send the counts (and heroes) again; Synapse sends only the timeline. Values the \
              client has, sent again, change nothing",
    },
    Kept {
        pattern: &["timeline_expanded", "rooms", "*", "invited_count"],
        when: only_ours,
        why: "as for joined_count: sent again with the grown timeline",
    },
    Kept {
        pattern: &["timeline_expanded", "rooms", "*", "heroes"],
        when: only_ours,
        why: "as for joined_count: sent again with the grown timeline",
    },
    Kept {
        pattern: &["timeline_expanded", "rooms", "*", "required_state", "**"],
        when: always,
        why: "lazy members for a grown timeline: the member events of the senders of the older \
              events now shown (the client renders them by these); Synapse sends none",
    },
];

/// One server's side of the comparison: its users and rooms after the scenario, and the
/// names that replace their ids.
struct World {
    server_name: String,
    alice: Session,
    bob: Session,
    carol: Session,
    dave: Session,
    erin: Session,
    /// Room ids by role.
    rooms: BTreeMap<&'static str, String>,
    /// Which session reads each room's whole history (its creator, still joined).
    readers: BTreeMap<&'static str, Session>,
    names: Names,
}

/// Ids replaced by placeholders, in every string value and every object key: whole strings
/// first, then (longest first) inside longer strings.
#[derive(Default)]
struct Names {
    exact: BTreeMap<String, String>,
}

impl Names {
    fn add(&mut self, actual: &str, placeholder: String) {
        self.exact.insert(actual.to_owned(), placeholder);
    }

    fn text(&self, text: &str) -> String {
        if let Some(placeholder) = self.exact.get(text) {
            return placeholder.clone();
        }
        let mut out = text.to_owned();
        let mut by_length: Vec<(&String, &String)> = self.exact.iter().collect();
        by_length.sort_by_key(|(actual, _)| std::cmp::Reverse(actual.len()));
        for (actual, placeholder) in by_length {
            if out.contains(actual.as_str()) {
                out = out.replace(actual.as_str(), placeholder);
            }
        }
        out
    }
}

/// Registers a user whose localpart starts with `role`; its ids become `@role`.
async fn user(base: &str, role: &str, names: &mut Names, server_name: &str) -> Session {
    let localpart = crate::unique(&format!("ss{role}"));
    let session = Session::register_open(base, &localpart, PASSWORD).await;
    assert_eq!(session.user_id, format!("@{localpart}:{server_name}"));
    names.add(&session.user_id, format!("@{role}"));
    names.add(&localpart, role.to_owned());
    names.add(&session.device_id, format!("{role}_DEVICE"));
    // Synapse gives every new account its localpart as display name, we give none (both
    // allowed): the scenario sets one on both, before any room, so that member events and
    // heroes carry it the same way.
    let path = format!("/profile/{}/displayname", encode(&session.user_id));
    let name = format!("{role} {}", role.to_uppercase());
    ok("a display name", session.put(&path, &json!({"displayname": name})).await).await;
    session
}

async fn ok(what: &str, (status, answer): (u16, Value)) -> Value {
    assert_eq!(status, 200, "{what}: {answer}");
    answer
}

impl World {
    /// The scenario, on the server at `base` named `server_name`.
    async fn build(base: &str, server_name: &str) -> World {
        let mut names = Names::default();
        let alice = user(base, "alice", &mut names, server_name).await;
        let bob = user(base, "bob", &mut names, server_name).await;
        let carol = user(base, "carol", &mut names, server_name).await;
        let dave = user(base, "dave", &mut names, server_name).await;
        let erin = user(base, "erin", &mut names, server_name).await;
        let mut world = World {
            server_name: server_name.to_owned(),
            alice,
            bob,
            carol,
            dave,
            erin,
            rooms: BTreeMap::new(),
            readers: BTreeMap::new(),
            names,
        };
        world.scenario().await;
        world.names.add(server_name, "SERVER".to_owned());
        world.name_events().await;
        world
    }

    async fn create(&mut self, role: &'static str, creator: &Session, body: Value) -> String {
        let id = creator.create_room(&body).await;
        self.names.add(&id, format!("!{role}"));
        self.rooms.insert(role, id.clone());
        self.readers.insert(role, creator.clone());
        id
    }

    fn room(&self, role: &str) -> &str {
        self.rooms.get(role).unwrap_or_else(|| panic!("no room {role}"))
    }

    async fn scenario(&mut self) {
        let (alice, bob, carol, dave, erin) = (
            self.alice.clone(),
            self.bob.clone(),
            self.carol.clone(),
            self.dave.clone(),
            self.erin.clone(),
        );
        let server = self.server_name.clone();

        // A space with two children; the oldest rooms.
        let space = self
            .create(
                "space",
                &alice,
                json!({"preset": "public_chat", "name": "Space",
                       "creation_content": {"type": "m.space"}}),
            )
            .await;
        for child in ["child_a", "child_b"] {
            let id = self
                .create(
                    child,
                    &alice,
                    json!({"preset": "public_chat", "name": child,
                                              "topic": format!("the {child} topic")}),
                )
                .await;
            let path = format!("/rooms/{}/state/m.space.child/{}", encode(&space), encode(&id));
            ok("a space child", alice.put(&path, &json!({"via": [server]})).await).await;
        }
        alice.send_text(self.room("child_a"), "in the first child").await;

        // An encrypted room bob joined, with an encrypted message from him.
        let encrypted = self
            .create(
                "encrypted",
                &alice,
                json!({"preset": "private_chat", "name": "Secret", "invite": [bob.user_id],
                       "initial_state": [{"type": "m.room.encryption", "state_key": "",
                                          "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
            )
            .await;
        bob.join(&encrypted, &[]).await;
        let path = format!("/rooms/{}/send/m.room.encrypted/{}", encode(&encrypted), "enc1");
        let content = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnAc",
                             "sender_key": "senderkey", "session_id": "session",
                             "device_id": bob.device_id});
        ok("an encrypted message", bob.put(&path, &content).await).await;

        // A group: carol invited, dave joined and left, erin joined and kicked, a rename.
        let group = self
            .create("group", &alice, json!({"preset": "public_chat", "name": "Old name"}))
            .await;
        for member in [&dave, &erin] {
            member.join(&group, &[]).await;
        }
        dave.send_text(&group, "dave was here").await;
        ok("dave leaves", dave.post(&format!("/rooms/{}/leave", encode(&group)), &json!({})).await)
            .await;
        ok(
            "erin kicked",
            alice
                .post(
                    &format!("/rooms/{}/kick", encode(&group)),
                    &json!({"user_id": erin.user_id, "reason": "testing"}),
                )
                .await,
        )
        .await;
        ok(
            "carol invited",
            alice
                .post(
                    &format!("/rooms/{}/invite", encode(&group)),
                    &json!({"user_id": carol.user_id}),
                )
                .await,
        )
        .await;
        let path = format!("/rooms/{}/state/m.room.name/", encode(&group));
        ok("the rename", alice.put(&path, &json!({"name": "New name"})).await).await;
        alice.send_text(&group, "renamed").await;

        // A room alice left herself, and one she was kicked from.
        let abandoned = self
            .create("abandoned", &bob, json!({"preset": "public_chat", "name": "Abandoned"}))
            .await;
        alice.join(&abandoned, &[]).await;
        bob.send_text(&abandoned, "before alice left").await;
        ok(
            "alice leaves",
            alice.post(&format!("/rooms/{}/leave", encode(&abandoned)), &json!({})).await,
        )
        .await;
        let kicked =
            self.create("kicked", &bob, json!({"preset": "public_chat", "name": "Kicked"})).await;
        alice.join(&kicked, &[]).await;
        ok(
            "alice kicked",
            bob.post(
                &format!("/rooms/{}/kick", encode(&kicked)),
                &json!({"user_id": alice.user_id}),
            )
            .await,
        )
        .await;

        // A room of bob's alice never saw.
        let private = self
            .create("private", &bob, json!({"preset": "private_chat", "name": "Bob only"}))
            .await;
        bob.send_text(&private, "not for alice").await;

        // An invite to alice.
        self.create(
            "invite",
            &bob,
            json!({"preset": "private_chat", "name": "Come in", "invite": [alice.user_id]}),
        )
        .await;

        // The DM, the most recent room: no name (heroes), in alice's m.direct.
        let dm = self
            .create(
                "dm",
                &alice,
                json!({"preset": "trusted_private_chat", "is_direct": true,
                       "invite": [bob.user_id]}),
            )
            .await;
        bob.join(&dm, &[]).await;
        let path = format!("/user/{}/account_data/m.direct", encode(&alice.user_id));
        ok("m.direct", alice.put(&path, &json!({bob.user_id.clone(): [dm]})).await).await;
        alice.send_text(&dm, "hello bob").await;
        let last = bob.send_text(&dm, "hello alice").await;

        // Tags and account data.
        let tag = |room: &str, tag: &str| {
            format!("/user/{}/rooms/{}/tags/{tag}", encode(&alice.user_id), encode(room))
        };
        ok(
            "a favourite",
            alice.put(&tag(self.room("child_a"), "m.favourite"), &json!({"order": 0.5})).await,
        )
        .await;
        ok("a user tag", alice.put(&tag(&group, "u.work"), &json!({})).await).await;
        let path = format!("/user/{}/account_data/org.example.setting", encode(&alice.user_id));
        ok("global account data", alice.put(&path, &json!({"on": true})).await).await;
        let path = format!(
            "/user/{}/rooms/{}/account_data/org.example.note",
            encode(&alice.user_id),
            encode(&dm)
        );
        ok("room account data", alice.put(&path, &json!({"text": "a note"})).await).await;

        // Alice's read receipt on bob's last message.
        let path = format!("/rooms/{}/receipt/m.read/{}", encode(&dm), encode(&last));
        ok("alice's receipt", alice.post(&path, &json!({})).await).await;
    }

    /// Names every event of every room by its room, type, state key and rank among events
    /// of that type and state key (`$dm:m.room.member:@bob:1`), from the history the room's
    /// creator reads; again after each action, so that new events are named too.
    async fn name_events(&mut self) {
        for (role, room) in &self.rooms {
            let reader = &self.readers[role];
            let path = format!("/rooms/{}/messages?dir=f&limit=1000", encode(room));
            let answer = ok("the room's history", reader.get(&path).await).await;
            let mut seen: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
            for event in answer["chunk"].as_array().into_iter().flatten() {
                let (Some(id), Some(kind)) = (event["event_id"].as_str(), event["type"].as_str())
                else {
                    continue;
                };
                let state_key = event["state_key"].as_str().map(|k| self.names.text(k));
                let rank = seen.entry((kind.to_owned(), state_key.clone())).or_insert(0);
                let placeholder = match &state_key {
                    Some(key) => format!("${role}:{kind}:{key}:{rank}"),
                    None => format!("${role}:{kind}:{rank}"),
                };
                *rank += 1;
                self.names.add(id, placeholder);
            }
        }
    }

    /// A sliding sync request of alice's; answers the status and the answer.
    async fn sync_status(&self, pos: Option<&str>, body: &Value) -> (u16, Value) {
        let mut url = format!("{}{SLIDING_SYNC}?timeout=0", self.alice.base);
        if let Some(pos) = pos {
            url.push_str("&pos=");
            url.push_str(&encode(pos));
        }
        request(&self.alice.http, reqwest::Method::POST, &url, Some(&self.alice.token), Some(body))
            .await
    }

    /// A sliding sync request of alice's that must succeed; answers the answer.
    async fn sync(&self, pos: Option<&str>, body: &Value) -> Value {
        let (status, answer) = self.sync_status(pos, body).await;
        assert_eq!(status, 200, "sliding sync at {}: {body}\nanswered {answer}", self.alice.base);
        answer
    }
}

/// The requests, with the actions between them; answers each step's name and its
/// normalised answer.
async fn run(world: &mut World) -> Vec<(String, Value)> {
    let mut steps = Vec::new();
    let filters_list = |filters: Value| json!({"ranges": [[0, 19]], "required_state": [], "timeline_limit": 0, "filters": filters});

    // The first screen: one list over every room, recency order.
    let main = json!({"conn_id": "main", "lists": {
        "all": {"ranges": [[0, 19]], "required_state": main_required_state(), "timeline_limit": 3},
        "recent": {"ranges": [[0, 3]], "required_state": main_required_state(),
                   "timeline_limit": 3}}});
    let initial = world.sync(None, &main).await;
    steps.push(("initial".to_owned(), normalise(&world.names, &initial)));

    // Wildcards: every state event of the three most recent rooms; every member of all.
    let body = json!({"conn_id": "wildcards", "lists": {
        "top": {"ranges": [[0, 2]], "required_state": [["*", "*"]], "timeline_limit": 1}}});
    steps.push((
        "state_wildcard".to_owned(),
        normalise(&world.names, &world.sync(None, &body).await),
    ));
    let body = json!({"conn_id": "members", "lists": {
        "all": {"ranges": [[0, 19]], "required_state": [["m.room.member", "*"]],
                "timeline_limit": 0}}});
    steps.push((
        "member_wildcard".to_owned(),
        normalise(&world.names, &world.sync(None, &body).await),
    ));

    // Every filter, each its own list.
    let space = world.room("space").to_owned();
    let body = json!({"conn_id": "filters", "lists": {
        "dms": filters_list(json!({"is_dm": true})),
        "not_dms": filters_list(json!({"is_dm": false})),
        "invites": filters_list(json!({"is_invite": true})),
        "not_invites": filters_list(json!({"is_invite": false})),
        "encrypted": filters_list(json!({"is_encrypted": true})),
        "not_encrypted": filters_list(json!({"is_encrypted": false})),
        "spaces": filters_list(json!({"room_types": ["m.space"]})),
        "not_spaces": filters_list(json!({"not_room_types": ["m.space"]})),
        "untyped": filters_list(json!({"room_types": [null]})),
        "favourites": filters_list(json!({"tags": ["m.favourite"]})),
        "not_favourites": filters_list(json!({"not_tags": ["m.favourite"]})),
    }});
    steps.push(("filters".to_owned(), normalise(&world.names, &world.sync(None, &body).await)));
    // The spaces filter alone: Synapse does not implement it (see KEPT).
    let body = json!({"conn_id": "spaces", "lists": {
        "in_space": filters_list(json!({"spaces": [space]}))}});
    let (status, answer) = world.sync_status(None, &body).await;
    steps.push((
        "spaces_filter".to_owned(),
        json!({"status": status, "answer": normalise(&world.names, &answer)}),
    ));

    // Room subscriptions: a room in a list, the room alice left, one she was never in.
    let sub = json!({"required_state": [["m.room.topic", ""], ["m.room.member", "*"]],
                     "timeline_limit": 2});
    let body = json!({"conn_id": "subscriptions", "room_subscriptions": {
        world.room("child_b"): sub, world.room("abandoned"): sub, world.room("private"): sub}});
    steps.push((
        "subscriptions".to_owned(),
        normalise(&world.names, &world.sync(None, &body).await),
    ));

    // Incremental: bob's new message in the DM, then nothing new.
    let pos = initial["pos"].as_str().expect("a pos").to_owned();
    let sent = world.bob.send_text(world.room("dm"), "something new").await;
    let encrypted = world.room("encrypted").to_owned();
    world.bob.send_text(&encrypted, "in the encrypted room").await;
    world.name_events().await;
    assert!(world.names.exact.contains_key(&sent));
    let incremental = world.sync(Some(&pos), &main).await;
    steps.push(("incremental".to_owned(), normalise(&world.names, &incremental)));
    let pos = incremental["pos"].as_str().expect("a pos").to_owned();
    let nothing = world.sync(Some(&pos), &main).await;
    steps.push(("incremental_nothing_new".to_owned(), normalise(&world.names, &nothing)));

    // A larger timeline_limit on the same connection.
    let pos = nothing["pos"].as_str().unwrap_or(&pos).to_owned();
    let expanded = json!({"conn_id": "main", "lists": {
        "all": {"ranges": [[0, 19]], "required_state": main_required_state(), "timeline_limit": 10},
        "recent": {"ranges": [[0, 3]], "required_state": main_required_state(),
                   "timeline_limit": 10}}});
    steps.push((
        "timeline_expanded".to_owned(),
        normalise(&world.names, &world.sync(Some(&pos), &expanded).await),
    ));

    // Extensions: a to-device message, keys, typing and a receipt first.
    let (alice, bob) = (world.alice.clone(), world.bob.clone());
    let dm = world.room("dm").to_owned();
    let to_device =
        |n: u32| json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"n": n}}}});
    ok("to-device", bob.put("/sendToDevice/org.example.ping/ping1", &to_device(1)).await).await;
    let keys = json!({
        "one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "otk1", "signatures": {}},
                          "signed_curve25519:AAAAAg": {"key": "otk2", "signatures": {}}},
        "fallback_keys": {"signed_curve25519:AAAAAw": {"key": "fb1", "fallback": true,
                                                        "signatures": {}}}});
    ok("alice's keys", alice.post("/keys/upload", &keys).await).await;
    let path = format!("/rooms/{}/typing/{}", encode(&dm), encode(&bob.user_id));
    ok("bob types", bob.put(&path, &json!({"typing": true, "timeout": 30000})).await).await;
    let last = world.names.exact.iter().find(|(_, p)| p.as_str() == "$dm:m.room.message:0");
    let (alice_message, _) = last.expect("alice's DM message");
    let path = format!("/rooms/{}/receipt/m.read/{}", encode(&dm), encode(alice_message));
    ok("bob's receipt", bob.post(&path, &json!({})).await).await;
    let extensions = json!({"to_device": {"enabled": true, "limit": 10},
                            "e2ee": {"enabled": true},
                            "account_data": {"enabled": true},
                            "receipts": {"enabled": true},
                            "typing": {"enabled": true}});
    let body = json!({"conn_id": "extensions", "lists": {"all": {
        "ranges": [[0, 19]], "required_state": [], "timeline_limit": 1}},
        "extensions": extensions});
    let first = world.sync(None, &body).await;
    steps.push(("extensions".to_owned(), normalise(&world.names, &first)));

    // Then: another to-device message (the first acknowledged by `since`), bob's new device
    // keys, typing stopped, a new receipt and new account data.
    ok("to-device", bob.put("/sendToDevice/org.example.ping/ping2", &to_device(2)).await).await;
    let device_keys = json!({"device_keys": {
        "user_id": bob.user_id, "device_id": bob.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{}", bob.device_id): "bobcurve",
                 format!("ed25519:{}", bob.device_id): "bobed"},
        "signatures": {}}});
    ok("bob's device keys", bob.post("/keys/upload", &device_keys).await).await;
    ok("bob stops typing", bob.put(&path_typing(&dm, &bob), &json!({"typing": false})).await).await;
    let newest = bob.send_text(&dm, "read this").await;
    world.name_events().await;
    let path = format!("/rooms/{}/receipt/m.read/{}", encode(&dm), encode(&newest));
    ok("alice's receipt", alice.post(&path, &json!({})).await).await;
    let path = format!("/user/{}/account_data/org.example.setting", encode(&alice.user_id));
    ok("global account data", alice.put(&path, &json!({"on": false})).await).await;
    let mut body = body;
    let since = first["extensions"]["to_device"]["next_batch"].clone();
    body["extensions"]["to_device"]["since"] = since;
    let pos = first["pos"].as_str().expect("a pos").to_owned();
    let second = world.sync(Some(&pos), &body).await;
    steps.push(("extensions_incremental".to_owned(), normalise(&world.names, &second)));
    steps
}

fn path_typing(room: &str, session: &Session) -> String {
    format!("/rooms/{}/typing/{}", encode(room), encode(&session.user_id))
}

/// The answer with ids replaced by placeholders, timestamps and tokens by their kind,
/// bump stamps by their rank in the answer (their order is what both servers must agree on),
/// and the arrays whose order carries no meaning sorted.
fn normalise(names: &Names, answer: &Value) -> Value {
    let mut stamps: Vec<u64> = answer["rooms"]
        .as_object()
        .into_iter()
        .flat_map(|rooms| rooms.values())
        .filter_map(|room| room["bump_stamp"].as_u64())
        .collect();
    stamps.sort_unstable();
    stamps.dedup();
    let mut value = replace(names, answer, &[], &stamps);
    sort_unordered(&mut value, &mut Vec::new());
    sort_whole_lists(&mut value);
    value
}

/// Sorts the room ids of a list whose one range covers it whole: Synapse does not sort those
/// (an optimisation: the client has every room and its `bump_stamp`), so their order is
/// arbitrary there. The order is compared on lists whose range is shorter than the list.
fn sort_whole_lists(answer: &mut Value) {
    let Some(lists) = answer.get_mut("lists").and_then(Value::as_object_mut) else { return };
    for list in lists.values_mut() {
        let count = list["count"].as_u64().unwrap_or(0);
        let Some(ops) = list.get_mut("ops").and_then(Value::as_array_mut) else { continue };
        if ops.len() != 1 {
            continue;
        }
        let op = &mut ops[0];
        let whole =
            op["range"][0] == 0 && op["range"][1].as_u64().is_some_and(|end| end + 1 >= count);
        if let (true, Some(ids)) = (whole, op.get_mut("room_ids").and_then(Value::as_array_mut)) {
            ids.sort_by_key(Value::to_string);
        }
    }
}

fn replace(names: &Names, value: &Value, path: &[String], stamps: &[u64]) -> Value {
    let key = path.last().map(String::as_str);
    match value {
        Value::String(text) => match key {
            Some("pos" | "prev_batch" | "next_batch" | "since") => json!("<token>"),
            // Each run's own transaction ids (the scenario's are unique per run).
            Some("transaction_id") => json!("<txn>"),
            _ => Value::String(names.text(text)),
        },
        Value::Number(number) => match key {
            Some("origin_server_ts" | "ts" | "age") => json!("<time>"),
            Some("bump_stamp") => {
                let rank = number.as_u64().and_then(|n| stamps.iter().position(|s| *s == n));
                json!(format!("<bump rank {}>", rank.map_or("?".to_owned(), |r| r.to_string())))
            }
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| {
                    let mut path = path.to_vec();
                    path.push("[]".to_owned());
                    replace(names, item, &path, stamps)
                })
                .collect(),
        ),
        Value::Object(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let mut path = path.to_vec();
                path.push(k.clone());
                out.insert(names.text(k), replace(names, v, &path, stamps));
            }
            Value::Object(out)
        }
        _ => value.clone(),
    }
}

/// Sorts the arrays whose order is not part of the answer: `required_state` and
/// `invite_state` (a set of state events), account data (a set of types), device lists.
fn sort_unordered(value: &mut Value, path: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for item in items.iter_mut() {
                path.push("[]".to_owned());
                sort_unordered(item, path);
                path.pop();
            }
            let key = path.last().map(String::as_str);
            let within_account_data = path.iter().any(|p| p == "account_data");
            if matches!(key, Some("required_state" | "invite_state" | "changed" | "left"))
                || within_account_data
            {
                items.sort_by_key(|item| {
                    (
                        item["type"].as_str().unwrap_or_default().to_owned(),
                        item["state_key"].as_str().unwrap_or_default().to_owned(),
                        item.to_string(),
                    )
                });
            }
        }
        Value::Object(entries) => {
            for (k, v) in entries.iter_mut() {
                path.push(k.clone());
                sort_unordered(v, path);
                path.pop();
            }
        }
        _ => {}
    }
}

/// One place where two answers differ.
#[derive(Debug, Clone, PartialEq)]
struct Difference {
    path: Vec<String>,
    ours: Option<Value>,
    theirs: Option<Value>,
}

impl Difference {
    fn show(&self, ours: &str, theirs: &str) -> String {
        let side = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_owned(), compact);
        format!(
            "{}\n    {ours}: {}\n    {theirs}: {}",
            self.path.join("."),
            side(&self.ours),
            side(&self.theirs)
        )
    }
}

fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 400 { format!("{}… ({} bytes)", &text[..400], text.len()) } else { text }
}

/// Every place where `ours` and `theirs` differ: object entries by key, arrays by index.
fn diff(
    ours: Option<&Value>,
    theirs: Option<&Value>,
    path: &mut Vec<String>,
    out: &mut Vec<Difference>,
) {
    match (ours, theirs) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                path.push(key.clone());
                diff(a.get(key), b.get(key), path, out);
                path.pop();
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => match event_keys(a, b) {
            // Events: matched by id (or type and state key), so that one event more on one
            // side shows as that event, not as every later index differing.
            Some((keys_a, keys_b)) => {
                let mut keys: Vec<&String> = keys_a.iter().collect();
                keys.extend(keys_b.iter().filter(|k| !keys_a.contains(k)));
                for key in keys {
                    let find = |keys: &[String], items: &[Value]| {
                        keys.iter().position(|k| k == key).map(|i| items[i].clone())
                    };
                    path.push(key.clone());
                    diff(find(&keys_a, a).as_ref(), find(&keys_b, b).as_ref(), path, out);
                    path.pop();
                }
                let common_a: Vec<&String> = keys_a.iter().filter(|k| keys_b.contains(k)).collect();
                let common_b: Vec<&String> = keys_b.iter().filter(|k| keys_a.contains(k)).collect();
                if common_a != common_b {
                    path.push("(order)".to_owned());
                    out.push(Difference {
                        path: path.clone(),
                        ours: Some(json!(common_a)),
                        theirs: Some(json!(common_b)),
                    });
                    path.pop();
                }
            }
            _ => {
                for i in 0..a.len().max(b.len()) {
                    path.push(i.to_string());
                    diff(a.get(i), b.get(i), path, out);
                    path.pop();
                }
            }
        },
        (a, b) if a == b => {}
        (a, b) => out.push(Difference { path: path.clone(), ours: a.cloned(), theirs: b.cloned() }),
    }
}

/// The keys of two arrays of events: each event's id when every one on both sides has an
/// id, else each one's type and state key (stripped state) when every one has a type;
/// `None` for other arrays (or an empty one).
fn event_keys(a: &[Value], b: &[Value]) -> Option<(Vec<String>, Vec<String>)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let ids = |items: &[Value]| -> Option<Vec<String>> {
        items.iter().map(|item| item["event_id"].as_str().map(str::to_owned)).collect()
    };
    let types = |items: &[Value]| -> Option<Vec<String>> {
        items
            .iter()
            .map(|item| {
                let kind = item["type"].as_str()?;
                Some(format!("{kind}|{}", item["state_key"].as_str().unwrap_or("-")))
            })
            .collect()
    };
    match (ids(a), ids(b)) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => Some((types(a)?, types(b)?)),
    }
}

/// Whether `path` matches `pattern` (`*`: one segment; `**`: any run of segments).
fn matches(pattern: &[&str], path: &[String]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            matches(&pattern[1..], path) || (!path.is_empty() && matches(pattern, &path[1..]))
        }
        (Some(p), Some(s)) => (*p == "*" || p == s) && matches(&pattern[1..], &path[1..]),
        _ => false,
    }
}

/// Why a difference is kept, if it is.
fn kept(difference: &Difference) -> Option<&'static str> {
    KEPT.iter()
        .find(|kept| matches(kept.pattern, &difference.path) && (kept.when)(difference))
        .map(|kept| kept.why)
}

/// Compares two runs step by step; answers the report of every difference not kept (empty
/// when they agree) and writes both sides' answers under `$TMPDIR/sliding-sync-diff/<test>/`.
fn compare(
    test: &str,
    (ours_name, ours): (&str, &[(String, Value)]),
    (theirs_name, theirs): (&str, &[(String, Value)]),
) -> String {
    let dir = std::env::temp_dir().join("sliding-sync-diff").join(test);
    let _ = std::fs::create_dir_all(&dir);
    let mut kept_count = BTreeMap::<&str, usize>::new();
    let mut left = Vec::new();
    for ((step, a), (step_b, b)) in ours.iter().zip(theirs) {
        assert_eq!(step, step_b);
        for (side, value) in [(ours_name, a), (theirs_name, b)] {
            let text = serde_json::to_string_pretty(value).unwrap_or_default();
            let _ = std::fs::write(dir.join(format!("{step}.{side}.json")), text);
        }
        let mut differences = Vec::new();
        diff(Some(a), Some(b), &mut vec![step.clone()], &mut differences);
        for difference in differences {
            match kept(&difference) {
                Some(why) => *kept_count.entry(why).or_default() += 1,
                None => left.push(difference),
            }
        }
    }
    for (why, count) in kept_count {
        eprintln!("kept on purpose ({count} places): {why}");
    }
    if left.is_empty() {
        return String::new();
    }
    let mut all = String::new();
    for difference in &left {
        let _ = writeln!(all, "{}", difference.show(ours_name, theirs_name));
    }
    let _ = std::fs::write(dir.join("differences.txt"), &all);
    // The report: the differences grouped by where they are (rooms, events and indexes left
    // out), each group with its steps and its first place.
    let mut groups: BTreeMap<String, (BTreeSet<&str>, Vec<&Difference>)> = BTreeMap::new();
    for difference in &left {
        let (step, rest) = difference.path.split_first().expect("a step");
        let shape: Vec<&str> = rest
            .iter()
            .map(|segment| {
                let varying = segment.starts_with(['!', '$'])
                    || segment.contains('|')
                    || segment.parse::<usize>().is_ok();
                if varying { "*" } else { segment.as_str() }
            })
            .collect();
        let group = groups.entry(shape.join(".")).or_default();
        group.0.insert(step);
        group.1.push(difference);
    }
    let mut report = String::new();
    for (shape, (steps, differences)) in &groups {
        let steps: Vec<&str> = steps.iter().copied().collect();
        let _ = writeln!(
            report,
            "{} place(s) at {shape} (steps: {}); the first:\n  {}",
            differences.len(),
            steps.join(", "),
            differences[0].show(ours_name, theirs_name).replace('\n', "\n  ")
        );
    }
    let _ = write!(
        report,
        "{} differences in {} groups; each one in {}, both sides' answers beside it",
        left.len(),
        groups.len(),
        dir.join("differences.txt").display()
    );
    report
}

#[tokio::test]
async fn sliding_sync_agrees_with_synapse() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let mut theirs_world = World::build(&synapse.client_url, &synapse.server_name).await;
    let mut our_world = World::build(&ours.client_url, &ours.server_name).await;
    let theirs = run(&mut theirs_world).await;
    let mine = run(&mut our_world).await;
    let report = compare("ours_vs_synapse", ("ours", &mine), ("synapse", &theirs));
    // What Synapse cannot be compared on: the spaces filter lists the space's children.
    let spaces = &mine.iter().find(|(step, _)| step == "spaces_filter").expect("the step").1;
    let ids = &spaces["answer"]["lists"]["in_space"]["ops"][0]["room_ids"];
    let mut ids: Vec<&str> =
        ids.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    ids.sort_unstable();
    assert_eq!((&spaces["status"], ids), (&json!(200), vec!["!child_a", "!child_b"]), "{spaces}");
    assert!(report.is_empty(), "sliding sync answers differ from Synapse's:\n{report}");
}

/// The scenario twice on Synapse: after normalisation the answers are the same, so what the
/// comparison with ours finds is a difference of servers, not of runs.
#[tokio::test]
async fn two_synapse_runs_agree_once_normalised() {
    let Some(synapse) = Synapse::from_env() else { return };
    let mut first = World::build(&synapse.client_url, &synapse.server_name).await;
    let mut second = World::build(&synapse.client_url, &synapse.server_name).await;
    let first = run(&mut first).await;
    let second = run(&mut second).await;
    let report = compare("synapse_vs_synapse", ("first", &first), ("second", &second));
    assert!(report.is_empty(), "two runs on Synapse differ:\n{report}");
}

#[test]
fn diff_reports_each_differing_leaf_with_its_path() {
    let a = json!({"rooms": {"!dm": {"name": "x", "timeline": [1, 2]}}, "only_a": true});
    let b = json!({"rooms": {"!dm": {"name": "y", "timeline": [1]}}});
    let mut out = Vec::new();
    diff(Some(&a), Some(&b), &mut Vec::new(), &mut out);
    let paths: Vec<String> = out.iter().map(|d| d.path.join(".")).collect();
    assert_eq!(paths, ["only_a", "rooms.!dm.name", "rooms.!dm.timeline.1"]);
    assert_eq!(out[1].ours, Some(json!("x")));
    assert_eq!(out[1].theirs, Some(json!("y")));
    assert_eq!(out[2].theirs, None);
}

#[test]
fn patterns_match_segments_and_runs() {
    let path: Vec<String> = ["rooms", "!dm", "timeline", "0", "unsigned", "membership"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert!(matches(&["rooms", "*", "timeline", "*", "unsigned", "membership"], &path));
    assert!(matches(&["**", "membership"], &path));
    assert!(matches(&["rooms", "**"], &path));
    assert!(!matches(&["rooms", "*", "timeline"], &path));
    assert!(!matches(&["**", "age"], &path));
}

#[test]
fn normalise_names_ids_ranks_stamps_and_sorts_state() {
    let mut names = Names::default();
    names.add("@al_1:127.0.0.1:9", "@alice".to_owned());
    names.add("127.0.0.1:9", "SERVER".to_owned());
    names.add("!abc", "!dm".to_owned());
    let answer = json!({"pos": "s1_2", "rooms": {
        "!abc": {"bump_stamp": 70, "required_state": [
            {"type": "m.room.name", "state_key": "", "origin_server_ts": 5},
            {"type": "m.room.member", "state_key": "@al_1:127.0.0.1:9"}]},
        "!other": {"bump_stamp": 12, "name": "a room of 127.0.0.1:9"}}});
    let normalised = normalise(&names, &answer);
    assert_eq!(
        normalised,
        json!({"pos": "<token>", "rooms": {
            "!dm": {"bump_stamp": "<bump rank 1>", "required_state": [
                {"type": "m.room.member", "state_key": "@alice"},
                {"type": "m.room.name", "state_key": "", "origin_server_ts": "<time>"}]},
            "!other": {"bump_stamp": "<bump rank 0>", "name": "a room of SERVER"}}})
    );
}

#[test]
fn events_are_matched_by_id_and_their_order_compared() {
    let event = |id: &str| json!({"event_id": id, "type": "m.room.message"});
    let a = json!([event("$1"), event("$2"), event("$3")]);
    let b = json!([event("$1"), event("$3")]);
    let mut out = Vec::new();
    diff(Some(&a), Some(&b), &mut Vec::new(), &mut out);
    assert_eq!(
        out,
        [Difference { path: vec!["$2".to_owned()], ours: Some(event("$2")), theirs: None }]
    );

    let b = json!([event("$3"), event("$1"), event("$2")]);
    let mut out = Vec::new();
    diff(Some(&a), Some(&b), &mut Vec::new(), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].path, ["(order)"]);
    assert_eq!(out[0].ours, Some(json!(["$1", "$2", "$3"])));

    // Stripped state (no ids on one side) is matched by type and state key.
    let a = json!([{"type": "m.room.name", "state_key": "", "event_id": "$n", "content": {}}]);
    let b = json!([{"type": "m.room.name", "state_key": "", "content": {}}]);
    let mut out = Vec::new();
    diff(Some(&a), Some(&b), &mut Vec::new(), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].path, ["m.room.name|", "event_id"]);
}

#[test]
fn kept_differences_need_their_place_and_their_condition() {
    let place = |path: &[&str]| path.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let counts = Difference {
        path: place(&["initial", "rooms", "!dm", "notification_count"]),
        ours: Some(json!(1)),
        theirs: Some(json!(0)),
    };
    assert!(kept(&counts).is_some());
    let empty = Difference {
        path: place(&["extensions", "extensions", "account_data", "rooms", "!dm"]),
        ours: None,
        theirs: Some(json!([])),
    };
    assert!(kept(&empty).is_some());
    let not_empty = Difference { theirs: Some(json!([{"type": "x"}])), ..empty };
    assert!(kept(&not_empty).is_none(), "account data Synapse has and we do not is not kept");
    let name = Difference {
        path: place(&["initial", "rooms", "!dm", "name"]),
        ours: None,
        theirs: Some(json!("x")),
    };
    assert!(kept(&name).is_none());
}
