//! What a restarted server must have: the retries first (a transaction id answers its first
//! event id and makes no second event; a to-device retry is not delivered twice), then every
//! acknowledged write, read back over the API.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{Value, json};

use crate::load::{
    self, Latest, Ledger, OTK, Shared, Synced, TXN_KEY, alias_path, claim_body, claimed_key,
    message, send_path,
};
use crate::{Answer, Cast, Rng, urlencode};

/// How many acknowledged transaction ids of each kind are retried after a restart.
const RETRIES: usize = 5;

/// The most syncs that may take to drain dave's to-device queue.
const DRAIN_SYNCS: usize = 50;

/// The most one-time keys alice can hold (the config's max_one_time_keys_per_device).
const MAX_KEYS: u64 = 1000;

/// A round's findings: what was lost or doubled, and what was checked.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) problems: Vec<String>,
    pub(crate) summary: String,
}

fn with<R>(ledger: &Shared, f: impl FnOnce(&mut Ledger) -> R) -> R {
    f(&mut ledger.lock().expect("the ledger lock (a load task panicked)"))
}

/// Checks the restarted server behind `cast` against the ledger; what the server has of the
/// values clients overwrite becomes what the next round checks against.
pub(crate) async fn after_restart(cast: &Cast, ledger: &Shared, rng: &mut Rng) -> Report {
    let mut report = Report::default();
    report.problems.append(&mut with(ledger, |l| std::mem::take(&mut l.problems)));
    let mut said = Vec::new();
    // The room as the restart left it, to tell which unanswered sends were saved.
    let before = room_messages(cast).await;
    said.push(retry_messages(cast, ledger, rng, &before, &mut report.problems).await);
    // dave takes what is queued; then the retries; then whatever they queued.
    let syncs = drain_to_device(cast, ledger, &mut report.problems).await;
    said.push(retry_to_device(cast, ledger, rng, &mut report.problems).await);
    let syncs = syncs + drain_to_device(cast, ledger, &mut report.problems).await;
    said.push(delivered_once(ledger, syncs, &mut report.problems));
    said.push(messages(cast, ledger, &mut report.problems).await);
    said.push(bob_sync(cast, ledger, &mut report.problems).await);
    said.push(aliases(cast, ledger, rng, &mut report.problems).await);
    said.push(device_keys(cast, ledger, &mut report.problems).await);
    said.push(one_time_keys(cast, ledger, &mut report.problems).await);
    // Whatever the checks' own requests found (a claim handing a key out twice).
    report.problems.append(&mut with(ledger, |l| std::mem::take(&mut l.problems)));
    report.summary = said.join("; ");
    report
}

/// Resends a sample of acknowledged transaction ids and every unanswered one: the first
/// event id must come back (for an unanswered send that was saved, the id of the event
/// `before` shows); an unanswered one is acknowledged now.
async fn retry_messages(
    cast: &Cast,
    ledger: &Shared,
    rng: &mut Rng,
    before: &BTreeMap<String, Vec<String>>,
    problems: &mut Vec<String>,
) -> String {
    let (acked, unanswered): (Vec<_>, Vec<_>) = with(ledger, |l| {
        l.messages
            .iter()
            .map(|(t, s)| (t.clone(), s.clone()))
            .partition(|(_, s)| s.event_id.is_some())
    });
    let sample = rng.sample(&acked.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(), RETRIES);
    let wanted: BTreeMap<&String, &load::Sent> = acked.iter().map(|(t, s)| (t, s)).collect();
    for txn in &sample {
        let Some(sent) = wanted.get(txn) else { continue };
        let answer = cast.messenger(sent.by).put(&send_path(&cast.room, txn), &message(txn)).await;
        match answer {
            Answer::Ok(body) if body["event_id"].as_str() == sent.event_id.as_deref() => {}
            other => problems.push(format!(
                "resending acknowledged transaction {txn} (first answered {:?}) answered {other:?}",
                sent.event_id
            )),
        }
    }
    let mut saved = 0;
    for (txn, sent) in &unanswered {
        let first = before.get(txn).map_or(&[][..], Vec::as_slice);
        saved += usize::from(!first.is_empty());
        let answer = cast.messenger(sent.by).put(&send_path(&cast.room, txn), &message(txn)).await;
        let id = match &answer {
            Answer::Ok(body) => body["event_id"].as_str().map(str::to_owned),
            _ => None,
        };
        match (id, first) {
            (Some(id), []) => with(ledger, |l| {
                l.messages.insert(txn.clone(), load::Sent { by: sent.by, event_id: Some(id) });
            }),
            (Some(id), [saved]) if id == *saved => with(ledger, |l| {
                l.messages.insert(txn.clone(), load::Sent { by: sent.by, event_id: Some(id) });
            }),
            (_, first) => problems.push(format!(
                "resending unanswered transaction {txn} (in the room as {first:?}) answered \
                 {answer:?}"
            )),
        }
    }
    format!(
        "{} message transaction ids resent ({} acknowledged: the same event id; {} unanswered, \
         {saved} of them saved before the kill: their event id)",
        sample.len() + unanswered.len(),
        sample.len(),
        unanswered.len()
    )
}

