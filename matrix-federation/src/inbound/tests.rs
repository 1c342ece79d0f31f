//! The checks on received PDUs, with events built and signed here: a room of version 11 on
//! three servers (`@alice:a.example` created it, `@bob:b.example` joined, `@carol:c.example`
//! is not in it), and forged variations.

use std::sync::Mutex;

use matrix_core::json;
use matrix_core::signing::{SigningKey, hash_and_sign_event};
use serde_json::{Value as J, json};

use super::*;
use crate::keys::StaticKeys;

const ALICE: &str = "@alice:a.example";
const BOB: &str = "@bob:b.example";
const CAROL: &str = "@carol:c.example";
const ROOM: &str = "!room:a.example";

fn key(server: &str) -> SigningKey {
    let seed = match server {
        "a.example" => 1,
        "b.example" => 2,
        _ => 3,
    };
    SigningKey::from_seed("1", &[seed; 32])
}

fn keys() -> StaticKeys {
    let mut keys = StaticKeys::default();
    for server in ["a.example", "b.example", "c.example"] {
        keys.insert(server, key(server).key_id(), key(server).public_key());
    }
    keys
}

fn object(value: J) -> Object {
    let bytes = serde_json::to_vec(&value).expect("serialises");
    json::parse_lenient(&bytes).expect("parses").as_object().cloned().expect("an object")
}

fn server_of(user: &str) -> &str {
    user.split_once(':').map(|(_, server)| server).expect("a user id")
}

/// A room, as the homeserver would answer for it.
#[derive(Debug)]
struct Room {
    rules: &'static RoomVersionRules,
    room_id: String,
    events: HashMap<String, KnownEvent>,
    state_after: HashMap<String, StateIds>,
    current: StateIds,
    depth: i64,
}

impl Room {
    fn new(rules: &'static RoomVersionRules) -> Self {
        Room {
            rules,
            room_id: ROOM.to_owned(),
            events: HashMap::new(),
            state_after: HashMap::new(),
            current: StateIds::new(),
            depth: 0,
        }
    }

    /// An event signed by its sender's server (not added to the room).
    fn build(
        &mut self,
        kind: &str,
        state_key: Option<&str>,
        sender: &str,
        content: J,
        auth: &[&str],
        prev: &[&str],
    ) -> Object {
        self.depth += 1;
        let mut event = object(json!({
            "type": kind,
            "sender": sender,
            "content": content,
            "origin_server_ts": 1_000 + self.depth,
            "depth": self.depth,
            "auth_events": auth,
            "prev_events": prev,
        }));
        if let Some(state_key) = state_key {
            event.insert("state_key", state_key);
        }
        if !(self.rules.room_id_from_create_event && kind == "m.room.create") {
            event.insert("room_id", self.room_id.as_str());
        }
        hash_and_sign_event(&mut event, server_of(sender), &key(server_of(sender)), self.rules);
        event
    }

    /// Adds an accepted event, its state after being the state after its first prev event
    /// plus itself; it becomes the current state.
    fn add(&mut self, event: &Object) -> String {
        let pdu = Pdu::from_object(event.clone(), self.rules).expect("valid");
        let id = pdu.event_id().to_owned();
        if pdu.kind() == "m.room.create" && self.rules.room_id_from_create_event {
            self.room_id = pdu.room_id().to_owned();
        }
        let mut state =
            pdu.prev_events().next().map(|prev| self.state_after[prev].clone()).unwrap_or_default();
        if let Some(state_key) = pdu.state_key() {
            state.insert((pdu.kind().to_owned(), state_key.to_owned()), id.clone());
        }
        self.current = state.clone();
        self.state_after.insert(id.clone(), state);
        self.events.insert(id.clone(), KnownEvent { pdu, rejected: false });
        id
    }

    fn state_id(&self, kind: &str, state_key: &str) -> String {
        self.current[&(kind.to_owned(), state_key.to_owned())].clone()
    }
}

