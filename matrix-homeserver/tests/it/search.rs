//! Server-side search (`POST /search`, `room_events`) and reporting content, over HTTP on
//! every backend: what is found, what never is (rooms never joined, history after a leave or
//! before a join the room hides, redacted events), pagination, context, groups, bounds, and
//! the reports' errors.

use matrix_homeserver::{Config, RateLimit, RegistrationMode};
use serde_json::{Value, json};

use crate::rooms::{create, send, urlencode, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

crate::on_every_backend!(
    finds_bodies_names_and_topics,
    a_stranger_finds_nothing,
    a_departed_member_finds_up_to_the_leave,
    history_hidden_before_a_join_is_not_found,
    redacted_events_are_not_found,
    pages_follow_each_other_in_both_orders,
    filters_narrow_the_search,
    context_profiles_groups_and_state,
    bad_and_huge_searches_are_refused,
    event_reports_are_stored_and_hide_what_exists,
    room_and_user_reports,
    reports_are_rate_limited,
);

/// Searches `term` with `extra` merged into the `room_events` criteria.
async fn search(client: &Client, term: &str, extra: Value) -> (u16, Value) {
    search_from(client, term, extra, None).await
}

async fn search_from(
    client: &Client,
    term: &str,
    extra: Value,
    next_batch: Option<&str>,
) -> (u16, Value) {
    let mut criteria = json!({"search_term": term});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            criteria[k] = v;
        }
    }
    let path = match next_batch {
        Some(token) => format!("{V3}/search?next_batch={}", urlencode(token)),
        None => format!("{V3}/search"),
    };
    let (status, body) =
        client.post(&path, &json!({"search_categories": {"room_events": criteria}})).await;
    if status == 200 {
        check("search.yaml", "/search", "post", 200, &body);
    }
    (status, body)
}

/// The event ids of a search answer, in order.
fn ids(body: &Value) -> Vec<String> {
    body["search_categories"]["room_events"]["results"]
        .as_array()
        .map(|r| {
            r.iter().filter_map(|x| x["result"]["event_id"].as_str().map(str::to_owned)).collect()
        })
        .unwrap_or_default()
}

fn events(body: &Value) -> &Value {
    &body["search_categories"]["room_events"]
}

async fn sent(client: &Client, room: &str, txn: &str, text: &str) -> String {
    let (status, body) = send(client, room, txn, text).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("an event id").to_owned()
}

async fn join(client: &Client, room: &str) {
    let (status, body) = client.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
}

async fn leave(client: &Client, room: &str) {
    let (status, body) = client.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
}

async fn finds_bodies_names_and_topics(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let room = create(&alice, json!({"name": "Tea Room", "topic": "all about tea"})).await;
    let other = create(&alice, json!({})).await;
    let first = sent(&alice, &room, "t1", "Shall we have TEA?").await;
    sent(&alice, &room, "t2", "coffee instead").await;
    let second = sent(&alice, &other, "t3", "green tea, black tea, any tea").await;

    let (status, body) = search(&alice, "tea", json!({"order_by": "recent"})).await;
    assert_eq!(status, 200, "{body}");
    let found = ids(&body);
    assert_eq!(found.len(), 4, "two messages, the name and the topic: {body}");
    assert_eq!(found[0], second, "most recent first");
    assert!(found.contains(&first));
    let room_events = events(&body);
    assert_eq!(room_events["count"], 4);
    assert_eq!(room_events["highlights"], json!(["tea"]));
    assert!(room_events.get("next_batch").is_none(), "one page holds all");
    let result = &room_events["results"][0]["result"];
    assert_eq!(result["sender"], alice_id.as_str());
    assert_eq!(result["content"]["body"], "green tea, black tea, any tea");

    // Ranked: the message with three occurrences comes first.
    let (_, body) = search(&alice, "tea", json!({})).await;
    assert_eq!(ids(&body)[0], second);
    let ranks: Vec<f64> = events(&body)["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["rank"].as_f64().expect("a rank"))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");

    // Keys: only names, only topics; several words must all occur.
    let (_, body) = search(&alice, "tea", json!({"keys": ["content.name"]})).await;
    let found = ids(&body);
    assert_eq!(found.len(), 1);
    assert_eq!(events(&body)["results"][0]["result"]["type"], "m.room.name");
    let (_, body) = search(&alice, "about TEA", json!({"keys": ["content.topic"]})).await;
    assert_eq!(events(&body)["results"][0]["result"]["type"], "m.room.topic");
    let (_, body) = search(&alice, "tea coffee", json!({})).await;
    assert!(ids(&body).is_empty(), "{body}");
    let (_, body) = search(&alice, "coffee", json!({})).await;
    assert_eq!(ids(&body).len(), 1);
    // Nothing to search for: no results.
    let (status, body) = search(&alice, " ... ", json!({})).await;
    assert_eq!(status, 200);
    assert!(ids(&body).is_empty());
    assert_eq!(events(&body)["count"], 0);
    // No room_events category: an empty answer.
    let (status, body) =
        alice.post(&format!("{V3}/search"), &json!({"search_categories": {}})).await;
    assert_eq!((status, body), (200, json!({"search_categories": {}})));
}

