//! The search index and content reports.

use super::{Store, apply, create_room, event};
use crate::{
    ChangeSet, ContentReport, ReportTarget, SearchCursor, SearchEntry, SearchOrder, SearchQuery,
    SearchRoom, StreamPos, query_tokens,
};

fn entry(id: &str, room: &str, sender: &str, kind: &str, key: &str, text: &str) -> SearchEntry {
    SearchEntry {
        event_id: id.to_owned(),
        room_id: room.to_owned(),
        sender: sender.to_owned(),
        kind: kind.to_owned(),
        key: key.to_owned(),
        text: text.to_owned(),
    }
}

pub(super) fn body(id: &str, room: &str, sender: &str, text: &str) -> SearchEntry {
    entry(id, room, sender, "m.room.message", "content.body", text)
}

pub(super) fn query(text: &str, rooms: &[&str]) -> SearchQuery {
    SearchQuery {
        tokens: query_tokens(text),
        rooms: rooms.iter().map(|r| SearchRoom { room_id: (*r).to_owned(), upto: None }).collect(),
        keys: Vec::new(),
        senders: None,
        not_senders: Vec::new(),
        types: None,
        not_types: Vec::new(),
        order: SearchOrder::Recent,
        from: None,
        limit: 10,
    }
}

pub(super) async fn ids(store: &Store, query: &SearchQuery) -> Vec<String> {
    let page = store.search(query).await.expect("searches");
    page.hits.into_iter().map(|h| h.event_id).collect()
}

/// Indexes `entries` with their events (in the timeline, in this order).
async fn index(store: &Store, entries: Vec<SearchEntry>) -> Vec<StreamPos> {
    let mut changes = ChangeSet::new();
    changes.events = entries.iter().map(|e| event(&e.event_id, &e.room_id, &[], true)).collect();
    changes.search = entries;
    apply(store, changes).await.stream
}

/// Every token must occur (case and punctuation aside), only in the rooms asked and up to
/// their bounds, with the filters; most recent first; an entry whose event is not a timeline
/// event of its change set is not indexed.
pub async fn search_matches_tokens_in_rooms(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!a"), create_room("!b")];
    apply(&store, changes).await;
    let positions = index(
        &store,
        vec![
            body("$1", "!a", "@x:s", "Hello, World!"),
            body("$2", "!a", "@y:s", "the world is round"),
            body("$3", "!b", "@x:s", "HELLO world again"),
            entry("$4", "!a", "@x:s", "m.room.name", "content.name", "World news"),
            body("$5", "!a", "@x:s", "nothing here"),
        ],
    )
    .await;
    // An entry for an outlier is skipped.
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$out", "!a", &[], false)];
    changes.search = vec![body("$out", "!a", "@x:s", "world")];
    apply(&store, changes).await;

    assert_eq!(ids(&store, &query("world", &["!a"])).await, ["$4", "$2", "$1"]);
    assert_eq!(ids(&store, &query("hello WORLD", &["!a", "!b"])).await, ["$3", "$1"]);
    assert!(ids(&store, &query("world", &["!c"])).await.is_empty(), "an unknown room");
    assert!(ids(&store, &query("worl", &["!a"])).await.is_empty(), "whole tokens only");
    assert!(ids(&store, &query("world zebra", &["!a"])).await.is_empty(), "every token");
    assert!(ids(&store, &query("", &["!a"])).await.is_empty(), "no token: nothing");
    let page = store.search(&query("world", &["!a", "!b"])).await.expect("searches");
    assert_eq!(page.count, 4);
    assert!(page.hits.windows(2).all(|w| w[0].pos > w[1].pos), "most recent first");
    assert_eq!(page.hits[0].room_id, "!a");

    let mut bounded = query("world", &["!a"]);
    bounded.rooms[0].upto = Some(positions[1]);
    assert_eq!(ids(&store, &bounded).await, ["$2", "$1"], "up to the room's bound");

    let mut filtered = query("world", &["!a", "!b"]);
    filtered.keys = vec!["content.body".to_owned()];
    assert_eq!(ids(&store, &filtered).await, ["$3", "$2", "$1"]);
    filtered.senders = Some(vec!["@x:s".to_owned()]);
    assert_eq!(ids(&store, &filtered).await, ["$3", "$1"]);
    filtered.not_senders = vec!["@x:s".to_owned()];
    assert!(ids(&store, &filtered).await.is_empty());
    let mut typed = query("world", &["!a"]);
    typed.types = Some(vec!["m.room.name".to_owned()]);
    assert_eq!(ids(&store, &typed).await, ["$4"]);
    typed.types = None;
    typed.not_types = vec!["m.room.message".to_owned()];
    assert_eq!(ids(&store, &typed).await, ["$4"]);
}