#[async_trait]
impl RoomContext for Room {
    async fn event(&self, event_id: &str) -> Result<Option<KnownEvent>, FederationError> {
        Ok(self.events.get(event_id).cloned())
    }
    async fn state_after(&self, event_id: &str) -> Result<Option<StateIds>, FederationError> {
        Ok(self.state_after.get(event_id).cloned())
    }
    async fn current_state(&self) -> Result<StateIds, FederationError> {
        Ok(self.current.clone())
    }
    async fn auth_chain(&self, event_ids: &[String]) -> Result<Vec<String>, FederationError> {
        let mut chain: Vec<String> = Vec::new();
        let mut todo: Vec<String> = event_ids.to_vec();
        while let Some(id) = todo.pop() {
            let Some(known) = self.events.get(&id) else { continue };
            for auth in known.pdu.auth_events() {
                if !chain.iter().any(|c| c == auth) {
                    chain.push(auth.to_owned());
                    todo.push(auth.to_owned());
                }
            }
        }
        Ok(chain)
    }
}

/// The ids of the room's setup.
#[derive(Debug)]
struct Setup {
    create: String,
    alice: String,
    power: String,
    rules: String,
    bob: String,
}

/// A version 11 room: create, Alice joins, power levels (Alice 100), public join rules, Bob
/// joins.
fn room() -> (Room, Setup) {
    let mut room = Room::new(&RoomVersionRules::V11);
    let e = room.build("m.room.create", Some(""), ALICE, json!({"room_version": "11"}), &[], &[]);
    let create = room.add(&e);
    let member = json!({"membership": "join"});
    let e = room.build("m.room.member", Some(ALICE), ALICE, member.clone(), &[&create], &[&create]);
    let alice = room.add(&e);
    let levels = json!({"users": {ALICE: 100}});
    let e =
        room.build("m.room.power_levels", Some(""), ALICE, levels, &[&create, &alice], &[&alice]);
    let power = room.add(&e);
    let e = room.build(
        "m.room.join_rules",
        Some(""),
        ALICE,
        json!({"join_rule": "public"}),
        &[&create, &alice, &power],
        &[&power],
    );
    let rules = room.add(&e);
    let e =
        room.build("m.room.member", Some(BOB), BOB, member, &[&create, &power, &rules], &[&rules]);
    let bob = room.add(&e);
    (room, Setup { create, alice, power, rules, bob })
}

async fn check(room: &Room, event: Object) -> Result<PduCheck, CheckError> {
    check_pdu(event, room.rules.id, &keys(), room).await
}

fn message(room: &mut Room, setup: &Setup, sender: &str, prev: &str) -> Object {
    let member = if sender == BOB { setup.bob.as_str() } else { setup.alice.as_str() };
    room.build(
        "m.room.message",
        None,
        sender,
        json!({"body": "hello"}),
        &[&setup.create, &setup.power, member],
        &[prev],
    )
}