/// Resends a sample of acknowledged to-device transactions and every unanswered one (which
/// is acknowledged once answered); the drain then shows whether any was delivered twice.
async fn retry_to_device(
    cast: &Cast,
    ledger: &Shared,
    rng: &mut Rng,
    problems: &mut Vec<String>,
) -> String {
    let (acked, unanswered): (Vec<u64>, Vec<u64>) = with(ledger, |l| {
        let acked = l.to_device.iter().filter(|(_, a)| **a).map(|(s, _)| *s).collect();
        let unanswered = l.to_device.iter().filter(|(_, a)| !**a).map(|(s, _)| *s).collect();
        (acked, unanswered)
    });
    let sample = rng.sample(&acked, RETRIES);
    // An unanswered send delivered by now (dave has drained his queue) was saved before the
    // kill: its retry must not queue it again.
    let saved = with(ledger, |l| unanswered.iter().filter(|s| l.delivered.contains_key(s)).count());
    for seq in sample.iter().chain(&unanswered) {
        let (path, body) = load::to_device(&cast.dave, *seq);
        match cast.carol.put(&path, &body).await {
            Answer::Ok(_) => with(ledger, |l| {
                l.to_device.insert(*seq, true);
            }),
            other => problems.push(format!("resending to-device message {seq}: {other:?}")),
        }
    }
    format!(
        "{} to-device transaction ids resent ({} acknowledged, {} unanswered of which {saved} \
         saved before the kill)",
        sample.len() + unanswered.len(),
        sample.len(),
        unanswered.len()
    )
}

/// dave syncs from the last token he got a 200 for until no to-device message comes;
/// answers how many syncs that took.
async fn drain_to_device(cast: &Cast, ledger: &Shared, problems: &mut Vec<String>) -> usize {
    for syncs in 1..=DRAIN_SYNCS {
        match load::sync_once(&cast.dave, ledger, 0).await {
            Synced::Delivered(0) => return syncs,
            Synced::Delivered(_) => {}
            other => {
                problems.push(format!("dave's sync after the restart: {other:?}"));
                return syncs;
            }
        }
    }
    problems.push(format!("dave's to-device queue still delivered after {DRAIN_SYNCS} syncs"));
    DRAIN_SYNCS
}

/// Over the whole run, every acknowledged to-device message was delivered exactly once
/// (dave has drained his queue), and no other more than once.
fn delivered_once(ledger: &Shared, syncs: usize, problems: &mut Vec<String>) -> String {
    with(ledger, |l| {
        let mut acked = 0;
        for (seq, was_acked) in &l.to_device {
            let times = l.delivered.get(seq).copied().unwrap_or(0);
            if *was_acked {
                acked += 1;
                if times != 1 {
                    problems.push(format!(
                        "acknowledged to-device message {seq} was delivered {times} times (once \
                         expected)"
                    ));
                }
            } else if times > 1 {
                problems.push(format!("unanswered to-device message {seq} arrived {times} times"));
            }
        }
        let delivered: u32 = l.delivered.values().sum();
        format!(
            "to-device: {acked} acknowledged, each delivered exactly once ({delivered} \
             deliveries in all; drained in {syncs} syncs)"
        )
    })
}

/// Every message event of the room carrying a transaction id, as alice pages through it.
async fn room_messages(cast: &Cast) -> BTreeMap<String, Vec<String>> {
    let filter = urlencode(&json!({"types": ["m.room.message"]}).to_string());
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/rooms/{}/messages?dir=b&limit=1000&filter={filter}", cast.room);
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let page = cast.alice.must(Method::GET, &path, None).await;
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        for event in &chunk {
            if let (Some(txn), Some(id)) =
                (event["content"][TXN_KEY].as_str(), event["event_id"].as_str())
            {
                found.entry(txn.to_owned()).or_default().push(id.to_owned());
            }
        }
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => return found,
        }
    }
    panic!("the room's messages did not end within 100 pages");
}

