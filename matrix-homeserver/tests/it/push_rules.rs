//! Push rules over HTTP: the whole API (finding #27: they were read-only), checked against
//! the spec's OpenAPI, kept across requests and sent to other devices through /sync.

use matrix_homeserver::testing::TestHomeserver;
use serde_json::{Value, json};

use crate::rooms::{create, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

async fn put(client: &Client, path: &str, body: &Value) -> (u16, Value) {
    client.send(reqwest::Method::PUT, &format!("{V3}{path}"), Some(body)).await
}

async fn finding_27_push_rules_can_be_changed(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;

    // Mute a room, as Element does: a room rule with no actions.
    let (status, body) =
        put(&alice, &format!("/pushrules/global/room/{room}"), &json!({"actions": []})).await;
    assert_eq!(status, 200, "{body}");
    let (status, rule) = alice.get(&format!("{V3}/pushrules/global/room/{room}")).await;
    assert_eq!(status, 200, "{rule}");
    check("pushrules.yaml", "/pushrules/global/{kind}/{ruleId}", "get", 200, &rule);
    assert_eq!(rule["rule_id"], room.as_str());
    assert_eq!(rule["actions"], json!([]));

    // A keyword (content) rule, and two override rules placed relative to each other.
    let keyword = json!({"actions": ["notify", {"set_tweak": "highlight"}], "pattern": "tea"});
    assert_eq!(put(&alice, "/pushrules/global/content/tea", &keyword).await.0, 200);
    let cond = json!({"actions": ["notify"], "conditions": [{"kind": "event_match", "key": "type", "pattern": "x.a"}]});
    assert_eq!(put(&alice, "/pushrules/global/override/first", &cond).await.0, 200);
    let (status, body) = put(&alice, "/pushrules/global/override/second?after=first", &cond).await;
    assert_eq!(status, 200, "{body}");
    let (status, all) = alice.get(&format!("{V3}/pushrules/")).await;
    assert_eq!(status, 200);
    check("pushrules.yaml", "/pushrules/", "get", 200, &all);
    let overrides: Vec<&str> = all["global"]["override"]
        .as_array()
        .expect("overrides")
        .iter()
        .filter_map(|r| r["rule_id"].as_str())
        .filter(|id| !id.starts_with('.'))
        .collect();
    assert_eq!(overrides, vec!["first", "second"]);

    // Enabled and actions, on a user rule and on a default one.
    let path = "/pushrules/global/override/.m.rule.suppress_notices";
    let (status, _) = put(&alice, &format!("{path}/enabled"), &json!({"enabled": false})).await;
    assert_eq!(status, 200);
    let (_, enabled) = alice.get(&format!("{V3}{path}/enabled")).await;
    assert_eq!(enabled, json!({"enabled": false}));
    let (status, _) =
        put(&alice, "/pushrules/global/content/tea/actions", &json!({"actions": []})).await;
    assert_eq!(status, 200);
    let (_, actions) = alice.get(&format!("{V3}/pushrules/global/content/tea/actions")).await;
    assert_eq!(actions, json!({"actions": []}));

    // Failure cases.
    let (status, body) = put(&alice, "/pushrules/global/override/x?before=nothere", &cond).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = put(&alice, "/pushrules/global/override/.mine", &cond).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = put(&alice, "/pushrules/device/override/x", &cond).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) =
        put(&alice, "/pushrules/global/content/nopattern", &json!({"actions": []})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
    let (status, _) = alice.send(reqwest::Method::DELETE, &format!("{V3}{path}"), None).await;
    assert_eq!(status, 400, "a server-default rule cannot be deleted");
    let (status, _) = alice.get(&format!("{V3}/pushrules/global/override/nothere")).await;
    assert_eq!(status, 404);

    // Deleting; and what is left survives and reaches other devices through /sync.
    let (status, _) = alice
        .send(reqwest::Method::DELETE, &format!("{V3}/pushrules/global/override/first"), None)
        .await;
    assert_eq!(status, 200);
    let (_, sync) = alice.get(&format!("{V3}/sync")).await;
    let pushed = sync["account_data"]["events"]
        .as_array()
        .expect("account data")
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("m.push_rules in /sync");
    let text = pushed["content"]["global"].to_string();
    assert!(
        text.contains(&room) && text.contains("\"second\"") && !text.contains("\"first\""),
        "{text}"
    );
}

/// Rules of one's own are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_27_push_rules_per_user_are_bounded() {
    let mut config = TestHomeserver::config();
    config.limits.max_push_rules = 3;
    let server = TestHomeserver::start_with(config).await;
    let session = server.register_user("alice", "pw").await;
    let alice = Client::new(&server).with_token(&session.access_token);
    let rule = json!({"actions": ["notify"], "pattern": "p"});
    for i in 0..3 {
        assert_eq!(put(&alice, &format!("/pushrules/global/content/k{i}"), &rule).await.0, 200);
    }
    let (status, body) = put(&alice, "/pushrules/global/content/k3", &rule).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
    // Replacing an existing rule is not growth.
    assert_eq!(put(&alice, "/pushrules/global/content/k0", &rule).await.0, 200);
}

