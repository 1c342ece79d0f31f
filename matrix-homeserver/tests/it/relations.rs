//! Relations and threads: `/relations` (by type and event type, both ways, paginated,
//! recursive), bundled aggregations (`unsigned.m.relations`) on every reading endpoint,
//! `/threads`, thread-aware receipts, and their failure cases: bad parameters, a thread of a
//! thread, an edit of an edit, strangers and a user who left before the related events.

use serde_json::{Value, json};

use crate::rooms::{create, user};
use crate::spec::check;
use crate::{Backend, Client, errcode};

const V1: &str = "/_matrix/client/v1";
const V3: &str = "/_matrix/client/v3";

/// Sends an event of `kind`; answers its id.
async fn send(client: &Client, room: &str, kind: &str, content: Value) -> String {
    let (status, body) = send_status(client, room, kind, content).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("an event id").to_owned()
}

async fn send_status(client: &Client, room: &str, kind: &str, content: Value) -> (u16, Value) {
    static TXN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let txn = TXN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    client
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/send/{kind}/r{txn}"),
            Some(&content),
        )
        .await
}

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

fn related(rel_type: &str, parent: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": rel_type, "event_id": parent}})
}

fn edit(parent: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("* {body}"),
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": parent},
    })
}

fn reaction(parent: &str, key: &str) -> Value {
    json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": key}})
}

fn strs(ids: &[&String]) -> Vec<String> {
    ids.iter().map(|id| (*id).clone()).collect()
}

fn ids(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .expect("a chunk")
        .iter()
        .map(|e| e["event_id"].as_str().expect("an event id").to_owned())
        .collect()
}

/// GET /relations with `path` after the event id; checks a 200 against the spec.
async fn relations(client: &Client, room: &str, event: &str, rest: &str) -> (u16, Value) {
    let (status, body) = client.get(&format!("{V1}/rooms/{room}/relations/{event}{rest}")).await;
    if status == 200 {
        let template = match rest.split('?').next().unwrap_or("").matches('/').count() {
            0 => "/rooms/{roomId}/relations/{eventId}",
            1 => "/rooms/{roomId}/relations/{eventId}/{relType}",
            _ => "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}",
        };
        check("relations.yaml", template, "get", 200, &body);
    }
    (status, body)
}

async fn threads(client: &Client, room: &str, query: &str) -> (u16, Value) {
    let (status, body) = client.get(&format!("{V1}/rooms/{room}/threads{query}")).await;
    if status == 200 {
        check("threads_list.yaml", "/rooms/{roomId}/threads", "get", 200, &body);
    }
    (status, body)
}