async fn a_stranger_finds_nothing(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (eve, _) = user(&server, "eve").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let public = create(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility",
               "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let private = create(&alice, json!({"invite": [bob_id]})).await;
    sent(&alice, &public, "t1", "secret recipe").await;
    sent(&alice, &private, "t2", "secret plans").await;

    // Never joined: not even the world-readable room is searched, nor the filter's rooms.
    for filter in [json!({}), json!({"filter": {"rooms": [public, private]}})] {
        let (status, body) = search(&eve, "secret", filter).await;
        assert_eq!(status, 200, "{body}");
        assert!(ids(&body).is_empty(), "{body}");
        assert_eq!(events(&body)["count"], 0);
    }
    // Invited, not joined: nothing either.
    let (_, body) = search(&bob, "secret", json!({})).await;
    assert!(ids(&body).is_empty(), "{body}");
    // Without a token: 401.
    let anonymous = Client::new(&server);
    let (status, body) = search(&anonymous, "secret", json!({})).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"));
}

async fn a_departed_member_finds_up_to_the_leave(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    let before = sent(&alice, &room, "t1", "gossip before").await;
    join(&bob, &room).await;
    let during = sent(&alice, &room, "t2", "gossip during").await;
    leave(&bob, &room).await;
    sent(&alice, &room, "t3", "gossip after bob left").await;
    sent(&alice, &room, "t4", "more gossip after").await;

    for order in ["recent", "rank"] {
        let (status, body) = search(&bob, "gossip", json!({"order_by": order})).await;
        assert_eq!(status, 200, "{body}");
        let mut found = ids(&body);
        found.sort();
        let mut expected = vec![before.clone(), during.clone()];
        expected.sort();
        assert_eq!(found, expected, "{order}: up to the leave only");
        assert_eq!(events(&body)["count"], 2, "the count says nothing of later events");
    }
    let (_, body) = search(&bob, "after", json!({})).await;
    assert!(ids(&body).is_empty());
    // Context stops at the leave too.
    let (_, body) =
        search(&bob, "during", json!({"event_context": {"before_limit": 10, "after_limit": 10}}))
            .await;
    let after = &events(&body)["results"][0]["context"]["events_after"];
    let bodies: Vec<&str> = after
        .as_array()
        .expect("events after")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert!(bodies.is_empty(), "no message after the leave: {after}");
    // Forgotten: not searched at all.
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/forget"), &json!({})).await;
    assert_eq!(status, 200);
    let (_, body) = search(&bob, "gossip", json!({})).await;
    assert!(ids(&body).is_empty());
}

async fn history_hidden_before_a_join_is_not_found(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let room = create(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility",
               "state_key": "", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    sent(&alice, &room, "t1", "hidden words").await;
    join(&bob, &room).await;
    let seen = sent(&alice, &room, "t2", "visible words").await;
    let (_, body) = search(&bob, "words", json!({})).await;
    assert_eq!(ids(&body), std::slice::from_ref(&seen));
    let (_, body) = search(&alice, "words", json!({})).await;
    assert_eq!(ids(&body).len(), 2, "the sender sees both");
}

async fn redacted_events_are_not_found(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;
    let gone = sent(&alice, &room, "t1", "regrettable remark").await;
    let kept = sent(&alice, &room, "t2", "a fine remark").await;
    let (status, _) =
        alice.put(&format!("{V3}/rooms/{room}/redact/{}/r1", urlencode(&gone)), &json!({})).await;
    assert_eq!(status, 200);
    let (_, body) = search(&alice, "remark", json!({})).await;
    assert_eq!(ids(&body), [kept]);
    let (_, body) = search(&alice, "regrettable", json!({})).await;
    assert!(ids(&body).is_empty(), "{body}");
    assert_eq!(events(&body)["count"], 0);
}

async fn pages_follow_each_other_in_both_orders(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;
    let mut all = Vec::new();
    for i in 0..13 {
        all.push(sent(&alice, &room, &format!("t{i}"), &format!("biscuit number {i}")).await);
    }
    for order in ["recent", "rank"] {
        let mut seen = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..10 {
            let (status, body) = search_from(
                &alice,
                "biscuit",
                json!({"order_by": order, "filter": {"limit": 4}}),
                next.as_deref(),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let page = ids(&body);
            assert!(page.len() <= 4);
            seen.extend(page);
            next = events(&body)["next_batch"].as_str().map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        assert!(next.is_none(), "{order}: pagination ends");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 13, "{order}: each result once");
        if order == "recent" {
            let mut newest_first = all.clone();
            newest_first.reverse();
            assert_eq!(seen, newest_first);
        }
    }
    // A token of the other order, or no token at all, is refused.
    let (_, body) =
        search(&alice, "biscuit", json!({"order_by": "recent", "filter": {"limit": 4}})).await;
    let token = events(&body)["next_batch"].as_str().expect("a token").to_owned();
    let (status, body) =
        search_from(&alice, "biscuit", json!({"order_by": "rank"}), Some(&token)).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = search_from(&alice, "biscuit", json!({}), Some("garbage")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    // A limit past the bound is lowered to it.
    let (status, body) = search(&alice, "biscuit", json!({"filter": {"limit": 100000}})).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body).len(), 13);
}

async fn filters_narrow_the_search(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let one = create(&alice, json!({"preset": "public_chat"})).await;
    let two = create(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &one).await;
    let a1 = sent(&alice, &one, "t1", "scone").await;
    let b1 = sent(&bob, &one, "t2", "scone").await;
    let a2 = sent(&alice, &two, "t3", "scone").await;
    let (status, notice) = alice
        .put(&format!("{V3}/rooms/{two}/send/m.room.notice.custom/t4"), &json!({"body": "scone"}))
        .await;
    assert_eq!(status, 200, "{notice}");

    let recent = |filter: Value| json!({"order_by": "recent", "filter": filter});
    let (_, body) = search(&alice, "scone", recent(json!({"rooms": [one]}))).await;
    assert_eq!(ids(&body), [b1.clone(), a1.clone()]);
    let (_, body) = search(&alice, "scone", recent(json!({"not_rooms": [one]}))).await;
    assert_eq!(ids(&body), std::slice::from_ref(&a2), "only messages are indexed");
    let (_, body) = search(&alice, "scone", recent(json!({"senders": [bob_id]}))).await;
    assert_eq!(ids(&body), std::slice::from_ref(&b1));
    let (_, body) = search(&alice, "scone", recent(json!({"not_senders": [bob_id]}))).await;
    assert_eq!(ids(&body), [a2.clone(), a1.clone()]);
    let (_, body) = search(&alice, "scone", recent(json!({"types": ["m.room.*"]}))).await;
    assert_eq!(ids(&body).len(), 3, "patterns match");
    let (_, body) = search(&alice, "scone", recent(json!({"not_types": ["m.room.message"]}))).await;
    assert!(ids(&body).is_empty());
    // Bob searches the same words: only the room he is in.
    let (_, body) = search(&bob, "scone", recent(json!({}))).await;
    assert_eq!(ids(&body), [b1, a1]);
}

async fn context_profiles_groups_and_state(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (status, _) = alice
        .put(
            &format!("{V3}/profile/{}/displayname", urlencode(&alice_id)),
            &json!({"displayname": "Alice A."}),
        )
        .await;
    assert_eq!(status, 200);
    let room = create(&alice, json!({"name": "Kitchen"})).await;
    let other = create(&alice, json!({})).await;
    let first = sent(&alice, &room, "t1", "one").await;
    let hit = sent(&alice, &room, "t2", "the cake is here").await;
    let third = sent(&alice, &room, "t3", "three").await;
    let other_hit = sent(&alice, &other, "t4", "cake elsewhere").await;

    let (status, body) = search(
        &alice,
        "cake",
        json!({"order_by": "recent",
               "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": true},
               "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
               "include_state": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let room_events = events(&body);
    assert_eq!(ids(&body), [other_hit.clone(), hit.clone()]);
    let context = &room_events["results"][1]["context"];
    assert_eq!(context["events_before"][0]["event_id"], first.as_str(), "{context}");
    assert_eq!(context["events_after"][0]["event_id"], third.as_str());
    assert_eq!(context["events_before"].as_array().map(Vec::len), Some(1));
    assert!(context["start"].is_string() && context["end"].is_string());
    assert_eq!(context["profile_info"][&alice_id]["displayname"], "Alice A.");

    let by_room = &room_events["groups"]["room_id"];
    assert_eq!(by_room[&other]["results"], json!([other_hit]));
    assert_eq!(by_room[&other]["order"], 0);
    assert_eq!(by_room[&room]["results"], json!([hit]));
    assert_eq!(by_room[&room]["order"], 1);
    assert_eq!(
        room_events["groups"]["sender"][&alice_id]["results"].as_array().map(Vec::len),
        Some(2)
    );
    let state = room_events["state"][&room].as_array().expect("the room's state");
    assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Kitchen"));
    assert!(room_events["state"][&other].is_array());

    // Unknown group keys are refused.
    let (status, body) =
        search(&alice, "cake", json!({"groupings": {"group_by": [{"key": "type"}]}})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
}

async fn bad_and_huge_searches_are_refused(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;
    sent(&alice, &room, "t1", "words").await;
    let cases = [
        (json!({"search_term": "x".repeat(5000)}), "M_INVALID_PARAM"),
        (
            json!({"search_term": (0..40).map(|i| format!("w{i} ")).collect::<String>()}),
            "M_INVALID_PARAM",
        ),
        (json!({"search_term": "words", "keys": ["content.secret"]}), "M_INVALID_PARAM"),
        (json!({"search_term": "words", "order_by": "random"}), "M_INVALID_PARAM"),
        (json!({"search_term": "words", "filter": {"limit": 0}}), "M_INVALID_PARAM"),
        (json!({"search_term": "words", "filter": "not an object"}), "M_BAD_JSON"),
        (json!({"search_term": 5}), "M_BAD_JSON"),
        (json!({"keys": ["content.body"]}), "M_BAD_JSON"),
        (json!({"search_term": "words", "filter": {"rooms": vec!["!a:b"; 5000]}}), "M_TOO_LARGE"),
    ];
    for (i, (criteria, code)) in cases.into_iter().enumerate() {
        let (status, body) = alice
            .post(&format!("{V3}/search"), &json!({"search_categories": {"room_events": criteria}}))
            .await;
        assert_eq!((status, errcode(&body)), (400, code), "case {i}: {body}");
    }
    let (status, body) = alice.post(&format!("{V3}/search"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    // Long words are cut alike on both sides: still found, never an error.
    let long = "y".repeat(900);
    sent(&alice, &room, "t2", &long).await;
    let (status, body) = search(&alice, &long, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body).len(), 1);
}

async fn report(client: &Client, path: &str, body: Value) -> (u16, Value) {
    let (status, answer) = client.post(&format!("{V3}{path}"), &body).await;
    if status == 200 {
        assert_eq!(answer, json!({}));
    }
    (status, answer)
}

async fn event_reports_are_stored_and_hide_what_exists(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let (eve, _) = user(&server, "eve").await;
    let room = create(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility",
               "state_key": "", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    let early = sent(&alice, &room, "t1", "before bob").await;
    join(&bob, &room).await;
    let bad = sent(&alice, &room, "t2", "offensive").await;
    let path = |event: &str| format!("/rooms/{room}/report/{}", urlencode(event));

    let (status, body) = report(&bob, &path(&bad), json!({"reason": "rude", "score": -50})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = report(&bob, &path(&bad), json!({})).await;
    assert_eq!(status, 200, "the reason is optional");
    let reports = server.storage().reports(0, 10).await.expect("reads");
    assert_eq!(reports.len(), 2);
    let first = &reports[0].report;
    assert_eq!(first.reason.as_deref(), Some("rude"));
    assert_eq!(first.score, Some(-50));
    assert_eq!(
        first.target,
        matrix_storage::ReportTarget::Event { room_id: room.clone(), event_id: bad.clone() }
    );
    assert!(first.reporter.starts_with("@bob:"));

    // The same 404 for: a stranger, an unknown event, one Bob may not see, a redacted one,
    // an event of another room.
    let other = create(&alice, json!({})).await;
    let elsewhere = sent(&alice, &other, "t3", "elsewhere").await;
    let (status, _) =
        alice.put(&format!("{V3}/rooms/{room}/redact/{}/r1", urlencode(&bad)), &json!({})).await;
    assert_eq!(status, 200);
    for (who, event) in [
        (&eve, bad.as_str()),
        (&bob, "$nothing"),
        (&bob, early.as_str()),
        (&bob, bad.as_str()),
        (&bob, elsewhere.as_str()),
    ] {
        let (status, body) = report(who, &path(event), json!({"reason": "x"})).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{event}: {body}");
    }
    let (status, body) =
        report(&bob, &format!("/rooms/!nowhere:localhost/report/{}", urlencode(&early)), json!({}))
            .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    assert_eq!(server.storage().reports(0, 10).await.expect("reads").len(), 2, "none stored");

    // Bounds and shapes.
    let (status, body) = report(&alice, &path(&early), json!({"reason": "r".repeat(5000)})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = report(&alice, &path(&early), json!({"reason": 5})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = report(&alice, "/rooms/not-a-room/report/$x", json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    // A score out of range (the field left the spec) is not kept, and refuses nothing.
    let (status, _) = report(&alice, &path(&early), json!({"score": 7})).await;
    assert_eq!(status, 200);
    let reports = server.storage().reports(0, 10).await.expect("reads");
    assert_eq!(reports.last().map(|r| r.report.score), Some(None));
    assert_eq!(reports.last().map(|r| r.report.reporter.as_str()), Some(alice_id.as_str()));
}

async fn room_and_user_reports(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (eve, eve_id) = user(&server, "eve").await;
    let room = create(&alice, json!({})).await;

    // A room may be reported without being in it; an unknown room is 404.
    let (status, _) =
        report(&eve, &format!("/rooms/{room}/report"), json!({"reason": "spam"})).await;
    assert_eq!(status, 200);
    let (status, body) =
        report(&eve, "/rooms/!unknown:localhost/report", json!({"reason": "spam"})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = report(&eve, &format!("/rooms/{room}/report"), json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "reason is required");

    // Users: ours that exist, and other servers' (which cannot be checked).
    let path = |user: &str| format!("/users/{}/report", urlencode(user));
    let (status, _) = report(&alice, &path(&eve_id), json!({"reason": ""})).await;
    assert_eq!(status, 200, "a blank reason is allowed");
    let (status, _) =
        report(&alice, &path("@someone:elsewhere.example"), json!({"reason": "x"})).await;
    assert_eq!(status, 200);
    let (status, body) = report(&alice, &path("@nobody:localhost"), json!({"reason": "x"})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = report(&alice, &path("not-a-user"), json!({"reason": "x"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = report(&alice, &path(&eve_id), json!({"reason": "x".repeat(5000)})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let anonymous = Client::new(&server);
    let (status, _) = report(&anonymous, &path(&eve_id), json!({"reason": "x"})).await;
    assert_eq!(status, 401);

    let reports = server.storage().reports(0, 10).await.expect("reads");
    let targets: Vec<_> = reports.iter().map(|r| r.report.target.clone()).collect();
    assert_eq!(
        targets,
        [
            matrix_storage::ReportTarget::Room { room_id: room },
            matrix_storage::ReportTarget::User { user_id: eve_id },
            matrix_storage::ReportTarget::User { user_id: "@someone:elsewhere.example".into() },
        ]
    );
    assert_eq!(reports[1].report.reason.as_deref(), Some(""));
    // Paginated by id.
    let page = server.storage().reports(reports[0].id, 1).await.expect("reads");
    assert_eq!(page, reports[1..2].to_vec());
}

async fn reports_are_rate_limited(backend: crate::Backend) {
    let mut config = Config::new("localhost");
    config.registration.mode = RegistrationMode::Open;
    config.rate_limits.message = RateLimit::new(0.1, 3.0);
    let Some(server) = crate::start_with(backend, config).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (_, eve_id) = user(&server, "eve").await;
    let path = format!("/users/{}/report", urlencode(&eve_id));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, body) = report(&alice, &path, json!({"reason": "spam"})).await;
        if status == 429 {
            assert_eq!(errcode(&body), "M_LIMIT_EXCEEDED");
            assert!(body["retry_after_ms"].is_u64());
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(server.storage().reports(0, 10).await.expect("reads").len(), 3);
}

/// Polls `search` on `client` until `done` holds of the event ids found (bounded).
async fn search_until(client: &Client, term: &str, done: impl Fn(&[String]) -> bool) -> bool {
    for _ in 0..60 {
        let (status, body) = search(client, term, json!({"order_by": "recent"})).await;
        assert_eq!(status, 200, "{body}");
        if done(&ids(&body)) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    false
}

/// Events received over federation are indexed as they are stored, and their redactions
/// (received too) take them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_events_are_indexed_and_their_redactions_remove_them() {
    use matrix_homeserver::testing::TestFederation;
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let alice_client = Client::new(a).with_token(&alice.access_token);
    let bob_client = Client::new(b).with_token(&bob.access_token);
    let room =
        create(&alice_client, json!({"preset": "public_chat", "room_alias_name": "bake"})).await;
    let (status, joined) =
        bob_client.post(&format!("{V3}/join/{}", urlencode("#bake:a.test")), &json!({})).await;
    assert_eq!(status, 200, "{joined}");
    let muffin = sent(&alice_client, &room, "t1", "a federated muffin").await;
    assert!(
        search_until(&bob_client, "muffin", |found| found == [muffin.clone()]).await,
        "the received message is found on b"
    );
    let (status, _) = alice_client
        .put(&format!("{V3}/rooms/{room}/redact/{}/r1", urlencode(&muffin)), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(
        search_until(&bob_client, "muffin", <[String]>::is_empty).await,
        "the received redaction takes it out on b"
    );
}
