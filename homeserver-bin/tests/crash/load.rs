//! The mixed load, and the ledger of what the server acknowledged.
//!
//! Each task is one client doing one kind of thing in a loop, one request at a time, until
//! the server dies under it (or its bound runs out). Before a request goes out, what it
//! asks for is written in the ledger as unacknowledged; a 2xx answer read whole marks it
//! acknowledged. So after the kill each task has at most one request whose outcome is
//! unknown (it may or may not have been saved).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{Answer, Cast, Client, urlencode};

/// The most requests one task makes in a round (the kill comes long before).
const MAX_OPS: usize = 5_000;

/// The one-time key algorithm uploaded and claimed.
pub(crate) const OTK: &str = "signed_curve25519";

/// The uploader tops alice's one-time keys up to about this many (as a client does).
const OTK_STOCK: u64 = 40;

/// One-time keys per upload.
const OTK_BATCH: u64 = 5;

/// The to-device event type whose content carries a sequence number.
pub(crate) const SEQ_TYPE: &str = "org.crash.seq";

/// The message content key that carries the transaction id.
pub(crate) const TXN_KEY: &str = "org.crash.txn";

pub(crate) type Shared = Arc<Mutex<Ledger>>;

/// The value a client last set of something it overwrites (a receipt, a display name, its
/// device keys): the last acknowledged one, and those sent after it without an answer.
#[derive(Debug, Clone)]
pub(crate) struct Latest<T> {
    pub(crate) acked: Option<T>,
    pub(crate) unanswered: Vec<T>,
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Latest { acked: None, unanswered: Vec::new() }
    }
}

impl<T: PartialEq> Latest<T> {
    fn sending(&mut self, value: T) {
        self.unanswered.push(value);
    }
    fn acknowledged(&mut self, value: T) {
        self.acked = Some(value);
        self.unanswered.clear();
    }
    /// Whether `found` (what the restarted server has) is allowed: the last acknowledged
    /// value, or one sent after it whose answer never came.
    pub(crate) fn allows(&self, found: Option<&T>) -> bool {
        match found {
            Some(found) => self.acked.as_ref() == Some(found) || self.unanswered.contains(found),
            None => self.acked.is_none(),
        }
    }
    /// What the restarted server has becomes the value to keep.
    pub(crate) fn settle(&mut self, found: Option<T>) {
        self.acked = found;
        self.unanswered.clear();
    }
}

/// A message sent with a transaction id.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// Which messenger sent it (transaction ids are per device): see [`Cast::messenger`].
    pub(crate) by: usize,
    /// The event id of its 200; `None` while unanswered.
    pub(crate) event_id: Option<String>,
}

/// Requests of the round so far.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    acked: u64,
    refused: u64,
    unanswered: u64,
}

/// Why the round's first unanswered request got no answer (the kill, as a rule).
#[derive(Debug, Default)]
struct FirstLoss(Option<String>);

/// Everything the test sent and what became of it, over the whole run.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// The run's counter: every name, key id and sequence number is unique.
    next: u64,
    /// Messages by transaction id.
    pub(crate) messages: BTreeMap<String, Sent>,
    /// The last acknowledged message (what bob's receipts point at).
    last_event: Option<String>,
    /// bob's m.read receipt in the room (an event id).
    pub(crate) receipt: Latest<String>,
    /// bob's display name.
    pub(crate) displayname: Latest<String>,
    /// The number in alice's device keys.
    pub(crate) device_keys: Latest<u64>,
    /// bob's account data: type to (its number, acknowledged).
    pub(crate) account_data: BTreeMap<String, (u64, bool)>,
    /// Aliases bob made for the room: alias to acknowledged.
    pub(crate) aliases: BTreeMap<String, bool>,
    /// alice's one-time key ids: id to whether their upload was acknowledged.
    pub(crate) one_time_keys: BTreeMap<String, bool>,
    /// Every key id a claim answered 200 with.
    pub(crate) claimed: BTreeSet<String>,
    /// Claims that got no 2xx (each may have used a key up).
    pub(crate) claims_unanswered: u64,
    /// ...as many as the last check had seen.
    pub(crate) claims_unanswered_seen: u64,
    /// Acknowledged one-time keys neither claimed nor claimable at the last check (used up
    /// by claims whose answer was lost).
    pub(crate) keys_missing: BTreeSet<String>,
    /// To-device sequence numbers to acknowledged.
    pub(crate) to_device: BTreeMap<u64, bool>,
    /// To-device sequence numbers to how often a sync delivered them.
    pub(crate) delivered: BTreeMap<u64, u32>,
    /// dave's sync token: the `next_batch` of the last sync answered 200.
    pub(crate) since: Option<String>,
    /// What went wrong while it happened (a key handed out twice, a message delivered
    /// twice, a server error), reported with the round's checks.
    pub(crate) problems: Vec<String>,
    round: Counts,
    first_loss: FirstLoss,
}

