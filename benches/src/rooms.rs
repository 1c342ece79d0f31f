//! A seeded generator of realistic forked rooms, for state resolution benchmarks and tests.
//!
//! A room is created by an admin, gets moderators and `members` joined users spread over
//! `servers` servers, then forks into three branches that conflict the way real rooms do: one
//! demotes a moderator and bans users, one where the same moderator (unaware of the demotion)
//! kicks users and closes the room, one with more joins, leaves and a topic change. Every event
//! passes the authorization rules against the state of its branch, so the forks are plausible.
//!
//! The same spec gives byte-identical output ([`Room::to_json`]).

use matrix_core::json::{Object, Value};
use matrix_core::{Pdu, RoomVersionRules, auth, b64};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct RoomSpec {
    /// Room version id.
    pub version: &'static str,
    /// Joined users before the fork.
    pub members: usize,
    /// Servers the users are spread over.
    pub servers: usize,
    /// Events per fork after the split (each a random operation).
    pub fork_events: usize,
    /// The seed.
    pub seed: u64,
}

/// A generated room: its events (parents first) and one state per fork.
#[derive(Debug)]
pub struct Room {
    /// The room version's rules.
    pub rules: &'static RoomVersionRules,
    /// Every event, parents first.
    pub events: Vec<Pdu>,
    /// The state (event ids) at the head of each fork.
    pub state_sets: Vec<Vec<String>>,
}

/// SplitMix64: tiny, seedable, and stable across platforms and crate versions.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One branch of the room: its state and its head.
#[derive(Debug, Clone)]
struct Branch {
    state: std::collections::BTreeMap<(String, String), usize>,
    head: Vec<usize>,
    depth: i64,
}

struct Builder {
    rules: &'static RoomVersionRules,
    rng: Rng,
    events: Vec<Pdu>,
    room_id: String,
    clock: i64,
}

fn user(i: usize, servers: usize) -> String {
    format!("@user{i}:server{}.example.org", i % servers)
}

const ADMIN: &str = "@admin:server0.example.org";
const MODERATOR: &str = "@mod:server1.example.org";

impl Builder {
    fn event_id(&mut self) -> String {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        format!("${}", b64::encode_url_safe(bytes))
    }

    /// Adds an event to `branch` if the authorization rules allow it there.
    fn add(
        &mut self,
        branch: &mut Branch,
        kind: &str,
        sender: &str,
        state_key: Option<&str>,
        content: Object,
    ) -> bool {
        let mut json = Object::new();
        json.insert("type", kind);
        json.insert("sender", sender);
        if let Some(state_key) = state_key {
            json.insert("state_key", state_key);
        }
        json.insert("content", content);
        self.clock += 1 + self.rng.below(1000) as i64;
        json.insert("origin_server_ts", self.clock);
        branch.depth += 1;
        json.insert("depth", branch.depth);
        let prev: Vec<Value> =
            branch.head.iter().map(|&i| Value::from(self.events[i].event_id())).collect();
        json.insert("prev_events", Value::Array(prev));
        json.insert("hashes", [("sha256", "x")].into_iter().collect::<Object>());
        json.insert("signatures", Object::new());
        let is_create = kind == "m.room.create";
        if !(is_create && self.rules.room_id_from_create_event) {
            json.insert("room_id", self.room_id.as_str());
        }
        let id = self.event_id();
        // Auth events from the branch's state, as a server would pick them.
        let probe = Pdu::with_event_id(json.clone(), id.clone(), self.rules);
        let auth_ids: Vec<Value> = auth::auth_types_for_event(self.rules, &probe)
            .iter()
            .filter_map(|key| branch.state.get(key))
            .map(|&i| Value::from(self.events[i].event_id()))
            .collect();
        json.insert("auth_events", Value::Array(auth_ids));
        json.insert("event_id", id.as_str());
        let pdu = Pdu::with_event_id(json, id, self.rules);
        if is_create {
            if self.rules.room_id_from_create_event {
                self.room_id = pdu.room_id().to_owned();
            }
        } else {
            let state = BranchState { branch, events: &self.events };
            if auth::check(self.rules, &pdu, &state).is_err() {
                branch.depth -= 1;
                return false;
            }
        }
        let index = self.events.len();
        if let Some(state_key) = pdu.state_key() {
            branch.state.insert((pdu.kind().to_owned(), state_key.to_owned()), index);
        }
        self.events.push(pdu);
        branch.head = vec![index];
        true
    }
}

