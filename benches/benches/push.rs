//! Push rule evaluation: matrix-core's evaluator against ruma's `Ruleset::get_actions`, on the
//! same events and the spec's full default rule set, in the same run. A plain message (every
//! override rule is tried, then the underride rules up to `.m.rule.message`) and a mention
//! (`.m.rule.is_user_mention`). Ours reads the event the server holds parsed already; ruma
//! flattens the event's JSON on every call (its API takes raw JSON).
//!
//! Run: `cargo bench -p benches --bench push`. The numbers go in benches/README.md.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use matrix_core::json::{Value, parse_strict};
use matrix_core::push::{PushContext, evaluate};
use ruma::push::{PushConditionRoomCtx, Ruleset};
use ruma::serde::Raw;
use serde_json::json;

/// Runs a future that never waits (ruma's evaluation without thread subscriptions).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("ruma's evaluation does not wait"),
    }
}

fn bench(c: &mut Criterion) {
    let user = ruma::user_id!("@alice:example.org");
    let rules = Ruleset::server_default(user);
    let events = [
        (
            "message",
            json!({
                "type": "m.room.message", "sender": "@bob:example.org",
                "room_id": "!room:example.org", "event_id": "$abc", "origin_server_ts": 1,
                "content": {"msgtype": "m.text", "body": "Hello there, how is everybody today?"},
            }),
        ),
        (
            "mention",
            json!({
                "type": "m.room.message", "sender": "@bob:example.org",
                "room_id": "!room:example.org", "event_id": "$abd", "origin_server_ts": 1,
                "content": {
                    "msgtype": "m.text", "body": "Alice: look",
                    "m.mentions": {"user_ids": ["@alice:example.org"]},
                },
            }),
        ),
    ];
    // No power levels in ruma's context: no event here is a room mention, the only rule
    // that reads them.
    let ruma_ctx = PushConditionRoomCtx::new(
        ruma::owned_room_id!("!room:example.org"),
        ruma::UInt::from(5_u32),
        user.to_owned(),
        "Alice".to_owned(),
    );
    let ctx = PushContext {
        room_id: "!room:example.org",
        user_id: user.as_str(),
        display_name: Some("Alice"),
        member_count: 5,
        sender_power_level: 0,
        notification_levels: None,
    };
    let mut group = c.benchmark_group("push_rules");
    for (name, event) in events {
        let text = event.to_string();
        let Ok(Value::Object(ours)) = parse_strict(text.as_bytes()) else {
            unreachable!("an object")
        };
        let raw: Raw<ruma::events::AnyTimelineEvent> =
            Raw::from_json(serde_json::value::RawValue::from_string(text).expect("JSON"));
        // Both agree on the outcome.
        let mine = evaluate(&rules, &ours, &ctx).map(|o| o.actions).unwrap_or_default();
        let theirs = now(rules.get_actions(&raw, &ruma_ctx));
        assert_eq!(
            serde_json::to_value(mine).expect("serialises"),
            serde_json::to_value(theirs).expect("serialises")
        );
        group.bench_function(format!("{name}/ours"), |b| {
            b.iter(|| evaluate(black_box(&rules), black_box(&ours), &ctx).map(|o| o.actions.len()))
        });
        group.bench_function(format!("{name}/ruma"), |b| {
            b.iter(|| now(rules.get_actions(black_box(&raw), &ruma_ctx)).len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