/// Pages follow each other without repeats or gaps, in both orders; `rank` puts the entries
/// with more occurrences first.
pub async fn search_pages_and_ranks(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!a")];
    apply(&store, changes).await;
    let mut entries = Vec::new();
    for i in 0..25 {
        let text = if i == 3 { "tea tea tea tea".to_owned() } else { format!("tea number {i}") };
        entries.push(body(&format!("${i:02}"), "!a", "@x:s", &text));
    }
    entries.push(body("$tea2", "!a", "@x:s", "tea and more tea"));
    index(&store, entries).await;

    for order in [SearchOrder::Recent, SearchOrder::Rank] {
        let mut q = query("tea", &["!a"]);
        q.order = order;
        q.limit = 7;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = store.search(&q).await.expect("searches");
            // Ranked pages count every match; recent ones those from where they start.
            let left = 26 - if order == SearchOrder::Recent { seen.len() as u64 } else { 0 };
            assert_eq!(page.count, left, "{order:?}");
            assert!(page.hits.len() <= 7);
            seen.extend(page.hits.iter().map(|h| h.event_id.clone()));
            pages += 1;
            match page.next {
                Some(next) => q.from = Some(next),
                None => break,
            }
            assert!(pages < 10, "pagination ends");
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!((seen.len(), unique.len()), (26, 26), "{order:?}: every hit once");
        if order == SearchOrder::Rank {
            assert_eq!(&seen[..2], ["$03", "$tea2"], "more occurrences rank higher");
            assert_eq!(seen[2], "$24", "then the most recent");
        } else {
            assert_eq!(seen[0], "$tea2");
            assert_eq!(seen[25], "$00");
        }
    }
    let mut q = query("tea", &["!a"]);
    q.from = Some(SearchCursor::Before(StreamPos(1)));
    assert!(store.search(&q).await.expect("searches").hits.is_empty());
}

/// A redacted event leaves the index, also when the redaction was stored first, and an event
/// indexed twice is indexed once.
pub async fn redacted_events_leave_the_index(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!a")];
    apply(&store, changes).await;
    index(
        &store,
        vec![body("$1", "!a", "@x:s", "secret plans"), body("$2", "!a", "@x:s", "secret")],
    )
    .await;
    assert_eq!(ids(&store, &query("secret", &["!a"])).await, ["$2", "$1"]);
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$r", "!a", &[], true)];
    changes.redactions = vec![("$1".to_owned(), "$r".to_owned())];
    apply(&store, changes).await;
    assert_eq!(ids(&store, &query("secret", &["!a"])).await, ["$2"]);
    assert!(ids(&store, &query("plans", &["!a"])).await.is_empty());

    // The redaction came before its event (out of order, over federation).
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$r3", "!a", &[], true)];
    changes.redactions = vec![("$3".to_owned(), "$r3".to_owned())];
    apply(&store, changes).await;
    index(&store, vec![body("$3", "!a", "@x:s", "secret again")]).await;
    assert_eq!(ids(&store, &query("secret", &["!a"])).await, ["$2"]);

    // Redacted in the change set that stores it.
    let mut changes = ChangeSet::new();
    changes.events = vec![event("$4", "!a", &[], true), event("$r4", "!a", &[], true)];
    changes.search = vec![body("$4", "!a", "@x:s", "secret too")];
    changes.redactions = vec![("$4".to_owned(), "$r4".to_owned())];
    apply(&store, changes).await;
    assert_eq!(ids(&store, &query("secret", &["!a"])).await, ["$2"]);
}