fn rejected(outcome: Result<PduCheck, CheckError>) -> Rejection {
    match outcome.expect("decided") {
        PduCheck::Rejected(rejection) => rejection,
        other => panic!("not rejected: {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_message_is_accepted_as_it_was_sent() {
    let (mut room, setup) = room();
    let event = message(&mut room, &setup, BOB, &setup.bob);
    let expected = Pdu::from_object(event.clone(), room.rules).expect("valid");
    assert_eq!(check(&room, event).await.expect("decided"), PduCheck::Accepted(expected));
}

#[tokio::test]
async fn a_bad_signature_drops_the_event() {
    let (mut room, setup) = room();
    let mut event = message(&mut room, &setup, BOB, &setup.bob);
    // `origin_server_ts` is covered by the signature.
    event.insert("origin_server_ts", 5);
    let rejection = rejected(check(&room, event).await);
    assert!(matches!(rejection, Rejection::Signature(VerifyError::BadSignature { .. })));
    assert_eq!(rejection.event(), None, "dropped, not stored");
}

#[tokio::test]
async fn a_signature_by_another_server_than_the_senders_drops_the_event() {
    let (mut room, setup) = room();
    let mut event = message(&mut room, &setup, BOB, &setup.bob);
    event.remove("signatures");
    // Signed by a.example, as a.example: b.example's signature is missing.
    hash_and_sign_event(&mut event, "a.example", &key("a.example"), room.rules);
    let rejection = rejected(check(&room, event.clone()).await);
    assert_eq!(
        rejection,
        Rejection::Signature(VerifyError::NoSignatureFrom { server: "b.example".to_owned() })
    );
    // Signed by a.example's key under b.example's name and key id.
    event.remove("signatures");
    hash_and_sign_event(&mut event, "b.example", &key("a.example"), room.rules);
    let rejection = rejected(check(&room, event).await);
    assert!(matches!(rejection, Rejection::Signature(VerifyError::BadSignature { .. })));
    // Signed by b.example with a key nobody knows.
    let mut event = message(&mut room, &setup, BOB, &setup.bob);
    event.remove("signatures");
    hash_and_sign_event(&mut event, "b.example", &SigningKey::from_seed("2", &[9; 32]), room.rules);
    let rejection = rejected(check(&room, event).await);
    assert!(matches!(rejection, Rejection::Signature(VerifyError::NoSignatureFrom { .. })));
}

#[tokio::test]
async fn a_wrong_content_hash_is_redacted_and_still_accepted() {
    let (mut room, setup) = room();
    let mut event = message(&mut room, &setup, BOB, &setup.bob);
    let id = Pdu::from_object(event.clone(), room.rules).expect("valid").event_id().to_owned();
    // The body is not covered by the signature, only by the content hash.
    event.insert("content", object(json!({"body": "forged"})));
    let PduCheck::Accepted(pdu) = check(&room, event).await.expect("decided") else {
        panic!("accepted")
    };
    assert_eq!(pdu.event_id(), id);
    assert!(pdu.content().is_empty(), "redacted: {:?}", pdu.content());
}

#[tokio::test]
async fn an_event_the_auth_rules_refuse_is_rejected() {
    let (mut room, setup) = room();
    // Carol never joined.
    let event = room.build(
        "m.room.message",
        None,
        CAROL,
        json!({"body": "hi"}),
        &[&setup.create, &setup.power],
        &[&setup.bob],
    );
    let rejection = rejected(check(&room, event).await);
    assert!(matches!(rejection, Rejection::AuthEvents { .. }), "{rejection:?}");
    assert_eq!(rejection.event().map(Pdu::sender), Some(CAROL), "stored as rejected");
    // Auth events the selection algorithm does not pick (join rules, for a message).
    let event = room.build(
        "m.room.message",
        None,
        BOB,
        json!({"body": "hi"}),
        &[&setup.create, &setup.power, &setup.bob, &setup.rules],
        &[&setup.bob],
    );
    let rejection = rejected(check(&room, event).await);
    let Rejection::AuthEvents { reason, .. } = rejection else { panic!("{rejection:?}") };
    assert!(matches!(reason, AuthRejection::UnexpectedAuthEvent(..)));
    // Auth events that do not authorize the event: Bob sets the power levels.
    let event = room.build(
        "m.room.power_levels",
        Some(""),
        BOB,
        json!({"users": {BOB: 100}}),
        &[&setup.create, &setup.power, &setup.bob],
        &[&setup.bob],
    );
    assert!(matches!(rejected(check(&room, event).await), Rejection::AuthEvents { .. }));
}

#[tokio::test]
async fn an_event_citing_a_rejected_auth_event_is_rejected() {
    let (mut room, setup) = room();
    let event = message(&mut room, &setup, BOB, &setup.bob);
    room.events.get_mut(&setup.bob).expect("stored").rejected = true;
    let rejection = rejected(check(&room, event).await);
    assert_eq!(
        rejection,
        Rejection::RejectedAuthEvent {
            event: Box::new(rejection.event().expect("kept").clone()),
            auth_event: setup.bob.clone(),
        }
    );
}

/// Alice bans Bob after his join; returns the ban's id.
fn ban(room: &mut Room, setup: &Setup) -> String {
    let event = room.build(
        "m.room.member",
        Some(BOB),
        ALICE,
        json!({"membership": "ban"}),
        &[&setup.create, &setup.power, &setup.alice, &setup.bob],
        &[&setup.bob],
    );
    room.add(&event)
}

#[tokio::test]
async fn a_banned_user_is_rejected_after_the_ban_and_soft_failed_beside_it() {
    let (mut room, setup) = room();
    let ban = ban(&mut room, &setup);
    // After the ban in the DAG: the state before it has the ban.
    let after = message(&mut room, &setup, BOB, &ban);
    let rejection = rejected(check(&room, after).await);
    let Rejection::StateBefore { reason, .. } = &rejection else { panic!("{rejection:?}") };
    assert_eq!(*reason, AuthRejection::SenderNotJoined);
    assert!(rejection.event().is_some());
    // Beside the ban (citing Bob's join): valid where it is, not in the current state.
    let beside = message(&mut room, &setup, BOB, &setup.bob);
    let outcome = check(&room, beside).await.expect("decided");
    let PduCheck::SoftFailed(pdu, reason) = outcome else { panic!("{outcome:?}") };
    assert_eq!((pdu.sender(), reason), (BOB, AuthRejection::SenderNotJoined));
    // Alice is not affected.
    let alice = message(&mut room, &setup, ALICE, &ban);
    assert!(matches!(check(&room, alice).await.expect("decided"), PduCheck::Accepted(_)));
}

#[tokio::test]
async fn the_state_before_an_event_with_several_prev_events_is_resolved() {
    let (mut room, setup) = room();
    let topic = room.build(
        "m.room.topic",
        Some(""),
        ALICE,
        json!({"topic": "fork"}),
        &[&setup.create, &setup.power, &setup.alice],
        &[&setup.bob],
    );
    let topic = room.add(&topic);
    let ban = ban(&mut room, &setup);
    // Bob cites both forks: the resolved state has the ban.
    let mut event = message(&mut room, &setup, BOB, &ban);
    event
        .insert("prev_events", Value::from(vec![Value::from(topic.as_str()), ban.as_str().into()]));
    event.remove("signatures");
    hash_and_sign_event(&mut event, "b.example", &key("b.example"), room.rules);
    let rejection = rejected(check(&room, event).await);
    let Rejection::StateBefore { reason, .. } = rejection else { panic!("{rejection:?}") };
    assert_eq!(reason, AuthRejection::SenderNotJoined);
    // Alice citing both forks passes; the resolved state keeps the topic.
    let mut event = message(&mut room, &setup, ALICE, &ban);
    event
        .insert("prev_events", Value::from(vec![Value::from(topic.as_str()), ban.as_str().into()]));
    event.remove("signatures");
    hash_and_sign_event(&mut event, "a.example", &key("a.example"), room.rules);
    let pdu = Pdu::from_object(event.clone(), room.rules).expect("valid");
    let before = state_before(&pdu, &room).await.expect("resolved");
    assert_eq!(before.get(&("m.room.topic".to_owned(), String::new())), Some(&topic));
    assert_eq!(before.get(&("m.room.member".to_owned(), BOB.to_owned())), Some(&ban));
    assert!(matches!(check(&room, event).await.expect("decided"), PduCheck::Accepted(_)));
}

#[tokio::test]
async fn what_is_not_known_is_an_error_not_a_verdict() {
    let (mut room, setup) = room();
    let event = room.build(
        "m.room.message",
        None,
        BOB,
        json!({"body": "hi"}),
        &[&setup.create, &setup.power, "$unknown"],
        &[&setup.bob],
    );
    assert!(
        matches!(check(&room, event).await, Err(CheckError::MissingAuthEvent(id)) if id == "$unknown")
    );
    let event = message(&mut room, &setup, BOB, "$unknown");
    assert!(
        matches!(check(&room, event).await, Err(CheckError::MissingState(id)) if id == "$unknown")
    );
}

#[tokio::test]
async fn invalid_events_and_unknown_room_versions_are_dropped() {
    let (mut room, setup) = room();
    let event = message(&mut room, &setup, BOB, &setup.bob);
    let rejection = rejected(check_pdu(event.clone(), "99", &keys(), &room).await);
    assert_eq!(rejection, Rejection::UnknownRoomVersion("99".to_owned()));
    let mut no_depth = event.clone();
    no_depth.remove("depth");
    let rejection = rejected(check(&room, no_depth).await);
    assert_eq!(rejection, Rejection::Format(PduError::MissingField("depth")));
    assert_eq!(rejection.event(), None);
    let mut no_room = event;
    no_room.remove("room_id");
    assert_eq!(
        rejected(check(&room, no_room).await),
        Rejection::Format(PduError::MissingField("room_id"))
    );
    // A float is not valid JSON in room version 6 and later, even signed.
    let mut float = room.build(
        "m.room.message",
        None,
        BOB,
        json!({"body": "x"}),
        &[&setup.create, &setup.power, &setup.bob],
        &[&setup.bob],
    );
    let content = json::parse_lenient(br#"{"n":1.5}"#).expect("lenient");
    float.insert("content", content);
    float.remove("signatures");
    hash_and_sign_event(&mut float, "b.example", &key("b.example"), room.rules);
    assert!(matches!(rejected(check(&room, float).await), Rejection::Format(PduError::Json(_))));
}

/// Keys valid until a time, recording when they were asked for.
#[derive(Debug, Default)]
struct ExpiringKeys {
    until: i64,
    asked: Mutex<Vec<i64>>,
}

#[async_trait]
impl KeyProvider for ExpiringKeys {
    async fn public_key(
        &self,
        server: &str,
        key_id: &str,
        valid_at_ts: i64,
    ) -> Result<Option<matrix_core::PublicKey>, FederationError> {
        self.asked.lock().expect("not poisoned").push(valid_at_ts);
        let key = key(server);
        Ok((key_id == key.key_id() && valid_at_ts <= self.until).then(|| key.public_key()))
    }
}

#[tokio::test]
async fn keys_must_be_valid_when_the_event_was_sent() {
    let (mut room, setup) = room();
    let event = message(&mut room, &setup, BOB, &setup.bob);
    let sent_at = event.get("origin_server_ts").and_then(Value::as_i64).expect("set");
    let expired = ExpiringKeys { until: sent_at - 1, ..ExpiringKeys::default() };
    let outcome = check_pdu(event.clone(), "11", &expired, &room).await;
    assert!(matches!(rejected(outcome), Rejection::Signature(VerifyError::NoSignatureFrom { .. })));
    assert_eq!(*expired.asked.lock().expect("not poisoned"), [sent_at]);
    let valid = ExpiringKeys { until: sent_at, ..ExpiringKeys::default() };
    let outcome = check_pdu(event, "11", &valid, &room).await.expect("decided");
    assert!(matches!(outcome, PduCheck::Accepted(_)));
}

#[tokio::test]
async fn room_version_12_finds_the_create_event_through_the_room_id() {
    let mut room = Room::new(&RoomVersionRules::V12);
    let e = room.build("m.room.create", Some(""), ALICE, json!({"room_version": "12"}), &[], &[]);
    let create = room.add(&e);
    assert_eq!(room.room_id, format!("!{}", &create[1..]));
    let e = room.build(
        "m.room.member",
        Some(ALICE),
        ALICE,
        json!({"membership": "join"}),
        &[],
        &[&create],
    );
    let alice = room.add(&e);
    let event =
        room.build("m.room.message", None, ALICE, json!({"body": "hi"}), &[&alice], &[&alice]);
    assert!(matches!(check(&room, event).await.expect("decided"), PduCheck::Accepted(_)));
    // The create event is never an auth event in version 12.
    let event = room.build(
        "m.room.message",
        None,
        ALICE,
        json!({"body": "hi"}),
        &[&create, &alice],
        &[&alice],
    );
    assert!(matches!(rejected(check(&room, event).await), Rejection::AuthEvents { .. }));
    // Without the create event, nothing can be decided.
    room.events.remove(&create);
    let event =
        room.build("m.room.message", None, ALICE, json!({"body": "hi"}), &[&alice], &[&alice]);
    assert!(
        matches!(check(&room, event).await, Err(CheckError::MissingAuthEvent(id)) if id == create)
    );
    assert_eq!(room.state_id("m.room.member", ALICE), alice);
}