async fn event(client: &Client, room: &str, event: &str) -> Value {
    let (status, body) = client.get(&format!("{V3}/rooms/{room}/event/{event}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn join(client: &Client, room: &str) {
    let (status, body) = client.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
}

/// Every relation of an event, newest first by default, oldest first with `dir=f`, by
/// relation type and by event type; pages of `limit` follow `next_batch` to the end and
/// `prev_batch` names where a page began; bad parameters are 400, a large limit is lowered.
async fn relations_page_both_ways_by_type(backend: Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;
    let root = send(&alice, &room, "m.room.message", text("root")).await;
    let other = send(&alice, &room, "m.room.message", text("other")).await;
    let r1 = send(&alice, &room, "m.reaction", reaction(&root, "👍")).await;
    let ref1 = send(&alice, &room, "m.room.message", related("m.reference", &root, "see")).await;
    let r2 = send(&alice, &room, "m.reaction", reaction(&root, "🎉")).await;
    let custom =
        send(&alice, &room, "m.room.message", related("org.example.custom", &root, "x")).await;
    send(&alice, &room, "m.reaction", reaction(&other, "👍")).await;

    let (status, body) = relations(&alice, &room, &root, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), strs(&[&custom, &r2, &ref1, &r1]));
    assert!(body.get("next_batch").is_none() && body.get("recursion_depth").is_none());
    assert_eq!(body["chunk"][0]["content"]["body"], "x", "events in full, client format");

    let (_, body) = relations(&alice, &room, &root, "?dir=f").await;
    assert_eq!(ids(&body), strs(&[&r1, &ref1, &r2, &custom]));
    let (_, body) = relations(&alice, &room, &root, "/m.annotation").await;
    assert_eq!(ids(&body), strs(&[&r2, &r1]));
    let (_, body) = relations(&alice, &room, &root, "/m.annotation/m.reaction").await;
    assert_eq!(ids(&body), strs(&[&r2, &r1]));
    let (_, body) = relations(&alice, &room, &root, "/m.annotation/m.room.message").await;
    assert!(ids(&body).is_empty());
    let (_, body) = relations(&alice, &room, &root, "/org.example.custom").await;
    assert_eq!(ids(&body), strs(&[&custom]), "unknown relation types are relations like any");

    // Pages both ways.
    let (_, first) = relations(&alice, &room, &root, "?limit=3").await;
    assert_eq!(ids(&first), strs(&[&custom, &r2, &ref1]));
    let next = first["next_batch"].as_str().expect("more to come").to_owned();
    let (_, second) = relations(&alice, &room, &root, &format!("?limit=3&from={next}")).await;
    assert_eq!(ids(&second), strs(&[&r1]));
    assert_eq!(second["prev_batch"], next.as_str());
    assert!(second.get("next_batch").is_none());
    let (_, forward) = relations(&alice, &room, &root, "?dir=f&limit=2").await;
    assert_eq!(ids(&forward), strs(&[&r1, &ref1]));
    let next = forward["next_batch"].as_str().expect("more to come").to_owned();
    let (_, forward) =
        relations(&alice, &room, &root, &format!("?dir=f&limit=2&from={next}")).await;
    assert_eq!(ids(&forward), strs(&[&r2, &custom]));
    // `to` ends a page.
    let (_, till) = relations(&alice, &room, &root, &format!("?dir=f&to={next}")).await;
    assert_eq!(ids(&till), strs(&[&r1]), "forwards up to before `to`");

    // A huge limit is lowered, not refused; bad parameters are.
    let (status, _) = relations(&alice, &room, &root, "?limit=100000").await;
    assert_eq!(status, 200);
    for bad in ["?limit=-1", "?limit=x", "?dir=up", "?from=nonsense", "?to=nonsense", "?recurse=7"]
    {
        let (status, body) = relations(&alice, &room, &root, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(errcode(&body).starts_with("M_"), "{body}");
    }
    // An unknown parent, or one of another room.
    let other_room = create(&alice, json!({})).await;
    let (status, body) = relations(&alice, &other_room, &root, "").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = relations(&alice, &room, "$nothere", "").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
}

/// `recurse` follows relations of relations three levels down (and says so), each event
/// once, filtered by type at every level; without it only direct relations are listed.
async fn relations_recurse_three_levels(backend: Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;
    let root = send(&alice, &room, "m.room.message", text("root")).await;
    let reply = send(&alice, &room, "m.room.message", related("m.thread", &root, "reply")).await;
    let edit1 = send(&alice, &room, "m.room.message", edit(&reply, "reply!")).await;
    let reaction3 = send(&alice, &room, "m.reaction", reaction(&edit1, "3")).await;
    let reference4 =
        send(&alice, &room, "m.room.message", related("m.reference", &reaction3, "4")).await;

    let (_, direct) = relations(&alice, &room, &root, "").await;
    assert_eq!(ids(&direct), strs(&[&reply]));
    let (_, body) = relations(&alice, &room, &root, "?recurse=true").await;
    assert_eq!(ids(&body), strs(&[&reaction3, &edit1, &reply]));
    assert!(!ids(&body).contains(&reference4), "three levels, not four");
    assert_eq!(body["recursion_depth"], 3);
    let (_, body) = relations(&alice, &room, &root, "?recurse=true&dir=f&limit=2").await;
    assert_eq!(ids(&body), strs(&[&reply, &edit1]));
    let next = body["next_batch"].as_str().expect("more").to_owned();
    let (_, body) =
        relations(&alice, &room, &root, &format!("?recurse=true&dir=f&limit=2&from={next}")).await;
    assert_eq!(ids(&body), strs(&[&reaction3]));
    let (_, body) = relations(&alice, &room, &root, "/m.annotation?recurse=true").await;
    assert_eq!(ids(&body), strs(&[&reaction3]));
    let (_, body) = relations(&alice, &room, &root, "?recurse=false").await;
    assert_eq!(ids(&body), strs(&[&reply]));
}

/// `unsigned.m.relations`: the latest valid edit (not another sender's, not of another
/// type, never for an edit itself), the thread summary (count, latest event, whether the
/// reader took part) and the references, on `/event`, `/messages`, `/context`, `/sync` and
/// `/relations`; a redacted edit no longer counts, a redacted event has no aggregations.
async fn bundled_aggregations_everywhere(backend: Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let (carol, _) = user(&server, "carol").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    join(&carol, &room).await;
    let root = send(&alice, &room, "m.room.message", text("root")).await;
    let plain = event(&alice, &room, &root).await;
    assert!(plain["unsigned"].get("m.relations").is_none(), "{plain}");

    let edit1 = send(&alice, &room, "m.room.message", edit(&root, "first")).await;
    let edit2 = send(&alice, &room, "m.room.message", edit(&root, "second")).await;
    // Not valid: another sender, an edit without new content, an edit of an edit.
    send(&bob, &room, "m.room.message", edit(&root, "bob's")).await;
    send(&alice, &room, "m.room.message", related("m.replace", &root, "no new content")).await;
    let edit_of_edit = send(&alice, &room, "m.room.message", edit(&edit2, "again")).await;
    let t1 = send(&bob, &room, "m.room.message", related("m.thread", &root, "t1")).await;
    let t2 = send(&bob, &room, "m.room.message", related("m.thread", &root, "t2")).await;
    let reference = send(&alice, &room, "m.room.message", related("m.reference", &root, "r")).await;

    let check_bundle = |body: &Value, reader_took_part: bool| {
        let relations = &body["unsigned"]["m.relations"];
        assert_eq!(relations["m.replace"]["event_id"], edit2.as_str(), "{body}");
        assert_eq!(relations["m.replace"]["content"]["m.new_content"]["body"], "second");
        assert_eq!(relations["m.thread"]["count"], 2, "{body}");
        assert_eq!(relations["m.thread"]["latest_event"]["event_id"], t2.as_str());
        assert_eq!(relations["m.thread"]["current_user_participated"], reader_took_part);
        assert_eq!(relations["m.reference"]["chunk"], json!([{"event_id": reference}]));
        assert_eq!(body["content"]["body"], "root", "the original content is kept");
    };
    check_bundle(&event(&alice, &room, &root).await, true);
    check_bundle(&event(&bob, &room, &root).await, true);
    check_bundle(&event(&carol, &room, &root).await, false);
    // The edit of an edit is not an edit: the edit has none bundled.
    let edited = event(&alice, &room, &edit2).await;
    assert!(edited["unsigned"]["m.relations"].get("m.replace").is_none(), "{edited}");
    let (_, body) = relations(&alice, &room, &edit2, "").await;
    assert_eq!(ids(&body), strs(&[&edit_of_edit]), "still listed as a relation");

    let (status, messages) = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await;
    assert_eq!(status, 200);
    let in_messages = messages["chunk"]
        .as_array()
        .expect("a chunk")
        .iter()
        .find(|e| e["event_id"] == root.as_str());
    check_bundle(in_messages.expect("the root is there"), true);
    let (status, context) = carol.get(&format!("{V3}/rooms/{room}/context/{root}?limit=2")).await;
    assert_eq!(status, 200);
    check_bundle(&context["event"], false);
    let (status, sync) = alice
        .get(&format!(
            "{V3}/sync?filter={}",
            crate::rooms::urlencode(r#"{"room":{"timeline":{"limit":50}}}"#)
        ))
        .await;
    assert_eq!(status, 200);
    let timeline = sync["rooms"]["join"][&room]["timeline"]["events"].as_array().expect("events");
    check_bundle(timeline.iter().find(|e| e["event_id"] == root.as_str()).expect("root"), true);
    let (_, body) = relations(&alice, &room, &root, "/m.thread").await;
    assert_eq!(ids(&body), strs(&[&t2, &t1]));

    // A redacted edit no longer counts; the previous one is the latest.
    let (status, _) = alice.put(&format!("{V3}/rooms/{room}/redact/{edit2}/x1"), &json!({})).await;
    assert_eq!(status, 200);
    let body = event(&carol, &room, &root).await;
    assert_eq!(body["unsigned"]["m.relations"]["m.replace"]["event_id"], edit1.as_str());
    let (status, _) = bob.put(&format!("{V3}/rooms/{room}/redact/{t2}/x2"), &json!({})).await;
    assert_eq!(status, 200);
    let body = event(&carol, &room, &root).await;
    assert_eq!(body["unsigned"]["m.relations"]["m.thread"]["count"], 1);
    assert_eq!(
        body["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        t1.as_str()
    );
    // A redacted parent has no aggregations.
    let (status, _) = alice.put(&format!("{V3}/rooms/{room}/redact/{root}/x3"), &json!({})).await;
    assert_eq!(status, 200);
    let body = event(&carol, &room, &root).await;
    assert!(body["unsigned"].get("m.relations").is_none(), "{body}");
}

/// `/threads`: roots by latest activity, newest first, once each, paginated; `participated`
/// keeps the threads the user started or replied to; bad parameters are 400.
async fn threads_by_latest_activity(backend: Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let a = send(&alice, &room, "m.room.message", text("a")).await;
    let b = send(&bob, &room, "m.room.message", text("b")).await;
    let c = send(&alice, &room, "m.room.message", text("c")).await;
    send(&alice, &room, "m.room.message", related("m.thread", &a, "a1")).await;
    send(&alice, &room, "m.room.message", related("m.thread", &b, "b1")).await;
    send(&alice, &room, "m.room.message", related("m.thread", &c, "c1")).await;
    send(&bob, &room, "m.room.message", related("m.thread", &a, "a2")).await;

    let (status, body) = threads(&alice, &room, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), strs(&[&a, &c, &b]));
    assert_eq!(body["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    let (_, page) = threads(&alice, &room, "?limit=2").await;
    assert_eq!(ids(&page), strs(&[&a, &c]));
    let next = page["next_batch"].as_str().expect("more").to_owned();
    let (_, page) = threads(&alice, &room, &format!("?limit=2&from={next}")).await;
    assert_eq!(ids(&page), strs(&[&b]), "each root once, at its latest reply");
    assert!(page.get("next_batch").is_none());
    let (_, mine) = threads(&bob, &room, "?include=participated").await;
    assert_eq!(ids(&mine), strs(&[&a, &b]), "bob replied to a and started b");
    let (_, all) = threads(&bob, &room, "?include=all").await;
    assert_eq!(ids(&all).len(), 3);
    for bad in ["?include=some", "?limit=0", "?limit=-2", "?from=nonsense"] {
        let (status, body) = threads(&alice, &room, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = threads(&alice, &room, "?limit=100000").await;
    assert_eq!(status, 200, "a huge limit is lowered");
}

/// A thread cannot start from an event that relates to another (a thread of a thread, a
/// thread from an edit): 400 `M_INVALID_PARAM`; relations to unknown events are kept.
async fn relation_loops_are_refused_or_ignored(backend: Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;
    let root = send(&alice, &room, "m.room.message", text("root")).await;
    let reply = send(&alice, &room, "m.room.message", related("m.thread", &root, "r")).await;
    let edited = send(&alice, &room, "m.room.message", edit(&root, "e")).await;
    for parent in [&reply, &edited] {
        let (status, body) =
            send_status(&alice, &room, "m.room.message", related("m.thread", parent, "x")).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    }
    // Relations to events that do not exist, or malformed relations, are plain messages.
    send(&alice, &room, "m.room.message", related("m.thread", "$unknown", "u")).await;
    send(&alice, &room, "m.room.message", json!({"body": "x", "m.relates_to": "nonsense"})).await;
    send(&alice, &room, "m.room.message", json!({"body": "x", "m.relates_to": {"rel_type": 5}}))
        .await;
    // An event relating to itself cannot be made (its id is its hash), and an edit whose
    // parent is an edit is ignored in the bundle (above); listing stays bounded.
    let (status, body) = relations(&alice, &room, &root, "?recurse=true&limit=100").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), strs(&[&edited, &reply]));
}

/// A stranger gets what `/event` gives (403 or 404, never the relations); a user who left
/// sees the relations up to the leave only, in `/relations`, the bundles and `/threads`.
async fn strangers_and_departed_users(backend: Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let (mallory, _) = user(&server, "mallory").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let root = send(&alice, &room, "m.room.message", text("root")).await;
    let early = send(&alice, &room, "m.room.message", related("m.thread", &root, "early")).await;
    let first_edit = send(&alice, &room, "m.room.message", edit(&root, "seen")).await;
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    let late = send(&alice, &room, "m.room.message", related("m.thread", &root, "late")).await;
    send(&alice, &room, "m.room.message", edit(&root, "unseen")).await;
    let other = send(&alice, &room, "m.room.message", text("other")).await;
    send(&alice, &room, "m.room.message", related("m.thread", &other, "after")).await;

    let (status, body) = relations(&bob, &room, &root, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), strs(&[&first_edit, &early]));
    let (_, everything) = relations(&alice, &room, &root, "/m.thread").await;
    assert_eq!(ids(&everything), strs(&[&late, &early]));
    let seen = event(&bob, &room, &root).await;
    let relations_seen = &seen["unsigned"]["m.relations"];
    assert_eq!(relations_seen["m.replace"]["event_id"], first_edit.as_str(), "{seen}");
    assert_eq!(relations_seen["m.thread"]["count"], 1);
    assert_eq!(relations_seen["m.thread"]["latest_event"]["event_id"], early.as_str());
    let (status, body) = threads(&bob, &room, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), strs(&[&root]), "the thread after the leave is not there");
    // The event after the leave is not found for bob at all.
    let (status, body) = relations(&bob, &room, &other, "").await;
    assert_eq!(status, 404, "{body}");

    let (event_status, _) = mallory.get(&format!("{V3}/rooms/{room}/event/{root}")).await;
    let (status, body) = relations(&mallory, &room, &root, "").await;
    assert_eq!(status, event_status, "as /event answers: {body}");
    assert!(status == 403 || status == 404);
    assert!(body.get("chunk").is_none());
    let (status, body) = relations(&mallory, &room, &root, "/m.thread?recurse=true").await;
    assert_eq!(status, event_status, "{body}");
    let (status, body) = threads(&mallory, &room, "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, _) = relations(&mallory, "!nothere:localhost", &root, "").await;
    assert!(status == 403 || status == 404);
    let anonymous = Client::new(&server);
    let (status, _) = relations(&anonymous, &room, &root, "").await;
    assert_eq!(status, 401);
}

/// Thread-aware read receipts: `thread_id` a thread root takes the root and events of its
/// thread, `main` events outside threads; anything else is 400 `M_INVALID_PARAM`.
async fn thread_receipts_must_fit_the_thread(backend: Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;
    let root = send(&alice, &room, "m.room.message", text("root")).await;
    let reply = send(&alice, &room, "m.room.message", related("m.thread", &root, "r")).await;
    let reply_edit = send(&alice, &room, "m.room.message", edit(&reply, "r!")).await;
    let plain = send(&alice, &room, "m.room.message", text("plain")).await;
    let receipt = |event: String, thread: &str| {
        let alice = alice.clone();
        let room = room.clone();
        let body = json!({"thread_id": thread});
        async move { alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{event}"), &body).await }
    };
    for (event, thread) in [
        (&reply, root.as_str()),
        (&reply_edit, &root),
        (&root, &root),
        (&plain, "main"),
        (&root, "main"),
    ] {
        let (status, body) = receipt(event.clone(), thread).await;
        assert_eq!(status, 200, "{event} in {thread}: {body}");
    }
    for (event, thread) in [(&plain, root.as_str()), (&reply, "main"), (&root, reply.as_str())] {
        let (status, body) = receipt(event.clone(), thread).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{event} in {thread}");
    }
}

crate::on_every_backend!(
    relations_page_both_ways_by_type,
    relations_recurse_three_levels,
    bundled_aggregations_everywhere,
    threads_by_latest_activity,
    relation_loops_are_refused_or_ignored,
    strangers_and_departed_users,
    thread_receipts_must_fit_the_thread,
);

/// Another server's thread reply is indexed as it is received: listed by `/relations` and
/// counted in the root's bundle on our side.
#[tokio::test]
async fn relations_received_over_federation_are_indexed() {
    use crate::federation::{call, create_room};
    let net = matrix_homeserver::testing::TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(
        a,
        &alice.access_token,
        json!({"preset": "public_chat", "room_alias_name": "threads"}),
    )
    .await;
    let (status, joined) = call(
        b,
        &bob.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/join/%23threads:a.test",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{joined}");
    let path = format!("{V3}/rooms/{room}/send/m.room.message/root");
    let (status, sent) =
        call(a, &alice.access_token, reqwest::Method::PUT, &path, text("root")).await;
    assert_eq!(status, 200, "{sent}");
    let root = sent["event_id"].as_str().expect("an id").to_owned();
    // bob's server has the root once bob can read it.
    let mut reply = None;
    for _ in 0..100 {
        let path = format!("{V3}/rooms/{room}/send/m.room.message/reply");
        let (status, sent) = call(
            b,
            &bob.access_token,
            reqwest::Method::PUT,
            &path,
            related("m.thread", &root, "from b"),
        )
        .await;
        if status == 200 {
            reply = sent["event_id"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let reply = reply.expect("bob replied");
    for _ in 0..100 {
        let path = format!("{V1}/rooms/{room}/relations/{root}/m.thread");
        let (status, body) =
            call(a, &alice.access_token, reqwest::Method::GET, &path, json!({})).await;
        assert_eq!(status, 200, "{body}");
        if ids(&body) == [reply.clone()] {
            let path = format!("{V3}/rooms/{room}/event/{root}");
            let (_, event) =
                call(a, &alice.access_token, reqwest::Method::GET, &path, json!({})).await;
            let thread = &event["unsigned"]["m.relations"]["m.thread"];
            assert_eq!(thread["count"], 1, "{event}");
            assert_eq!(thread["latest_event"]["sender"], "@bob:b.test");
            assert_eq!(thread["current_user_participated"], true, "alice sent the root");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("bob's reply never reached a's relations");
}