/// Long texts and odd text: tokens are cut, bounded, and never fail a write.
pub async fn search_bounds_odd_text(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!a")];
    apply(&store, changes).await;
    let long_word = "x".repeat(500);
    let many: String = (0..3000).map(|i| format!("w{i} ")).collect();
    index(
        &store,
        vec![
            body("$long", "!a", "@x:s", &long_word),
            body("$many", "!a", "@x:s", &many),
            body("$odd", "!a", "@x:s", "Ünïcödé — straße 東京 'quoted' & | ! :* <-> \0 end"),
        ],
    )
    .await;
    assert_eq!(ids(&store, &query(&"X".repeat(64), &["!a"])).await, ["$long"]);
    assert_eq!(ids(&store, &query(&"x".repeat(300), &["!a"])).await, ["$long"], "cut alike");
    assert_eq!(ids(&store, &query("w0 w1023", &["!a"])).await, ["$many"]);
    assert!(ids(&store, &query("w2999", &["!a"])).await.is_empty(), "past the token bound");
    assert_eq!(ids(&store, &query("STRASSE straße", &["!a"])).await.len(), 0);
    assert_eq!(ids(&store, &query("ünïcödé STRAßE", &["!a"])).await, ["$odd"]);
    assert_eq!(ids(&store, &query("東京 end", &["!a"])).await, ["$odd"]);
    assert_eq!(ids(&store, &query("quoted :* <->", &["!a"])).await, ["$odd"]);
}

/// The candidates are the [`crate::MAX_CANDIDATES`] most recent matches of all the rooms
/// searched together (not that many per room), whatever the order of the query's tokens
/// (a rare one last, one given twice); rank pages cover exactly those candidates.
pub async fn search_candidates_span_rooms(store: Store) {
    let mut changes = ChangeSet::new();
    changes.rooms = vec![create_room("!a"), create_room("!b"), create_room("!c")];
    apply(&store, changes).await;
    let rooms = ["!a", "!b", "!c"];
    let total = 3300usize;
    let mut entries = Vec::with_capacity(total);
    for i in 0..total {
        let text = match (i % 2, i % 500) {
            (_, 7) => format!("tea rare {i}"),
            (0, _) => format!("tea tea {i}"),
            _ => format!("tea {i}"),
        };
        entries.push(body(&format!("$e{i:04}"), rooms[i % 3], "@x:s", &text));
    }
    index(&store, entries).await;
    let id = |i: usize| format!("$e{i:04}");

    let page = store.search(&query("tea", &rooms)).await.expect("searches");
    assert_eq!(page.count, crate::MAX_CANDIDATES as u64, "the count is capped");
    let newest: Vec<String> = (total - 10..total).rev().map(id).collect();
    assert_eq!(page.hits.iter().map(|h| h.event_id.clone()).collect::<Vec<_>>(), newest);

    // Rooms !a and !b: 2,200 matches, the 2,000 most recent of the two are the candidates.
    let in_ab: Vec<usize> = (0..total).rev().filter(|i| i % 3 != 2).collect();
    let expected: std::collections::BTreeSet<String> =
        in_ab[..crate::MAX_CANDIDATES].iter().map(|i| id(*i)).collect();
    let mut q = query("tea", &["!a", "!b"]);
    q.order = SearchOrder::Rank;
    q.limit = 700;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let page = store.search(&q).await.expect("searches");
        assert_eq!(page.count, crate::MAX_CANDIDATES as u64);
        seen.extend(page.hits.into_iter().map(|h| h.event_id));
        match page.next {
            Some(next) => q.from = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), crate::MAX_CANDIDATES, "every candidate once");
    let got: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(got, expected, "the most recent matches of both rooms");
    // "tea tea" (even numbers, not the rare ones) ranks above "tea".
    let doubled = |e: &String| {
        let i: usize = e[2..].parse().expect("a number");
        i.is_multiple_of(2) && i % 500 != 7
    };
    let twice = seen.iter().filter(|e| doubled(e)).count();
    assert!(seen[..twice].iter().all(doubled), "more occurrences first");
    assert!(twice > 900, "about half are doubled: {twice}");

    // Several tokens, the rare one last or given twice: the same matches, most recent first.
    let rare: Vec<String> = (0..total).rev().filter(|i| i % 500 == 7).map(id).collect();
    assert_eq!(rare.len(), 7);
    assert_eq!(ids(&store, &query("tea rare", &rooms)).await, rare);
    assert_eq!(ids(&store, &query("rare tea", &rooms)).await, rare);
    let mut twice_given = query("tea rare", &rooms);
    twice_given.tokens = vec!["tea".into(), "rare".into(), "tea".into()];
    assert_eq!(ids(&store, &twice_given).await, rare);
    // With a filter the candidates are read and checked (none of them is a name).
    let mut named = query("rare tea", &rooms);
    named.keys = vec!["content.name".to_owned()];
    assert!(ids(&store, &named).await.is_empty());
    named.keys = vec!["content.body".to_owned()];
    named.senders = Some(vec!["@x:s".to_owned()]);
    assert_eq!(ids(&store, &named).await, rare);
    // A later page of `recent`, past the bound of one room.
    let mut bounded = query("rare", &["!a", "!b", "!c"]);
    let positions = store.search(&query("rare", &rooms)).await.expect("searches").hits;
    bounded.rooms[1].upto = Some(StreamPos(0));
    bounded.from = Some(SearchCursor::Before(positions[1].pos));
    let want: Vec<String> =
        positions[2..].iter().filter(|h| h.room_id != "!b").map(|h| h.event_id.clone()).collect();
    assert_eq!(ids(&store, &bounded).await, want);
}