/// Every acknowledged message is in the room once, with the event id its 200 gave; an
/// unanswered one at most once.
async fn messages(cast: &Cast, ledger: &Shared, problems: &mut Vec<String>) -> String {
    let found = room_messages(cast).await;
    with(ledger, |l| {
        let mut acked = 0;
        for (txn, sent) in &l.messages {
            let ids = found.get(txn).map_or(&[][..], Vec::as_slice);
            match &sent.event_id {
                Some(id) => {
                    acked += 1;
                    if ids != [id.clone()] {
                        problems.push(format!(
                            "acknowledged message {txn} ({id}) is in the room as {ids:?}"
                        ));
                    }
                }
                None if ids.len() > 1 => {
                    problems.push(format!("unanswered message {txn} is in the room {ids:?}"));
                }
                None => {}
            }
        }
        for txn in found.keys().filter(|t| !l.messages.contains_key(*t)) {
            problems.push(format!("the room has a message {txn} that was never sent"));
        }
        format!("{acked} acknowledged messages in /messages with their event ids, none twice")
    })
}

/// bob's initial sync: his account data, and his read receipt in the room.
async fn bob_sync(cast: &Cast, ledger: &Shared, problems: &mut Vec<String>) -> String {
    let filter = urlencode(&json!({"room": {"timeline": {"limit": 1}}}).to_string());
    let body = cast.bob.must(Method::GET, &format!("/sync?filter={filter}"), None).await;
    let data: BTreeMap<&str, &Value> = body["account_data"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["type"].as_str()?, &e["content"])))
        .collect();
    let receipts = body["rooms"]["join"][&cast.room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.receipt")
        .flat_map(|e| e["content"].as_object().into_iter().flatten())
        .filter(|(_, by_kind)| by_kind["m.read"].get(&cast.bob.user_id).is_some())
        .map(|(event, _)| event.clone())
        .collect::<Vec<String>>();
    let receipt = match receipts.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        many => {
            problems.push(format!("bob has several m.read receipts in the room: {many:?}"));
            None
        }
    };
    // Registration sets no display name: until one is set, 404.
    let path = format!("/profile/{}/displayname", cast.bob.user_id);
    let displayname = match cast.bob.get(&path).await {
        Answer::Ok(body) => body["displayname"].as_str().map(str::to_owned),
        Answer::Refused(404, _) => None,
        other => panic!("bob's display name after the restart: {other:?}"),
    };
    with(ledger, |l| {
        let mut acked = 0;
        for (kind, (n, was_acked)) in &l.account_data {
            match data.get(kind.as_str()) {
                Some(content) if content["n"] == *n => {}
                Some(content) => {
                    problems.push(format!("account data {kind} is {content}, not {{\"n\": {n}}}"))
                }
                None if *was_acked => {
                    problems.push(format!("acknowledged account data {kind} is lost"));
                }
                None => {}
            }
            acked += u64::from(*was_acked);
        }
        settle("bob's m.read receipt", &mut l.receipt, receipt, problems);
        settle("bob's display name", &mut l.displayname, displayname, problems);
        format!(
            "{acked} acknowledged account data types in the initial sync; the receipt ({}) and \
             the display name ({}) the last acknowledged or a later unanswered one",
            l.receipt.acked.as_deref().unwrap_or("none"),
            l.displayname.acked.as_deref().unwrap_or("none")
        )
    })
}

/// Checks an overwritten value against what was sent, then keeps what the server has.
fn settle<T: PartialEq + std::fmt::Debug>(
    what: &str,
    latest: &mut Latest<T>,
    found: Option<T>,
    problems: &mut Vec<String>,
) {
    if !latest.allows(found.as_ref()) {
        problems.push(format!(
            "{what} is {found:?} after the restart; the last acknowledged was {:?} (unanswered \
             after it: {:?})",
            latest.acked, latest.unanswered
        ));
    }
    latest.settle(found);
}