struct BranchState<'a> {
    branch: &'a Branch,
    events: &'a [Pdu],
}

impl auth::AuthState<Pdu> for BranchState<'_> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&Pdu> {
        self.branch.state.get(&(kind.to_owned(), state_key.to_owned())).map(|&i| &self.events[i])
    }
}

fn content(pairs: &[(&str, Value)]) -> Object {
    pairs.iter().cloned().collect()
}

fn membership(m: &str) -> Object {
    content(&[("membership", m.into())])
}

fn power_levels(moderator_level: i64, extra: &[(String, i64)], rules: &RoomVersionRules) -> Object {
    let mut users: Object = extra.iter().map(|(u, l)| (u.clone(), Value::from(*l))).collect();
    if !rules.auth.privileged_creators {
        users.insert(ADMIN, 100);
    }
    users.insert(MODERATOR, moderator_level);
    content(&[
        ("users", users.into()),
        ("ban", 50.into()),
        ("kick", 50.into()),
        ("state_default", 50.into()),
        ("events_default", 0.into()),
        ("invite", 0.into()),
        ("redact", 50.into()),
    ])
}

/// Generates a room.
pub fn generate(spec: RoomSpec) -> Room {
    let rules = RoomVersionRules::get(spec.version).expect("a known room version");
    let mut b = Builder {
        rules,
        rng: Rng::new(spec.seed),
        events: Vec::new(),
        room_id: "!room:server0.example.org".to_owned(),
        clock: 1_700_000_000_000,
    };
    let mut main = Branch { state: Default::default(), head: Vec::new(), depth: 0 };
    let mut create = content(&[("room_version", spec.version.into())]);
    if !rules.auth.creator_is_sender {
        create.insert("creator", ADMIN);
    }
    b.add(&mut main, "m.room.create", ADMIN, Some(""), create);
    b.add(&mut main, "m.room.member", ADMIN, Some(ADMIN), membership("join"));
    b.add(&mut main, "m.room.power_levels", ADMIN, Some(""), power_levels(50, &[], rules));
    b.add(
        &mut main,
        "m.room.join_rules",
        ADMIN,
        Some(""),
        content(&[("join_rule", "public".into())]),
    );
    b.add(
        &mut main,
        "m.room.history_visibility",
        ADMIN,
        Some(""),
        content(&[("history_visibility", "shared".into())]),
    );
    b.add(&mut main, "m.room.topic", ADMIN, Some(""), content(&[("topic", "Welcome".into())]));
    b.add(&mut main, "m.room.member", MODERATOR, Some(MODERATOR), membership("join"));
    for i in 0..spec.members {
        let u = user(i, spec.servers);
        b.add(&mut main, "m.room.member", &u, Some(&u), membership("join"));
        // Some chatter keeps the DAG realistic (state res never sees it).
        if b.rng.below(20) == 0 {
            b.add(&mut main, "m.room.message", &u, None, content(&[("body", "hi".into())]));
        }
    }

    let mut forks = [main.clone(), main.clone(), main];
    let pick = |rng: &mut Rng| user(rng.below(spec.members.max(1)), spec.servers);
    for step in 0..spec.fork_events {
        for (f, branch) in forks.iter_mut().enumerate() {
            let op = b.rng.below(6);
            let target = pick(&mut b.rng);
            match (f, op, step) {
                // Fork 0: the admin demotes the moderator, then bans.
                (0, _, 0) => {
                    b.add(
                        branch,
                        "m.room.power_levels",
                        ADMIN,
                        Some(""),
                        power_levels(0, &[], rules),
                    );
                }
                (0, 0 | 5, _) => {
                    b.add(branch, "m.room.member", ADMIN, Some(&target), membership("ban"));
                }
                // Fork 1: the moderator, unaware, kicks and closes the room.
                (1, _, 0) => {
                    b.add(
                        branch,
                        "m.room.topic",
                        MODERATOR,
                        Some(""),
                        content(&[("topic", "Moderated".into())]),
                    );
                }
                (1, 0, _) => {
                    b.add(
                        branch,
                        "m.room.join_rules",
                        ADMIN,
                        Some(""),
                        content(&[("join_rule", "invite".into())]),
                    );
                }
                (1, 5, _) => {
                    b.add(branch, "m.room.member", MODERATOR, Some(&target), membership("leave"));
                }
                // Fork 2: life goes on.
                (2, 0, _) => {
                    b.add(
                        branch,
                        "m.room.topic",
                        ADMIN,
                        Some(""),
                        content(&[("topic", format!("Topic {step}").into())]),
                    );
                }
                (_, 1..=2, _) => {
                    let newcomer =
                        user(spec.members + b.rng.below(spec.members.max(1)), spec.servers);
                    b.add(branch, "m.room.member", &newcomer, Some(&newcomer), membership("join"));
                }
                (_, 3, _) => {
                    b.add(branch, "m.room.member", &target, Some(&target), membership("leave"));
                }
                (_, 4, _) => {
                    let mut name = Object::new();
                    name.insert("displayname", format!("User {step}"));
                    name.insert("membership", "join");
                    b.add(branch, "m.room.member", &target, Some(&target), name);
                }
                _ => {
                    b.add(
                        branch,
                        "m.room.message",
                        &target,
                        None,
                        content(&[("body", "hello".into())]),
                    );
                }
            }
        }
    }
    let state_sets = forks
        .iter()
        .map(|f| f.state.values().map(|&i| b.events[i].event_id().to_owned()).collect())
        .collect();
    Room { rules, events: b.events, state_sets }
}