/// Reports are kept in order with increasing ids, and read a page at a time.
pub async fn reports_round_trip(store: Store) {
    let reports = vec![
        ContentReport {
            reporter: "@a:s".to_owned(),
            target: ReportTarget::Event { room_id: "!r".to_owned(), event_id: "$e".to_owned() },
            reason: Some("spam".to_owned()),
            score: Some(-100),
            received_ts: 5,
        },
        ContentReport {
            reporter: "@b:s".to_owned(),
            target: ReportTarget::Room { room_id: "!r".to_owned() },
            reason: None,
            score: None,
            received_ts: 6,
        },
    ];
    let mut changes = ChangeSet::new();
    changes.reports = reports.clone();
    apply(&store, changes).await;
    let third = ContentReport {
        reporter: "@a:s".to_owned(),
        target: ReportTarget::User { user_id: "@bad:s".to_owned() },
        reason: Some("rude".to_owned()),
        score: None,
        received_ts: 7,
    };
    let mut changes = ChangeSet::new();
    changes.reports = vec![third.clone()];
    apply(&store, changes).await;

    let all = store.reports(0, 10).await.expect("reads");
    let got: Vec<ContentReport> = all.iter().map(|r| r.report.clone()).collect();
    assert_eq!(got, [reports[0].clone(), reports[1].clone(), third]);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "increasing ids");
    let page = store.reports(all[0].id, 1).await.expect("reads");
    assert_eq!(page, all[1..2].to_vec());
    assert!(store.reports(all[2].id, 10).await.expect("reads").is_empty());

    // Deleted (the last one, and an id never handed out): gone, and its id is not reused.
    let mut changes = ChangeSet::new();
    changes.deleted_reports = vec![all[2].id, all[2].id + 100];
    apply(&store, changes).await;
    assert_eq!(store.reports(0, 10).await.expect("reads"), all[..2].to_vec());
    let mut changes = ChangeSet::new();
    changes.reports = vec![all[2].report.clone()];
    apply(&store, changes).await;
    let after = store.reports(0, 10).await.expect("reads");
    assert_eq!(after.len(), 3);
    assert!(after[2].id > all[2].id, "a deleted report's id is not handed out again");
}
