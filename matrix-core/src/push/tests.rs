//! Each condition against the spec's examples, the default rules, and the bounds.

use ruma_common::push::{PushCondition, Ruleset};
use ruma_common::user_id;
use serde_json::json;

use super::*;
use crate::json::parse_strict;

fn event(value: serde_json::Value) -> Object {
    match parse_strict(value.to_string().as_bytes()).expect("JSON") {
        Value::Object(o) => o,
        _ => unreachable!("an object"),
    }
}

fn message(body: &str) -> Object {
    event(json!({
        "type": "m.room.message",
        "sender": "@bob:example.org",
        "room_id": "!room:example.org",
        "event_id": "$e",
        "content": {"msgtype": "m.text", "body": body},
    }))
}

fn ctx<'a>() -> PushContext<'a> {
    PushContext {
        room_id: "!room:example.org",
        user_id: "@alice:example.org",
        display_name: Some("Alice"),
        member_count: 3,
        sender_power_level: 0,
        notification_levels: None,
    }
}

fn cond(value: serde_json::Value) -> PushCondition {
    serde_json::from_value(value).expect("a condition")
}

fn holds(c: serde_json::Value, event: &Object) -> bool {
    condition(&cond(c), event, &ctx())
}

#[test]
fn event_match_globs_whole_value_case_insensitively() {
    let e = message("hello");
    assert!(holds(json!({"kind": "event_match", "key": "type", "pattern": "m.room.message"}), &e));
    assert!(holds(json!({"kind": "event_match", "key": "type", "pattern": "M.ROOM.*"}), &e));
    assert!(holds(json!({"kind": "event_match", "key": "type", "pattern": "m.room.messag?"}), &e));
    // The whole value: a prefix is not enough.
    assert!(!holds(json!({"kind": "event_match", "key": "type", "pattern": "m.room"}), &e));
    assert!(!holds(
        json!({"kind": "event_match", "key": "type", "pattern": "m.room.message?"}),
        &e
    ));
    // The spec's example: content.body "*" matches any string body, not an absent one.
    assert!(holds(json!({"kind": "event_match", "key": "content.body", "pattern": "*"}), &e));
    assert!(!holds(json!({"kind": "event_match", "key": "content.nope", "pattern": "*"}), &e));
    // Non-string values never match.
    let n = event(json!({"type": "x", "content": {"n": 1, "o": {}}}));
    assert!(!holds(json!({"kind": "event_match", "key": "content.n", "pattern": "*"}), &n));
    assert!(!holds(json!({"kind": "event_match", "key": "content.o", "pattern": "*"}), &n));
    assert!(glob_whole("ÄB*", "äbc"));
    assert!(glob_whole("a*b*c", "aXXbYYc"));
    assert!(!glob_whole("a*b*c", "aXXbYY"));
    assert!(glob_whole("", ""));
}

#[test]
fn dotted_paths_unescape_dots_and_backslashes() {
    // The spec's example of dot-separated property paths.
    let e = event(json!({
        "content": {
            "m.relates_to": {"rel_type": "m.replace"},
            "m\\foo": "bar",
            "m.mentions": {"user_ids": ["@alice:example.org"]},
        },
    }));
    assert_eq!(
        lookup(&e, "content.m\\.relates_to.rel_type").and_then(Value::as_str),
        Some("m.replace")
    );
    assert_eq!(lookup(&e, "content.m\\\\foo").and_then(Value::as_str), Some("bar"));
    assert_eq!(lookup(&e, "content.m\\foo").and_then(Value::as_str), Some("bar"));
    assert!(lookup(&e, "content.m.relates_to.rel_type").is_none());
    assert!(check_key("content.m\\.relates_to").is_ok());
    assert!(check_key("content..body").is_err());
    assert!(check_key("content.").is_err());
    assert!(check_key("").is_err());
    assert!(check_key(&"a".repeat(MAX_KEY_BYTES + 1)).is_err());
}