impl Room {
    /// The input format of the `stateres` command line tool.
    pub fn to_json(&self) -> String {
        let pdus: Vec<Value> =
            self.events.iter().map(|e| Value::Object(e.json().clone())).collect();
        let sets: Vec<Value> = self
            .state_sets
            .iter()
            .map(|set| Value::Array(set.iter().map(|id| Value::from(id.as_str())).collect()))
            .collect();
        let top: Object = [
            ("room_version", Value::from(self.rules.id)),
            ("pdus", Value::Array(pdus)),
            ("state_sets", Value::Array(sets)),
        ]
        .into_iter()
        .collect();
        Value::Object(top).to_string()
    }

    /// Events by id, for resolving.
    pub fn by_id(&self) -> std::collections::HashMap<String, Pdu> {
        self.events.iter().map(|e| (e.event_id().to_owned(), e.clone())).collect()
    }

    /// Events by id in a map with a fast hasher, as a server's event cache would be.
    pub fn by_id_fx(&self) -> std::collections::HashMap<String, Pdu, rustc_hash::FxBuildHasher> {
        self.events.iter().map(|e| (e.event_id().to_owned(), e.clone())).collect()
    }
}

/// A resolved state as sorted `(type, state_key, event_id)` rows.
pub fn rows(state: &matrix_stateres::StateMap<'_>) -> Vec<(String, String, String)> {
    let mut rows: Vec<(String, String, String)> =
        state.iter().map(|(&(k, s), &id)| (k.to_owned(), s.to_owned(), id.to_owned())).collect();
    rows.sort();
    rows
}