impl Ledger {
    pub(crate) fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Counts an answer of the load; a server error is a problem.
    fn note(&mut self, what: &str, answer: &Answer) {
        match answer {
            Answer::Ok(_) => self.round.acked += 1,
            Answer::Refused(status, body) => {
                self.round.refused += 1;
                if *status >= 500 {
                    self.problems.push(format!("{what} failed with {status}: {body}"));
                }
            }
            Answer::Lost(why) => {
                self.round.unanswered += 1;
                self.first_loss.0.get_or_insert_with(|| format!("{what}: {why}"));
            }
        }
    }

    /// The round's requests, said in a few words; the next round counts afresh.
    pub(crate) fn take_tally(&mut self) -> String {
        let counts = std::mem::take(&mut self.round);
        let first = std::mem::take(&mut self.first_loss).0.unwrap_or_default();
        format!(
            "{} requests answered 2xx, {} refused, {} unanswered (the first, {first})",
            counts.acked, counts.refused, counts.unanswered
        )
    }

    /// A claim answered 200 with `key_id` (and `key`): a key handed out twice is a problem,
    /// and so is one whose content is not what was uploaded under its id.
    pub(crate) fn claimed(&mut self, key_id: &str, key: &Value) {
        if !self.claimed.insert(key_id.to_owned()) {
            self.problems.push(format!("one-time key {key_id} was handed out twice"));
        }
        if key["key"] != one_time_key(key_id)["key"] {
            self.problems.push(format!("one-time key {key_id} was claimed as {key}"));
        }
        if !self.one_time_keys.contains_key(key_id) {
            self.problems.push(format!("a claim handed out {key_id}, which was never uploaded"));
        }
    }

    /// A sync answered 200 with `events` (its to-device events).
    pub(crate) fn deliver(&mut self, events: &Value) {
        for event in events.as_array().into_iter().flatten() {
            if event["type"] != SEQ_TYPE {
                continue;
            }
            let Some(seq) = event["content"]["seq"].as_u64() else {
                self.problems.push(format!("a to-device message without its number: {event}"));
                continue;
            };
            if !self.to_device.contains_key(&seq) {
                self.problems.push(format!("to-device message {seq} was never sent"));
            }
            let times = self.delivered.entry(seq).or_insert(0);
            *times += 1;
            if *times == 2 {
                self.problems.push(format!("to-device message {seq} was delivered twice"));
            }
        }
    }
}

fn with<R>(ledger: &Shared, f: impl FnOnce(&mut Ledger) -> R) -> R {
    f(&mut ledger.lock().expect("the ledger lock (a load task panicked)"))
}

/// The content of the one-time key `key_id` (made from its id, so that a claim can be
/// checked against it).
pub(crate) fn one_time_key(key_id: &str) -> Value {
    json!({"key": format!("otk-{key_id}")})
}

/// alice's device keys, version `n`.
pub(crate) fn device_keys(alice: &Client, n: u64) -> Value {
    let device = &alice.device_id;
    json!({
        "user_id": alice.user_id,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("ed25519:{device}"): format!("ed-{n}"),
                 format!("curve25519:{device}"): format!("cv-{n}")},
        "signatures": {},
    })
}

/// The body of the message with transaction id `txn` (the same on a retry).
pub(crate) fn message(txn: &str) -> Value {
    json!({"msgtype": "m.text", "body": format!("crash {txn}"), TXN_KEY: txn})
}

/// The path that sends message `txn` to `room`.
pub(crate) fn send_path(room: &str, txn: &str) -> String {
    format!("/rooms/{room}/send/m.room.message/{txn}")
}

/// The request that sends to-device message `seq` to dave (the same on a retry).
pub(crate) fn to_device(dave: &Client, seq: u64) -> (String, Value) {
    let body =
        json!({"messages": {dave.user_id.as_str(): {dave.device_id.as_str(): {"seq": seq}}}});
    (format!("/sendToDevice/{SEQ_TYPE}/td{seq}"), body)
}

/// The path of the alias `alias`.
pub(crate) fn alias_path(alias: &str) -> String {
    format!("/directory/room/{}", urlencode(alias))
}