/// Another user's rules are out of reach: each user reads and writes only their own.
async fn finding_27_push_rules_are_each_users_own(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let rule = json!({"actions": [], "pattern": "secret"});
    assert_eq!(put(&alice, "/pushrules/global/content/mine", &rule).await.0, 200);
    let (status, _) = bob.get(&format!("{V3}/pushrules/global/content/mine")).await;
    assert_eq!(status, 404, "bob does not see alice's rule");
    let (_, all) = bob.get(&format!("{V3}/pushrules/")).await;
    assert!(!all.to_string().contains("secret"), "{all}");
    let (status, _) = bob
        .send(reqwest::Method::DELETE, &format!("{V3}/pushrules/global/content/mine"), None)
        .await;
    assert_eq!(status, 404, "bob cannot delete alice's rule");
    let (status, _) = alice.get(&format!("{V3}/pushrules/global/content/mine")).await;
    assert_eq!(status, 200, "alice's rule is still there");
    let (status, _) = Client::new(&server).get(&format!("{V3}/pushrules/")).await;
    assert_eq!(status, 401, "a stranger without a token reads nothing");
}

/// The whole rule set is bounded in bytes, and changes are rate limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_27_push_rule_bytes_and_changes_are_bounded() {
    let mut config = TestHomeserver::config();
    config.limits.max_push_rules_bytes = 16 * 1024;
    let server = TestHomeserver::start_with(config).await;
    let session = server.register_user("alice", "pw").await;
    let alice = Client::new(&server).with_token(&session.access_token);
    // One pattern past matrix-core's bound is refused as such.
    let big = json!({"actions": ["notify"], "pattern": "p".repeat(20_000)});
    let (status, body) = put(&alice, "/pushrules/global/content/big", &big).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    // Patterns within it fill the rule set up to its bound in bytes, then are refused.
    let long = json!({"actions": ["notify"], "pattern": "p".repeat(500)});
    let mut refused = None;
    for i in 0..64 {
        let (status, body) =
            put(&alice, &format!("/pushrules/global/content/long{i}"), &long).await;
        if status != 200 {
            refused = Some((i, status, errcode(&body).to_owned()));
            break;
        }
    }
    let (at, status, code) = refused.expect("the rule set is bounded");
    assert_eq!((status, code.as_str()), (400, "M_TOO_LARGE"));
    assert!((20..40).contains(&at), "refused at rule {at} of 500 bytes, the bound is 16 KiB");

    let mut config = TestHomeserver::config();
    config.rate_limits = matrix_homeserver::RateLimitsConfig::default();
    config.rate_limits.account_data = matrix_homeserver::RateLimit::new(0.001, 2.0);
    let server = TestHomeserver::start_with(config).await;
    let session = server.register_user("alice", "pw").await;
    let alice = Client::new(&server).with_token(&session.access_token);
    let rule = json!({"actions": [], "pattern": "p"});
    for i in 0..2 {
        assert_eq!(put(&alice, &format!("/pushrules/global/content/r{i}"), &rule).await.0, 200);
    }
    let (status, body) = put(&alice, "/pushrules/global/content/r2", &rule).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
}

crate::on_every_backend!(
    finding_27_push_rules_can_be_changed,
    finding_27_push_rules_are_each_users_own
);