#[test]
fn event_property_is_and_contains_compare_scalars_exactly() {
    let e = event(json!({
        "type": "m.room.message",
        "content": {
            "m.mentions": {"user_ids": ["@alice:example.org"], "room": true},
            "n": 5, "s": "Text", "z": null, "list": [1, "a", true, null],
        },
    }));
    let is = |key: &str, value: serde_json::Value| {
        holds(json!({"kind": "event_property_is", "key": key, "value": value}), &e)
    };
    assert!(is("content.m\\.mentions.room", json!(true)));
    assert!(!is("content.m\\.mentions.room", json!(false)));
    assert!(is("content.n", json!(5)));
    assert!(!is("content.n", json!("5")));
    assert!(is("content.s", json!("Text")));
    // Exact, not case-insensitive and not a glob.
    assert!(!is("content.s", json!("text")));
    assert!(!is("content.s", json!("T*")));
    assert!(is("content.z", json!(null)));
    assert!(!is("content.absent", json!(null)));
    let contains = |key: &str, value: serde_json::Value| {
        holds(json!({"kind": "event_property_contains", "key": key, "value": value}), &e)
    };
    assert!(contains("content.m\\.mentions.user_ids", json!("@alice:example.org")));
    assert!(!contains("content.m\\.mentions.user_ids", json!("@bob:example.org")));
    assert!(contains("content.list", json!(1)));
    assert!(contains("content.list", json!(true)));
    assert!(contains("content.list", json!(null)));
    assert!(!contains("content.s", json!("Text")));
}

#[test]
fn contains_display_name_needs_word_boundaries() {
    let c = json!({"kind": "contains_display_name"});
    assert!(holds(c.clone(), &message("hi alice, how are you")));
    assert!(holds(c.clone(), &message("ALICE")));
    assert!(!holds(c.clone(), &message("hi alicexyz")));
    assert!(!holds(c.clone(), &message("malice")));
    let mut nameless = ctx();
    nameless.display_name = None;
    assert!(!condition(&cond(c.clone()), &message("alice"), &nameless));
    nameless.display_name = Some("");
    assert!(!condition(&cond(c), &message("alice"), &nameless));
}

#[test]
fn room_member_count_compares() {
    let e = message("x");
    for (is, expected) in [
        ("3", true),
        ("==3", true),
        ("2", false),
        ("<4", true),
        ("<3", false),
        (">2", true),
        (">3", false),
        ("<=3", true),
        (">=3", true),
        (">=4", false),
    ] {
        assert_eq!(holds(json!({"kind": "room_member_count", "is": is}), &e), expected, "{is}");
    }
}

#[test]
fn sender_notification_permission_reads_the_levels() {
    let e = message("@room");
    let c = cond(json!({"kind": "sender_notification_permission", "key": "room"}));
    let mut context = ctx();
    assert!(!condition(&c, &e, &context), "the default level is 50");
    context.sender_power_level = 50;
    assert!(condition(&c, &e, &context));
    let levels = event(json!({"room": 100}));
    context.notification_levels = Some(&levels);
    assert!(!condition(&c, &e, &context));
    context.sender_power_level = 100;
    assert!(condition(&c, &e, &context));
}

#[test]
fn unknown_conditions_never_match() {
    let c = cond(json!({"kind": "org.example.unknown", "x": 1}));
    assert!(!condition(&c, &message("x"), &ctx()));
}

#[test]
fn default_rules_decide_as_the_spec_says() {
    let alice = user_id!("@alice:example.org");
    let rules = Ruleset::server_default(alice);
    let c = ctx();
    let outcome = |e: &Object| {
        evaluate(&rules, e, &c).map(|o| (o.rule_id.to_owned(), o.notifies(), o.highlights()))
    };
    assert_eq!(outcome(&message("hi")), Some((".m.rule.message".to_owned(), true, false)));
    // A one-to-one room.
    let mut two = c;
    two.member_count = 2;
    let o = evaluate(&rules, &message("hi"), &two).expect("matches");
    assert_eq!(o.rule_id, ".m.rule.room_one_to_one");
    // A mention of the user.
    let mention = event(json!({
        "type": "m.room.message", "sender": "@bob:example.org",
        "content": {"body": "hey", "m.mentions": {"user_ids": ["@alice:example.org"]}},
    }));
    assert_eq!(outcome(&mention), Some((".m.rule.is_user_mention".to_owned(), true, true)));
    // A room mention, by a sender without the level, then with it.
    let room = event(json!({
        "type": "m.room.message", "sender": "@bob:example.org",
        "content": {"body": "all", "m.mentions": {"room": true}},
    }));
    assert_eq!(outcome(&room).map(|o| o.0), Some(".m.rule.message".to_owned()));
    let mut op = c;
    op.sender_power_level = 100;
    assert_eq!(evaluate(&rules, &room, &op).map(|o| o.rule_id), Some(".m.rule.is_room_mention"));
    // Notices and edits do not notify; an encrypted event does.
    let notice =
        event(json!({"type": "m.room.message", "content": {"msgtype": "m.notice", "body": "x"}}));
    assert_eq!(outcome(&notice), Some((".m.rule.suppress_notices".to_owned(), false, false)));
    let edit = event(
        json!({"type": "m.room.message", "content": {"body": "x", "m.relates_to": {"rel_type": "m.replace"}}}),
    );
    assert_eq!(
        outcome(&edit).map(|o| (o.0, o.1)),
        Some((".m.rule.suppress_edits".to_owned(), false))
    );
    let encrypted = event(json!({"type": "m.room.encrypted", "content": {}}));
    assert_eq!(
        outcome(&encrypted).map(|o| (o.0, o.1)),
        Some((".m.rule.encrypted".to_owned(), true))
    );
    // An invite for the user notifies; other membership changes do not.
    let invite = event(
        json!({"type": "m.room.member", "state_key": "@alice:example.org", "content": {"membership": "invite"}}),
    );
    assert_eq!(
        outcome(&invite).map(|o| (o.0, o.1)),
        Some((".m.rule.invite_for_me".to_owned(), true))
    );
    let join = event(
        json!({"type": "m.room.member", "state_key": "@carol:example.org", "content": {"membership": "join"}}),
    );
    assert_eq!(outcome(&join).map(|o| o.1), Some(false));
    // A tombstone is a highlight; a reaction nothing.
    let tomb = event(
        json!({"type": "m.room.tombstone", "state_key": "", "content": {"body": "moved", "replacement_room": "!n:x"}}),
    );
    assert_eq!(outcome(&tomb).map(|o| o.2), Some(true));
    let reaction = event(json!({"type": "m.reaction", "content": {}}));
    assert_eq!(outcome(&reaction).map(|o| o.1), Some(false));
    // Anything else: no rule.
    assert_eq!(
        outcome(&event(json!({"type": "m.room.topic", "state_key": "", "content": {}}))),
        None
    );
}