/// Starts every load task on `cast`.
pub(crate) fn spawn(cast: &Cast, ledger: &Shared) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for by in 0..2 {
        tasks.push(tokio::spawn(send_messages(cast.clone(), by, ledger.clone())));
    }
    tasks.push(tokio::spawn(upload_keys(cast.alice.clone(), ledger.clone())));
    for _ in 0..2 {
        tasks.push(tokio::spawn(claim_keys(cast.bob.clone(), cast.alice.clone(), ledger.clone())));
    }
    tasks.push(tokio::spawn(send_to_device(cast.carol.clone(), cast.dave.clone(), ledger.clone())));
    tasks.push(tokio::spawn(sync_to_device(cast.dave.clone(), ledger.clone())));
    tasks.push(tokio::spawn(bob_writes(cast.bob.clone(), cast.room.clone(), ledger.clone())));
    tasks
}

/// Messages with transaction ids into the room.
async fn send_messages(cast: Cast, by: usize, ledger: Shared) {
    let client = cast.messenger(by);
    for _ in 0..MAX_OPS {
        let txn = with(&ledger, |l| {
            let txn = format!("m{}", l.next());
            l.messages.insert(txn.clone(), Sent { by, event_id: None });
            txn
        });
        let answer = client.put(&send_path(&cast.room, &txn), &message(&txn)).await;
        let lost = matches!(answer, Answer::Lost(_));
        with(&ledger, |l| {
            l.note("a message send", &answer);
            if let Answer::Ok(body) = &answer {
                match body["event_id"].as_str() {
                    Some(id) => {
                        l.messages.insert(txn.clone(), Sent { by, event_id: Some(id.to_owned()) });
                        l.last_event = Some(id.to_owned());
                    }
                    None => {
                        l.problems.push(format!("a send answered 200 without an event id: {body}"))
                    }
                }
            }
        });
        if lost {
            return;
        }
    }
}

/// alice's device keys (a new version each time) with batches of one-time keys whenever her
/// stock is low.
async fn upload_keys(alice: Client, ledger: Shared) {
    let mut stock = 0;
    for _ in 0..MAX_OPS {
        let (version, batch) = with(&ledger, |l| {
            let version = l.next();
            l.device_keys.sending(version);
            let mut batch = Vec::new();
            if stock < OTK_STOCK {
                for _ in 0..OTK_BATCH {
                    let id = format!("{OTK}:K{}", l.next());
                    l.one_time_keys.insert(id.clone(), false);
                    batch.push(id);
                }
            }
            (version, batch)
        });
        let keys: serde_json::Map<String, Value> =
            batch.iter().map(|id| (id.clone(), one_time_key(id))).collect();
        let body = json!({"device_keys": device_keys(&alice, version), "one_time_keys": keys});
        let answer = alice.post("/keys/upload", &body).await;
        with(&ledger, |l| {
            l.note("a key upload", &answer);
            if let Answer::Ok(body) = &answer {
                l.device_keys.acknowledged(version);
                for id in &batch {
                    l.one_time_keys.insert(id.clone(), true);
                }
                stock = body["one_time_key_counts"][OTK].as_u64().unwrap_or(0);
            }
        });
        if matches!(answer, Answer::Lost(_)) {
            return;
        }
    }
}

/// The claim body for one of alice's one-time keys.
pub(crate) fn claim_body(alice: &Client) -> Value {
    json!({"one_time_keys": {alice.user_id.as_str(): {alice.device_id.as_str(): OTK}}})
}

/// The key a claim answered, if any.
pub(crate) fn claimed_key(body: &Value, alice: &Client) -> Option<(String, Value)> {
    let keys =
        body["one_time_keys"][alice.user_id.as_str()][alice.device_id.as_str()].as_object()?;
    keys.iter().next().map(|(id, key)| (id.clone(), key.clone()))
}