/// Every acknowledged alias is the room's, in its list and resolved (a sample).
async fn aliases(
    cast: &Cast,
    ledger: &Shared,
    rng: &mut Rng,
    problems: &mut Vec<String>,
) -> String {
    let listed = cast.bob.must(Method::GET, &format!("/rooms/{}/aliases", cast.room), None).await;
    let listed: BTreeSet<&str> =
        listed["aliases"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let acked: Vec<String> =
        with(ledger, |l| l.aliases.iter().filter(|(_, a)| **a).map(|(a, _)| a.clone()).collect());
    for alias in acked.iter().filter(|a| !listed.contains(a.as_str())) {
        problems.push(format!("acknowledged alias {alias} is not in the room's aliases"));
    }
    for alias in rng.sample(&acked, RETRIES) {
        match cast.bob.get(&alias_path(&alias)).await {
            Answer::Ok(body) if body["room_id"] == cast.room.as_str() => {}
            other => problems.push(format!("acknowledged alias {alias} resolves to {other:?}")),
        }
    }
    format!("{} acknowledged aliases listed", acked.len())
}

/// alice's device keys are the last acknowledged version (or a later unanswered one).
async fn device_keys(cast: &Cast, ledger: &Shared, problems: &mut Vec<String>) -> String {
    let alice = &cast.alice;
    let query = json!({"device_keys": {alice.user_id.as_str(): []}});
    let body = cast.bob.must(Method::POST, "/keys/query", Some(&query)).await;
    let keys = &body["device_keys"][&alice.user_id][&alice.device_id];
    let ed25519 = keys["keys"][format!("ed25519:{}", alice.device_id)].as_str();
    let version = ed25519.and_then(|k| k.strip_prefix("ed-")).and_then(|n| n.parse::<u64>().ok());
    if let Some(version) = version
        && *keys != load::device_keys(alice, version)
    {
        problems.push(format!("alice's device keys came back altered: {keys}"));
    }
    with(ledger, |l| {
        settle("alice's device keys version", &mut l.device_keys, version, problems);
        format!("alice's device keys at version {version:?} in /keys/query")
    })
}

/// The one-time keys: alice's count, then every key bob can still claim. With U the
/// acknowledged uploads, C the keys claims answered 200 with before (each at most once),
/// R the keys claimable now and L the claims that got no 2xx (each may have used one up):
/// the count is |R|; R holds only uploaded keys none of C; and the keys of U in neither C
/// nor R are at most |L|, so that |U - C| - |L| <= count <= |uploaded - C|. Every check
/// claims every key left, so this holds per round: the keys that went missing in a round
/// are at most that round's unanswered claims.
async fn one_time_keys(cast: &Cast, ledger: &Shared, problems: &mut Vec<String>) -> String {
    let alice = &cast.alice;
    let counts = alice.must(Method::POST, "/keys/upload", Some(&json!({}))).await;
    let count = counts["one_time_key_counts"][OTK].as_u64().unwrap_or(0);
    let claimed_before = with(ledger, |l| l.claimed.len());
    let mut claimable = 0;
    for _ in 0..=MAX_KEYS {
        let body = cast.bob.must(Method::POST, "/keys/claim", Some(&claim_body(alice))).await;
        let Some((id, key)) = claimed_key(&body, alice) else { break };
        with(ledger, |l| l.claimed(&id, &key));
        claimable += 1;
    }
    if claimable != count {
        problems.push(format!(
            "alice's one-time key count is {count} but {claimable} keys could be claimed"
        ));
    }
    with(ledger, |l| {
        let uploaded = l.one_time_keys.values().filter(|a| **a).count();
        let missing: BTreeSet<String> = l
            .one_time_keys
            .iter()
            .filter(|(id, acked)| **acked && !l.claimed.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let new: Vec<&String> = missing.difference(&l.keys_missing).collect();
        let unanswered = l.claims_unanswered - l.claims_unanswered_seen;
        if u64::try_from(new.len()).unwrap_or(u64::MAX) > unanswered {
            problems.push(format!(
                "{} acknowledged one-time keys are neither claimed nor claimable, more than the \
                 {unanswered} claims that went unanswered this round could have used: {new:?}",
                new.len()
            ));
        }
        let summary = format!(
            "one-time keys: {uploaded} acknowledged uploads, {claimed_before} claimed before, \
             count {count} = {claimable} claimable now, none twice, {} used up by the round's \
             {unanswered} unanswered claims",
            new.len()
        );
        l.keys_missing = missing;
        l.claims_unanswered_seen = l.claims_unanswered;
        summary
    })
}