#[test]
fn kinds_are_tried_in_the_spec_order() {
    let alice = user_id!("@alice:example.org");
    let mut rules = Ruleset::server_default(alice);
    let add = |rules: &mut Ruleset, kind: &str, rule: serde_json::Value| {
        let mut all = serde_json::to_value(&*rules).expect("serialises");
        all[kind].as_array_mut().map(|l| l.insert(0, rule.clone())).unwrap_or_else(|| {
            all[kind] = json!([rule]);
        });
        *rules = serde_json::from_value(all).expect("rules");
    };
    // A content rule on a word of the body.
    add(
        &mut rules,
        "content",
        json!({"rule_id": "tea", "pattern": "te?", "actions": ["notify", {"set_tweak": "highlight"}], "default": false, "enabled": true}),
    );
    let c = ctx();
    assert_eq!(evaluate(&rules, &message("some TEA now"), &c).map(|o| o.rule_id), Some("tea"));
    assert_eq!(evaluate(&rules, &message("steam"), &c).map(|o| o.rule_id), Some(".m.rule.message"));
    // A room rule silencing the room wins over underride, loses to content.
    add(
        &mut rules,
        "room",
        json!({"rule_id": "!room:example.org", "actions": [], "default": false, "enabled": true}),
    );
    let o = evaluate(&rules, &message("hi"), &c).expect("the room rule");
    assert_eq!((o.rule_id, o.notifies()), ("!room:example.org", false));
    assert_eq!(evaluate(&rules, &message("tea"), &c).map(|o| o.rule_id), Some("tea"));
    // The master rule, enabled, silences everything.
    let mut all = serde_json::to_value(&rules).expect("serialises");
    all["override"][0]["enabled"] = json!(true);
    let rules: Ruleset = serde_json::from_value(all).expect("rules");
    assert_eq!(
        evaluate(&rules, &message("tea"), &c).map(|o| (o.rule_id, o.notifies())),
        Some((".m.rule.master", false))
    );
}

#[test]
fn words_match_between_boundaries_only() {
    assert!(glob_words("foo", "a foo b"));
    assert!(glob_words("foo", "foo"));
    assert!(glob_words("foo", "(foo)"));
    assert!(!glob_words("foo", "foobar"));
    assert!(!glob_words("foo", "a_foo"));
    assert!(glob_words("f*r", "x foo bar y"));
    assert!(glob_words("b?r", "the bar."));
}

#[test]
fn hostile_patterns_are_bounded() {
    // Many stars against a long value that never matches: linear in the value per state.
    let pattern = "*a".repeat(100) + "b";
    let value = "a".repeat(10_000);
    let started = std::time::Instant::now();
    assert!(!glob_whole(&pattern, &value));
    assert!(!glob_words(&pattern, &value));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(check_pattern(&"*".repeat(MAX_PATTERN_CHARS + 1)).is_err());
    let many: Vec<PushCondition> = (0..=MAX_CONDITIONS)
        .map(|_| cond(json!({"kind": "event_match", "key": "type", "pattern": "x"})))
        .collect();
    assert_eq!(check_conditions(&many), Err(RuleError::TooManyConditions));
}