/// bob claims alice's one-time keys.
async fn claim_keys(bob: Client, alice: Client, ledger: Shared) {
    for _ in 0..MAX_OPS {
        let answer = bob.post("/keys/claim", &claim_body(&alice)).await;
        let empty = with(&ledger, |l| {
            l.note("a key claim", &answer);
            match &answer {
                Answer::Ok(body) => match claimed_key(body, &alice) {
                    Some((id, key)) => {
                        l.claimed(&id, &key);
                        false
                    }
                    None => true,
                },
                _ => {
                    l.claims_unanswered += 1;
                    false
                }
            }
        });
        if matches!(answer, Answer::Lost(_)) {
            return;
        }
        if empty {
            // None left: the uploader tops them up soon.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// carol sends dave numbered to-device messages.
async fn send_to_device(carol: Client, dave: Client, ledger: Shared) {
    for _ in 0..MAX_OPS {
        let seq = with(&ledger, |l| {
            let seq = l.next();
            l.to_device.insert(seq, false);
            seq
        });
        let (path, body) = to_device(&dave, seq);
        let answer = carol.put(&path, &body).await;
        with(&ledger, |l| {
            l.note("a to-device send", &answer);
            if matches!(answer, Answer::Ok(_)) {
                l.to_device.insert(seq, true);
            }
        });
        if matches!(answer, Answer::Lost(_)) {
            return;
        }
    }
}

/// What one of dave's syncs came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Synced {
    /// A 200, with this many to-device events.
    Delivered(usize),
    /// Another status (the round's tally shows it).
    Refused,
    /// No answer.
    Lost,
}

/// One sync of dave's from the saved token (`timeout` ms long-poll); a 200 delivers its
/// to-device events and moves the token.
pub(crate) async fn sync_once(dave: &Client, ledger: &Shared, timeout: u64) -> Synced {
    let since = with(ledger, |l| l.since.clone());
    let path = match since {
        Some(since) => format!("/sync?since={since}&timeout={timeout}"),
        None => "/sync?timeout=0".to_owned(),
    };
    let answer = dave.get(&path).await;
    with(ledger, |l| {
        l.note("a sync", &answer);
        let body = match &answer {
            Answer::Ok(body) => body,
            Answer::Refused(..) => return Synced::Refused,
            Answer::Lost(_) => return Synced::Lost,
        };
        let events = &body["to_device"]["events"];
        l.deliver(events);
        match body["next_batch"].as_str() {
            Some(token) => l.since = Some(token.to_owned()),
            None => l.problems.push(format!("a sync answered 200 without next_batch: {body}")),
        }
        Synced::Delivered(events.as_array().map_or(0, Vec::len))
    })
}

/// dave syncs, as a client does.
async fn sync_to_device(dave: Client, ledger: Shared) {
    for _ in 0..MAX_OPS {
        match sync_once(&dave, &ledger, 500).await {
            Synced::Delivered(_) => {}
            Synced::Refused => tokio::time::sleep(Duration::from_millis(20)).await,
            Synced::Lost => return,
        }
    }
}

/// bob's other writes, in turn: a read receipt on the last acknowledged message, account
/// data, an alias for the room, a display name.
async fn bob_writes(bob: Client, room: String, ledger: Shared) {
    for op in 0..MAX_OPS {
        let n = with(&ledger, Ledger::next);
        let (what, answer) = match op % 4 {
            0 => {
                let Some(event) = with(&ledger, |l| l.last_event.clone()) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                with(&ledger, |l| l.receipt.sending(event.clone()));
                let path = format!("/rooms/{room}/receipt/m.read/{event}");
                let answer = bob.post(&path, &json!({})).await;
                with(&ledger, |l| {
                    if matches!(answer, Answer::Ok(_)) {
                        l.receipt.acknowledged(event);
                    }
                });
                ("a receipt", answer)
            }
            1 => {
                let kind = format!("org.crash.data.{n}");
                with(&ledger, |l| l.account_data.insert(kind.clone(), (n, false)));
                let path = format!("/user/{}/account_data/{kind}", bob.user_id);
                let answer = bob.put(&path, &json!({"n": n})).await;
                with(&ledger, |l| {
                    if matches!(answer, Answer::Ok(_)) {
                        l.account_data.insert(kind, (n, true));
                    }
                });
                ("account data", answer)
            }
            2 => {
                let alias = format!("#crash{n}:localhost");
                with(&ledger, |l| l.aliases.insert(alias.clone(), false));
                let answer = bob.put(&alias_path(&alias), &json!({"room_id": room})).await;
                with(&ledger, |l| {
                    if matches!(answer, Answer::Ok(_)) {
                        l.aliases.insert(alias, true);
                    }
                });
                ("an alias", answer)
            }
            _ => {
                let name = format!("bob {n}");
                with(&ledger, |l| l.displayname.sending(name.clone()));
                let path = format!("/profile/{}/displayname", bob.user_id);
                let answer = bob.put(&path, &json!({"displayname": name})).await;
                with(&ledger, |l| {
                    if matches!(answer, Answer::Ok(_)) {
                        l.displayname.acknowledged(name);
                    }
                });
                ("a display name", answer)
            }
        };
        with(&ledger, |l| l.note(what, &answer));
        if matches!(answer, Answer::Lost(_)) {
            return;
        }
    }
}
