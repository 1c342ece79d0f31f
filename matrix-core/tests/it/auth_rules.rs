//! Table-driven tests of the authorization rules (spec "Authorization rules", room versions
//! 1-12): every numbered rule has accepting and rejecting cases, and each case runs in every
//! room version the rule applies to (`RoomVersionRules::ALL` filtered by the rule's switch).
//!
//! Every case starts from the same room: `@alice` created it (power 100 in v1-11, infinite in
//! v12) and is joined; `@mod` and `@mod2` are joined with power 50; `@bob` and `@eve` (another
//! server) are joined with power 0; `@carol` and `@dave` are not in the room. The join rule is
//! `public`; power levels are otherwise the defaults.

use std::collections::{HashMap, HashSet};

use matrix_core::auth::{self, AuthRejection as R};
use matrix_core::json::{self, Value};
use matrix_core::pdu::Pdu;
use matrix_core::room_version::{EventFormat, RoomVersionRules};
use matrix_core::signing::{SigningKey, sign_json};
use serde_json::{Value as J, json};

const ALICE: &str = "@alice:example.org";
const MOD: &str = "@mod:example.org";
const MOD2: &str = "@mod2:example.org";
const BOB: &str = "@bob:example.org";
const CAROL: &str = "@carol:example.org";
const DAVE: &str = "@dave:example.org";
const EVE: &str = "@eve:other.org";
const TOKEN: &str = "tok";
const FOREIGN: &str = "$foreign:example.org";
const CREATE: (&str, &str) = ("m.room.create", "");
const PL: (&str, &str) = ("m.room.power_levels", "");
const JR: (&str, &str) = ("m.room.join_rules", "");
const TPI: &str = "m.room.third_party_invite";
const MEMBER: &str = "m.room.member";
const ST: &str = "com.example.state";
const MSG: &str = "m.room.message";
const NAME: &str = "m.room.name";
const TOMBSTONE: &str = "m.room.tombstone";
const ALIASES: &str = "m.room.aliases";
const HS: &str = "example.org";
const OTHER: &str = "other.org";
const KNOCK_R: &str = "knock_restricted";

type Res = Result<(), R>;
type Rules = &'static RoomVersionRules;
type Applies = fn(&RoomVersionRules) -> bool;

// Which room versions a rule applies to, by the rules' switches.
const ALL: Applies = |_| true;
const V12: Applies = |v| v.room_id_from_create_event;
const PRE12: Applies = |v| !v.room_id_from_create_event;
const V11P: Applies = |v| v.auth.creator_is_sender;
const PRE11: Applies = |v| !v.auth.creator_is_sender;
const V10P: Applies = |v| v.auth.integer_power_levels;
const PRE10: Applies = |v| !v.auth.integer_power_levels;
const KR: Applies = |v| v.auth.knock_restricted;
const PRE_KR: Applies = |v| !v.auth.knock_restricted;
const V8P: Applies = |v| v.auth.restricted_join;
const PRE8: Applies = |v| !v.auth.restricted_join;
const V7P: Applies = |v| v.auth.knocking;
const PRE7: Applies = |v| !v.auth.knocking;
const V7_9: Applies = |v| v.auth.knocking && !v.auth.knock_restricted;
const V6P: Applies = |v| v.auth.notifications_in_power_levels;
const PRE6: Applies = |v| !v.auth.notifications_in_power_levels;
const ALIAS_RULE: Applies = |v| v.auth.aliases_rule;
const NO_ALIAS_RULE: Applies = |v| !v.auth.aliases_rule;
const V1_2: Applies = |v| v.auth.redaction_rule;
const V3P: Applies = |v| !v.auth.redaction_rule;
const OK: Res = Ok(());
const BAD_CREATORS: Res = Err(R::CreateInvalidAdditionalCreators);
const NOT_AUTHORISED: Res = Err(R::JoinRestrictedNotAuthorised);
const NOT_SIGNED: Res = Err(R::JoinAuthorisedViaNotSigned);

fn unexpected(kind: &str, state_key: &str) -> Res {
    Err(R::UnexpectedAuthEvent(kind.to_owned(), state_key.to_owned()))
}

fn duplicate((kind, state_key): (&str, &str)) -> Res {
    Err(R::DuplicateAuthEvent(kind.to_owned(), state_key.to_owned()))
}

fn invalid(field: &'static str) -> Res {
    Err(R::PowerLevelsInvalid(field))
}

fn change(field: &'static str) -> Res {
    Err(R::PowerLevelsChange(field))
}

/// Merges `extra` into `base`: objects recursively, `null` removes a key.
fn merge(base: &mut J, extra: &J) {
    let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) else {
        *base = extra.clone();
        return;
    };
    for (k, v) in e {
        if v.is_null() {
            b.remove(k);
        } else if v.is_object() && b.get(k).is_some_and(J::is_object) {
            merge(b.get_mut(k).expect("present"), v);
        } else {
            b.insert(k.clone(), v.clone());
        }
    }
}

fn merged(mut base: J, extra: &J) -> J {
    merge(&mut base, extra);
    base
}

/// An event id in the room version's format (`$x:example.org` in v1-2, `$x` after).
fn eid(v: Rules, name: &str) -> String {
    if v.event_format == EventFormat::V1 {
        format!("${name}:example.org")
    } else {
        format!("${name}")
    }
}

fn prevs(v: Rules, ids: &[String]) -> J {
    let v1 = v.event_format == EventFormat::V1;
    ids.iter().map(|id| if v1 { json!([id, {"sha256": "x"}]) } else { json!(id) }).collect()
}

fn object(j: &J) -> json::Object {
    let text = serde_json::to_vec(j).expect("serialise");
    let Value::Object(object) = json::parse_strict(&text).expect("canonical JSON") else {
        panic!("not an object")
    };
    object
}

fn to_pdu(v: Rules, j: &J, id: String) -> Pdu {
    Pdu::with_event_id(object(j), id, v)
}

fn public_key(seed: u8) -> String {
    SigningKey::from_seed("1", &[seed; 32]).public_key().to_base64()
}

/// `content` signed by identity server key `seed`: a third-party invite's `signed` block.
fn signed(seed: u8, content: J) -> J {
    let mut signed = object(&content);
    sign_json(&mut signed, "id.example.org", &SigningKey::from_seed("1", &[seed; 32]));
    serde_json::from_str(&json::to_canonical_string(&Value::Object(signed))).expect("JSON")
}

/// A `third_party_invite` whose `signed` block is `content` signed by key `seed`.
fn tpi(seed: u8, content: J) -> J {
    json!({"display_name": "carol", "signed": signed(seed, content)})
}

/// `{key: {entry: value}}`, to merge into power levels.
fn map(key: &str, entry: &str, value: impl Into<J>) -> J {
    json!({key: {entry: value.into()}})
}

fn notifications(room: impl Into<J>) -> J {
    map("notifications", "room", room)
}

fn good_tpi() -> J {
    tpi(1, json!({"mxid": CAROL, "token": TOKEN, "sender": BOB}))
}

struct Room {
    v: Rules,
    room_id: String,
    create_id: String,
    pl: J,
    state: HashMap<(String, String), Pdu>,
    n: usize,
}

impl Room {
    fn new(v: Rules) -> Self {
        let create_id = eid(v, "create");
        let room_id = match v.room_id_from_create_event {
            true => format!("!{}", &create_id[1..]),
            false => "!room:example.org".to_owned(),
        };
        let mut users = json!({ALICE: 100, MOD: 50, MOD2: 50});
        if v.auth.privileged_creators {
            merge(&mut users, &json!({ALICE: null}));
        }
        let pl = json!({"users": users});
        let mut r = Room { v, room_id, create_id, pl, state: HashMap::new(), n: 0 };
        r.create(json!({})).pl(json!({})).jr("public");
        for user in [ALICE, MOD, MOD2, BOB, EVE] {
            r.st(user, "join");
        }
        r
    }

    fn json(&self, sender: &str, kind: &str, state_key: Option<&str>, content: J) -> J {
        let mut j = json!({
            "type": kind, "sender": sender, "room_id": self.room_id, "content": content,
            "prev_events": prevs(self.v, &[eid(self.v, "prev")]), "auth_events": [],
            "depth": 3, "origin_server_ts": 1, "hashes": {"sha256": "x"}, "signatures": {},
        });
        if let Some(state_key) = state_key {
            j["state_key"] = state_key.into();
        }
        j
    }

    /// A create event by `@alice` with `extra` merged into its content.
    fn create_json(&self, extra: J) -> J {
        let mut content = json!({"room_version": self.v.id});
        if !self.v.auth.creator_is_sender {
            content["creator"] = ALICE.into();
        }
        let mut j = self.json(ALICE, "m.room.create", Some(""), merged(content, &extra));
        j["prev_events"] = json!([]);
        if self.v.room_id_from_create_event {
            j.as_object_mut().expect("object").remove("room_id");
        }
        j
    }

    fn pdu(&mut self, j: J) -> Pdu {
        self.n += 1;
        to_pdu(self.v, &j, eid(self.v, &format!("e{}", self.n)))
    }

    fn put(&mut self, pdu: Pdu) -> &mut Self {
        let key = (pdu.kind().to_owned(), pdu.state_key().unwrap_or_default().to_owned());
        self.state.insert(key, pdu);
        self
    }

    // State setup; each returns the room so setup and check chain into one expression.

    fn set(&mut self, sender: &str, kind: &str, state_key: &str, content: J) -> &mut Self {
        let pdu = self.pdu(self.json(sender, kind, Some(state_key), content));
        self.put(pdu)
    }

    fn unset(&mut self, (kind, state_key): (&str, &str)) -> &mut Self {
        self.state.remove(&(kind.to_owned(), state_key.to_owned()));
        self
    }

    /// Replaces the create event (same event id) by one with `extra` in its content.
    fn create(&mut self, extra: J) -> &mut Self {
        let pdu = to_pdu(self.v, &self.create_json(extra), self.create_id.clone());
        self.put(pdu)
    }

    /// `@dave` is an additional creator (which only room version 12 reads) and joined.
    fn dave(&mut self) -> &mut Self {
        self.create(json!({"additional_creators": [DAVE]})).st(DAVE, "join")
    }

    /// `user`'s membership ("" leaves it as it is).
    fn st(&mut self, user: &str, membership: &str) -> &mut Self {
        match membership {
            "" => self,
            _ => self.set(user, MEMBER, user, json!({"membership": membership})),
        }
    }

    /// The join rule.
    fn jr(&mut self, rule: &str) -> &mut Self {
        self.set(ALICE, JR.0, "", json!({"join_rule": rule}))
    }

    /// The power levels: the current ones with `extra` merged in.
    fn pl(&mut self, extra: J) -> &mut Self {
        merge(&mut self.pl, &extra);
        self.set(ALICE, PL.0, "", self.pl.clone())
    }

    /// The `m.room.third_party_invite` event for `TOKEN`, sent by `@bob`, with `keys`.
    fn tpi_state(&mut self, keys: J) -> &mut Self {
        let base = json!({"display_name": "c...", "key_validity_url": "https://id.example.org/v"});
        self.set(BOB, TPI, TOKEN, merged(base, &keys))
    }

    // Checks.

    fn check_json(&mut self, j: J) -> Res {
        let event = self.pdu(j);
        auth::check(self.v, &event, &self.state)
    }

    /// Checks a create event with `extra` in its content.
    fn check_create(&mut self, extra: J) -> Res {
        self.check_json(self.create_json(extra))
    }

    fn send(&mut self, sender: &str, kind: &str, state_key: Option<&str>, content: J) -> Res {
        self.check_json(self.json(sender, kind, state_key, content))
    }

    fn msg(&mut self, sender: &str) -> Res {
        self.send(sender, MSG, None, json!({"body": "hi"}))
    }

    fn state(&mut self, sender: &str, kind: &str, state_key: &str) -> Res {
        self.send(sender, kind, Some(state_key), json!({}))
    }

    fn memb(&mut self, sender: &str, target: &str, membership: &str) -> Res {
        self.send(sender, MEMBER, Some(target), json!({"membership": membership}))
    }

    fn join(&mut self, user: &str) -> Res {
        self.memb(user, user, "join")
    }

    /// Sends power levels: the current ones with `extra` merged in.
    fn send_pl(&mut self, sender: &str, extra: J) -> Res {
        self.send(sender, PL.0, Some(""), merged(self.pl.clone(), &extra))
    }

    /// `user` joins a room holding only the create event and an `invite` join rule, the create
    /// event being the only previous event (unless `more_prev`).
    fn first_join(&mut self, user: &str, more_prev: bool) -> Res {
        self.state.retain(|(kind, _), _| kind == CREATE.0);
        self.jr("invite");
        let mut j = self.json(user, MEMBER, Some(user), json!({"membership": "join"}));
        let mut ids = vec![self.create_id.clone()];
        if more_prev {
            ids.push(eid(self.v, "other"));
        }
        j["prev_events"] = prevs(self.v, &ids);
        self.check_json(j)
    }

    /// `@carol` joins under `rule` naming `via` as authorising user; signed by `signer`.
    fn via(&mut self, rule: &str, via: &str, signer: Option<&str>) -> Res {
        self.jr(rule);
        let content = json!({"membership": "join", "join_authorised_via_users_server": via});
        let mut j = self.json(CAROL, MEMBER, Some(CAROL), content);
        if let Some(server) = signer {
            j["signatures"] = json!({server: {"ed25519:1": "c2ln"}});
        }
        self.check_json(j)
    }

    /// `sender` invites `@carol` with `third_party_invite`; `@bob`'s 3pid event has key 1.
    fn tpi_invite(&mut self, sender: &str, third_party_invite: J) -> Res {
        self.tpi_state(json!({"public_key": public_key(1)}));
        let content = json!({"membership": "invite", "third_party_invite": third_party_invite});
        self.send(sender, MEMBER, Some(CAROL), content)
    }

    fn redact(&mut self, sender: &str, target: &str) -> Res {
        let mut j = self.json(sender, "m.room.redaction", None, json!({}));
        match self.v.redacts_in_content {
            true => j["content"]["redacts"] = target.into(),
            false => j["redacts"] = target.into(),
        }
        self.check_json(j)
    }

    /// [`auth::check_auth_events`] on `event` with the state events at `keys` (after the create
    /// event if `create`), then `extra`.
    fn auth_check(&mut self, event: J, create: bool, keys: &[(&str, &str)], extra: &[Pdu]) -> Res {
        let event = self.pdu(event);
        let create = create.then_some(CREATE);
        let state = &self.state;
        let mut list: Vec<&Pdu> = (create.iter().chain(keys))
            .map(|(k, s)| state.get(&((*k).to_owned(), (*s).to_owned())).expect("in state"))
            .collect();
        list.extend(extra);
        auth::check_auth_events(self.v, &event, &list)
    }

    /// [`Room::auth_check`] of `@bob`'s message, with the create event if the version wants it.
    fn auth_msg(&mut self, keys: &[(&str, &str)], extra: &[Pdu]) -> Res {
        let event = self.json(BOB, MSG, None, json!({}));
        self.auth_check(event, PRE12(self.v), keys, extra)
    }

    /// [`Room::auth_check`] of `@carol`'s join naming `@alice` as authorising user.
    fn auth_via(&mut self) -> Res {
        let content = json!({"membership": "join", "join_authorised_via_users_server": ALICE});
        let event = self.json(CAROL, MEMBER, Some(CAROL), content);
        self.auth_check(event, PRE12(self.v), &[PL, JR, (MEMBER, ALICE)], &[])
    }
}

struct Case {
    name: String,
    applies: Applies,
    expect: Res,
    body: Box<dyn Fn(&mut Room) -> Res>,
}

fn c(
    name: impl Into<String>,
    applies: Applies,
    expect: Res,
    body: impl Fn(&mut Room) -> Res + 'static,
) -> Case {
    Case { name: name.into(), applies, expect, body: Box::new(body) }
}

fn cases() -> Vec<Case> {
    let mut t = vec![
        // 1. m.room.create
        c("create: valid", ALL, OK, |r| r.check_create(json!({}))),
        c("create: prev_events", ALL, Err(R::CreateHasPrevEvents), |r| {
            let mut j = r.create_json(json!({}));
            j["prev_events"] = prevs(r.v, &[eid(r.v, "x")]);
            r.check_json(j)
        }),
        c("create: room_id domain is not sender's", PRE12, Err(R::CreateRoomIdDomain), |r| {
            let mut j = r.create_json(json!({}));
            j["room_id"] = "!room:other.org".into();
            r.check_json(j)
        }),
        c("create: has a room_id", V12, Err(R::CreateHasRoomId), |r| {
            let mut j = r.create_json(json!({}));
            j["room_id"] = r.room_id.clone().into();
            r.check_json(j)
        }),
        c("create: unknown room_version", ALL, Err(R::CreateUnknownRoomVersion), |r| {
            r.check_create(json!({"room_version": "999"}))
        }),
        c("create: integer room_version", ALL, Err(R::CreateUnknownRoomVersion), |r| {
            r.check_create(json!({"room_version": 12}))
        }),
        c("create: other known version", ALL, OK, |r| r.check_create(json!({"room_version": "1"}))),
        c("create: no room_version", ALL, OK, |r| r.check_create(json!({"room_version": null}))),
        c("create: additional_creators", ALL, OK, |r| {
            r.check_create(json!({"additional_creators": [DAVE, CAROL]}))
        }),
        c("create: additional_creators a string", V12, BAD_CREATORS, |r| {
            r.check_create(json!({"additional_creators": DAVE}))
        }),
        c("create: additional_creators non-user-id", V12, BAD_CREATORS, |r| {
            r.check_create(json!({"additional_creators": [DAVE, "dave"]}))
        }),
        c("create: additional_creators non-string", V12, BAD_CREATORS, |r| {
            r.check_create(json!({"additional_creators": [5]}))
        }),
        c("create: additional_creators ignored", PRE12, OK, |r| {
            r.check_create(json!({"additional_creators": ["dave", 5]}))
        }),
        c("create: no creator", PRE11, Err(R::CreateWithoutCreator), |r| {
            r.check_create(json!({"creator": null}))
        }),
        c("create: no creator needed", V11P, OK, |r| r.check_create(json!({"creator": null}))),
        // 2 (v12). The room id is the create event's; v1-11 need a create event in the state.
        c("room id: not the create event's", V12, Err(R::RoomIdNotCreateEvent), |r| {
            let mut j = r.json(BOB, MSG, None, json!({}));
            j["room_id"] = "!other:example.org".into();
            r.check_json(j)
        }),
        c("room id: no create event", V12, Err(R::RoomIdNotCreateEvent), |r| {
            r.unset(CREATE).msg(BOB)
        }),
        c("no create event", PRE12, Err(R::NoCreateEvent), |r| r.unset(CREATE).msg(BOB)),
        // Considering the event's auth_events (check_auth_events).
        c("auth_events: message", ALL, OK, |r| r.auth_msg(&[PL, (MEMBER, BOB)], &[])),
        c("auth_events: join with join rules", ALL, OK, |r| {
            let event = r.json(CAROL, MEMBER, Some(CAROL), json!({"membership": "join"}));
            r.auth_check(event, PRE12(r.v), &[PL, JR], &[])
        }),
        c("auth_events: 3pid invite with token event", ALL, OK, |r| {
            r.tpi_state(json!({"public_key": public_key(1)}));
            let content = json!({"membership": "invite", "third_party_invite": good_tpi()});
            let event = r.json(BOB, MEMBER, Some(CAROL), content);
            r.auth_check(event, PRE12(r.v), &[PL, (MEMBER, BOB), JR, (TPI, TOKEN)], &[])
        }),
        c("auth_events: authorising user's member event", V8P, OK, |r| r.auth_via()),
        c("auth_events: authorising user unsupported", PRE8, unexpected(MEMBER, ALICE), |r| {
            r.auth_via()
        }),
        c("auth_events: duplicate", ALL, duplicate(PL), |r| {
            let duplicate = r.pdu(r.json(ALICE, PL.0, Some(""), json!({})));
            r.auth_msg(&[PL, (MEMBER, BOB)], &[duplicate])
        }),
        c("auth_events: join rules for a message", ALL, unexpected(JR.0, ""), |r| {
            r.auth_msg(&[PL, (MEMBER, BOB), JR], &[])
        }),
        c("auth_events: another user's member event", ALL, unexpected(MEMBER, MOD), |r| {
            r.auth_msg(&[PL, (MEMBER, MOD)], &[])
        }),
        c("auth_events: other room", ALL, Err(R::AuthEventInOtherRoom(FOREIGN.into())), |r| {
            let mut j = r.json(ALICE, PL.0, Some(""), json!({}));
            j["room_id"] = "!other:example.org".into();
            let foreign = to_pdu(r.v, &j, FOREIGN.into());
            r.auth_msg(&[(MEMBER, BOB)], &[foreign])
        }),
        c("auth_events: no create event", PRE12, Err(R::NoCreateEvent), |r| {
            r.auth_check(r.json(BOB, MSG, None, json!({})), false, &[PL, (MEMBER, BOB)], &[])
        }),
        c("auth_events: create event", V12, unexpected(CREATE.0, ""), |r| {
            r.auth_check(r.json(BOB, MSG, None, json!({})), true, &[PL, (MEMBER, BOB)], &[])
        }),
        // m.federate (more in a table below)
        c("m.federate false: other server joins", ALL, Err(R::NotFederated), |r| {
            r.create(json!({"m.federate": false})).join(EVE)
        }),
        // m.room.member: required fields
        c("member: no state_key", ALL, Err(R::MemberMissingFields), |r| {
            r.send(BOB, MEMBER, None, json!({"membership": "join"}))
        }),
        c("member: no membership", ALL, Err(R::MemberMissingFields), |r| {
            r.send(BOB, MEMBER, Some(BOB), json!({"displayname": "b"}))
        }),
        // join_authorised_via_users_server signature (v8+; more in a table below)
        c("via: unsigned, on a leave", V8P, NOT_SIGNED, |r| {
            let content = json!({"membership": "leave", "join_authorised_via_users_server": ALICE});
            r.send(BOB, MEMBER, Some(BOB), content)
        }),
        // join (more in the tables below)
        c("join: additional creator's first join", V12, Err(R::JoinNotInvited), |r| {
            r.create(json!({"additional_creators": [DAVE]})).first_join(DAVE, false)
        }),
        c("join: no join rules event", ALL, Err(R::JoinNotInvited), |r| r.unset(JR).join(CAROL)),
        c("join: restricted, via can't invite", V8P, NOT_AUTHORISED, |r| {
            r.pl(json!({"invite": 50})).via("restricted", BOB, Some(HS))
        }),
        c("join: restricted, via at invite level", V8P, OK, |r| {
            r.pl(json!({"invite": 50})).via("restricted", MOD, Some(HS))
        }),
        // invite with third_party_invite
        c("3pid invite: valid signature", ALL, OK, |r| r.tpi_invite(BOB, good_tpi())),
        c("3pid invite: valid signature, public_keys", ALL, OK, |r| {
            let keys = json!({"public_key": public_key(2),
                "public_keys": [{"public_key": public_key(1)}]});
            let content = json!({"membership": "invite", "third_party_invite": good_tpi()});
            r.tpi_state(keys).send(BOB, MEMBER, Some(CAROL), content)
        }),
        c("3pid invite: target banned", ALL, Err(R::ThirdPartyInviteBanned), |r| {
            r.st(CAROL, "ban").tpi_invite(BOB, good_tpi())
        }),
        c("3pid invite: no signed", ALL, Err(R::ThirdPartyInviteMalformed), |r| {
            r.tpi_invite(BOB, json!({"display_name": "carol"}))
        }),
        c("3pid invite: no mxid", ALL, Err(R::ThirdPartyInviteMalformed), |r| {
            r.tpi_invite(BOB, tpi(1, json!({"token": TOKEN, "sender": BOB})))
        }),
        c("3pid invite: no token", ALL, Err(R::ThirdPartyInviteMalformed), |r| {
            r.tpi_invite(BOB, tpi(1, json!({"mxid": CAROL, "sender": BOB})))
        }),
        c("3pid invite: mxid is not the state key", ALL, Err(R::ThirdPartyInviteMxid), |r| {
            r.tpi_invite(BOB, tpi(1, json!({"mxid": DAVE, "token": TOKEN, "sender": BOB})))
        }),
        c("3pid invite: no event for the token", ALL, Err(R::ThirdPartyInviteNoToken), |r| {
            r.tpi_invite(BOB, tpi(1, json!({"mxid": CAROL, "token": "other", "sender": BOB})))
        }),
        c("3pid invite: not the 3pid event's sender", ALL, Err(R::ThirdPartyInviteSender), |r| {
            r.tpi_invite(MOD, good_tpi())
        }),
        c("3pid invite: signed by another key", ALL, Err(R::ThirdPartyInviteSignature), |r| {
            r.tpi_invite(BOB, tpi(2, json!({"mxid": CAROL, "token": TOKEN, "sender": BOB})))
        }),
        c("3pid invite: signed block altered", ALL, Err(R::ThirdPartyInviteSignature), |r| {
            let mut third_party_invite = good_tpi();
            third_party_invite["signed"]["sender"] = MOD.into();
            r.tpi_invite(BOB, third_party_invite)
        }),
        // invite, leave, ban and knock cases the membership tables below do not cover
        c("invite: sender only invited", ALL, Err(R::InviteSenderNotJoined), |r| {
            r.st(CAROL, "invite").memb(CAROL, DAVE, "invite")
        }),
        c("invite: below invite level", ALL, Err(R::InviteLevel), |r| {
            r.pl(json!({"invite": 50})).memb(BOB, CAROL, "invite")
        }),
        c("invite: at raised invite level", ALL, OK, |r| {
            r.pl(json!({"invite": 50})).memb(MOD, CAROL, "invite")
        }),
        c("invite: creator, invite level 1000", PRE12, Err(R::InviteLevel), |r| {
            r.pl(json!({"invite": 1000})).memb(ALICE, CAROL, "invite")
        }),
        c("invite: infinite creator, invite level 1000", V12, OK, |r| {
            r.pl(json!({"invite": 1000})).memb(ALICE, CAROL, "invite")
        }),
        c("unban: at kick, below ban level", ALL, Err(R::UnbanLevel), |r| {
            r.pl(json!({"ban": 60, "kick": 0})).st(DAVE, "ban").memb(MOD, DAVE, "leave")
        }),
        c("kick: raised kick level", ALL, Err(R::KickLevel), |r| {
            r.pl(json!({"kick": 60})).memb(MOD, BOB, "leave")
        }),
        c("kick: by an additional creator", V12, OK, |r| {
            r.dave().pl(map("users", MOD, 1000)).memb(DAVE, MOD, "leave")
        }),
        c("ban: raised ban level", ALL, Err(R::BanLevel), |r| {
            r.pl(json!({"ban": 60})).memb(MOD, CAROL, "ban")
        }),
        c("ban: an additional creator", V12, Err(R::BanLevel), |r| {
            r.dave().pl(map("users", MOD, 1000)).memb(MOD, DAVE, "ban")
        }),
        c("knock: sender is not state key", V7P, Err(R::KnockSenderNotTarget), |r| {
            r.jr("knock").memb(BOB, CAROL, "knock")
        }),
        // The sender must be joined (more in the event table below).
        c("sender invited", ALL, Err(R::SenderNotJoined), |r| r.st(CAROL, "invite").msg(CAROL)),
        c("sender left", ALL, Err(R::SenderNotJoined), |r| r.st(BOB, "leave").msg(BOB)),
        // m.room.third_party_invite
        c("3pid event: below invite level", ALL, Err(R::ThirdPartyInviteEventLevel), |r| {
            r.pl(json!({"invite": 50})).state(BOB, TPI, TOKEN)
        }),
        c("3pid event: invite level, below events level", ALL, OK, |r| {
            r.pl(json!({"invite": 50, "events": {TPI: 100}})).state(MOD, TPI, TOKEN)
        }),
        // The event type's required power level.
        c("level: raised state_default", ALL, Err(R::EventLevel), |r| {
            r.pl(json!({"state_default": 60})).state(MOD, "m.room.topic", "")
        }),
        c("level: events entry lowers a state type", ALL, OK, |r| {
            r.pl(map("events", NAME, 0)).state(BOB, NAME, "")
        }),
        c("level: events entry raises a message type", ALL, Err(R::EventLevel), |r| {
            r.pl(map("events", MSG, 10)).msg(BOB)
        }),
        c("level: raised events_default", ALL, Err(R::EventLevel), |r| {
            r.pl(json!({"events_default": 10})).msg(BOB)
        }),
        c("level: redaction events entry", ALL, Err(R::EventLevel), |r| {
            r.pl(map("events", "m.room.redaction", 10)).redact(BOB, "$x:example.org")
        }),
        // m.room.power_levels: the content's validity
        c("PL: integer levels", ALL, OK, |r| {
            let levels = json!({"ban": 50, "events": {NAME: 50}, "notifications": {"room": 20}});
            r.send_pl(ALICE, levels)
        }),
        c("PL: string levels", PRE10, OK, |r| {
            let names = json!({"users_default": "0", "events_default": " 0 ",
                "state_default": "+50", "ban": "050", "redact": "50", "kick": "-1", "invite": "0"});
            r.send_pl(ALICE, names)
        }),
        c("PL: string levels in maps", PRE10, OK, |r| {
            let maps = json!({"users": {BOB: "10"}, "events": {NAME: "50"},
                "notifications": {"room": "20"}});
            r.send_pl(ALICE, maps)
        }),
        c("PL: additional creator in users", V12, Err(R::PowerLevelsCreatorInUsers), |r| {
            r.dave().send_pl(ALICE, map("users", DAVE, 0))
        }),
        c("PL: 'additional creator' in users", PRE12, OK, |r| {
            r.dave().send_pl(ALICE, map("users", DAVE, 0))
        }),
        c("PL: no previous power levels", ALL, OK, |r| {
            r.unset(PL).send_pl(ALICE, json!({"kick": 1000, "users": {BOB: 1000}}))
        }),
        c("PL: no previous power levels, not creator", ALL, Err(R::EventLevel), |r| {
            r.unset(PL).send_pl(MOD, json!({}))
        }),
        // m.room.power_levels: changes
        c("PL change: named level above sender changed", ALL, change("redact"), |r| {
            r.pl(json!({"redact": 60})).send_pl(MOD, json!({"redact": 50}))
        }),
        c("PL change: named level above sender removed", ALL, change("invite"), |r| {
            r.pl(json!({"invite": 60})).send_pl(MOD, json!({"invite": null}))
        }),
        c("PL change: named level above sender kept", ALL, OK, |r| {
            r.pl(json!({"invite": 60})).send_pl(MOD, json!({"kick": 20}))
        }),
        c("PL change: events entry above sender changed", ALL, change("events"), |r| {
            r.pl(map("events", TOMBSTONE, 100)).send_pl(MOD, map("events", TOMBSTONE, 0))
        }),
        c("PL change: events entry above sender removed", ALL, change("events"), |r| {
            r.pl(map("events", TOMBSTONE, 100)).send_pl(MOD, map("events", TOMBSTONE, J::Null))
        }),
        c("PL change: events entry within power removed", ALL, OK, |r| {
            r.pl(json!({"events": {NAME: 40, TOMBSTONE: 100}}))
                .send_pl(MOD, map("events", NAME, J::Null))
        }),
        c("PL change: notifications above sender changed", V6P, change("notifications"), |r| {
            r.pl(notifications(100)).send_pl(MOD, notifications(0))
        }),
        c("PL change: notifications unchecked, changed", PRE6, OK, |r| {
            r.pl(notifications(100)).send_pl(MOD, notifications(0))
        }),
        c("PL change: weaker user removed", ALL, OK, |r| {
            r.pl(map("users", BOB, 10)).send_pl(MOD, map("users", BOB, J::Null))
        }),
        c("PL change: creator beyond 100", PRE12, change("ban"), |r| {
            r.send_pl(ALICE, json!({"ban": 1000, "users": {MOD: 1000}}))
        }),
        c("PL change: creator has infinite power", V12, OK, |r| {
            let changes =
                json!({"ban": 1000, "kick": 0, "events": {TOMBSTONE: 0}, "users": {MOD: 1000}});
            r.pl(json!({"kick": 1000, "events": {TOMBSTONE: 1000}})).send_pl(ALICE, changes)
        }),
        c("PL change: additional creator has infinite power", V12, OK, |r| {
            r.dave().send_pl(DAVE, json!({"ban": 1000, "users": {MOD: 1000}}))
        }),
        // m.room.redaction (v1-2); v3+ has no redaction rule.
        c("redaction: same server", V1_2, OK, |r| r.redact(BOB, "$x:example.org")),
        c("redaction: at redact level", V1_2, OK, |r| r.redact(MOD, "$x:other.org")),
        c("redaction: lowered redact level", V1_2, OK, |r| {
            r.pl(json!({"redact": 0})).redact(BOB, "$x:other.org")
        }),
        c("redaction: below redact level, other server", V1_2, Err(R::RedactionLevel), |r| {
            r.redact(BOB, "$x:other.org")
        }),
        c("redaction: no redaction rule", V3P, OK, |r| r.redact(BOB, "$x:other.org")),
    ];
    // `@carol` sends `membership` for herself, holding `before` ("" for nothing) under `rule`.
    for (name, applies, expect, rule, before, membership) in [
        ("join: public", ALL, OK, "public", "", "join"),
        ("join: public, left before", ALL, OK, "public", "leave", "join"),
        ("join: banned", ALL, Err(R::JoinBanned), "public", "ban", "join"),
        ("join: invite rule, invited", ALL, OK, "invite", "invite", "join"),
        ("join: invite rule, joined", ALL, OK, "invite", "join", "join"),
        ("join: invite rule, not invited", ALL, Err(R::JoinNotInvited), "invite", "", "join"),
        ("join: invite rule, left before", ALL, Err(R::JoinNotInvited), "invite", "leave", "join"),
        ("join: knock rule, invited", V7P, OK, "knock", "invite", "join"),
        ("join: knock rule, knocked", V7P, Err(R::JoinNotInvited), "knock", "knock", "join"),
        ("join: knock rule unknown", PRE7, Err(R::JoinRuleForbids), "knock", "invite", "join"),
        ("join: restricted, invited", V8P, OK, "restricted", "invite", "join"),
        ("join: restricted, joined", V8P, OK, "restricted", "join", "join"),
        ("join: restricted, no via", V8P, NOT_AUTHORISED, "restricted", "", "join"),
        ("join: restricted unknown", PRE8, Err(R::JoinRuleForbids), "restricted", "invite", "join"),
        ("join: knock_restricted, invited", KR, OK, KNOCK_R, "invite", "join"),
        ("join: knock_restricted, no via", KR, NOT_AUTHORISED, KNOCK_R, "", "join"),
        ("join: knock_restricted unknown", PRE_KR, Err(R::JoinRuleForbids), KNOCK_R, "", "join"),
        ("join: private rule", ALL, Err(R::JoinRuleForbids), "private", "", "join"),
        ("knock: knock rule", V7P, OK, "knock", "", "knock"),
        ("knock: knock rule, left before", V7P, OK, "knock", "leave", "knock"),
        ("knock: knock_restricted rule", KR, OK, KNOCK_R, "", "knock"),
        ("knock: knock_restricted unknown", V7_9, Err(R::KnockJoinRule), KNOCK_R, "", "knock"),
        ("knock: public rule", V7P, Err(R::KnockJoinRule), "public", "", "knock"),
        ("knock: invite rule", V7P, Err(R::KnockJoinRule), "invite", "", "knock"),
        ("knock: banned", V7P, Err(R::KnockMembership), "knock", "ban", "knock"),
        ("knock: invited", V7P, Err(R::KnockMembership), "knock", "invite", "knock"),
        ("knock: joined", V7P, Err(R::KnockMembership), "knock", "join", "knock"),
        ("knock: unknown membership", PRE7, Err(R::UnknownMembership), "knock", "", "knock"),
        ("leave: self, joined", ALL, OK, "public", "join", "leave"),
        ("leave: self, invited", ALL, OK, "invite", "invite", "leave"),
        ("leave: self, knocked", V7P, OK, "knock", "knock", "leave"),
        ("leave: self, 'knock' unknown", PRE7, Err(R::LeaveNotMember), "public", "knock", "leave"),
        ("leave: self, not a member", ALL, Err(R::LeaveNotMember), "public", "", "leave"),
        ("leave: self, left before", ALL, Err(R::LeaveNotMember), "public", "leave", "leave"),
        ("leave: self, banned", ALL, Err(R::LeaveNotMember), "public", "ban", "leave"),
        ("member: unknown membership", ALL, Err(R::UnknownMembership), "public", "join", "dance"),
    ] {
        t.push(c(name, applies, expect, move |r| {
            r.jr(rule).st(CAROL, before).memb(CAROL, CAROL, membership)
        }));
    }
    // `sender` sets `target`'s `membership`; `target` holds `before` first ("" for unchanged).
    for (name, applies, expect, sender, target, membership, before) in [
        ("join: sender is not state key", ALL, Err(R::JoinSenderNotTarget), BOB, CAROL, "join", ""),
        ("invite: at invite level", ALL, OK, BOB, CAROL, "invite", ""),
        ("invite: target invited", ALL, OK, BOB, CAROL, "invite", "invite"),
        ("invite: target left", ALL, OK, BOB, CAROL, "invite", "leave"),
        ("invite: target knocked", V7P, OK, BOB, CAROL, "invite", "knock"),
        ("invite: sender absent", ALL, Err(R::InviteSenderNotJoined), CAROL, DAVE, "invite", ""),
        ("invite: target joined", ALL, Err(R::InviteTargetJoinedOrBanned), BOB, MOD, "invite", ""),
        ("invite: banned", ALL, Err(R::InviteTargetJoinedOrBanned), MOD, CAROL, "invite", "ban"),
        ("kick: sender not joined", ALL, Err(R::LeaveSenderNotJoined), CAROL, BOB, "leave", ""),
        ("unban: at ban level", ALL, OK, MOD, DAVE, "leave", "ban"),
        ("unban: below ban level", ALL, Err(R::UnbanLevel), BOB, DAVE, "leave", "ban"),
        ("kick: weaker target", ALL, OK, MOD, BOB, "leave", ""),
        ("kick: invited target", ALL, OK, MOD, CAROL, "leave", "invite"),
        ("kick: creator kicks moderator", ALL, OK, ALICE, MOD, "leave", ""),
        ("kick: below kick level", ALL, Err(R::KickLevel), BOB, EVE, "leave", ""),
        ("kick: target as powerful", ALL, Err(R::KickLevel), MOD, MOD2, "leave", ""),
        ("kick: target more powerful", ALL, Err(R::KickLevel), MOD, ALICE, "leave", ""),
        ("ban: joined target", ALL, OK, MOD, BOB, "ban", ""),
        ("ban: absent target", ALL, OK, MOD, CAROL, "ban", ""),
        ("ban: sender not joined", ALL, Err(R::BanSenderNotJoined), CAROL, BOB, "ban", ""),
        ("ban: below ban level", ALL, Err(R::BanLevel), BOB, CAROL, "ban", ""),
        ("ban: target as powerful", ALL, Err(R::BanLevel), MOD, MOD2, "ban", ""),
        ("ban: target is the creator", ALL, Err(R::BanLevel), MOD, ALICE, "ban", ""),
    ] {
        t.push(c(name, applies, expect, move |r| {
            r.st(target, before).memb(sender, target, membership)
        }));
    }
    // `sender` sends an event of `kind` (a state event if `state_key` is set, content `{}`).
    for (name, applies, expect, sender, kind, state_key) in [
        ("room id: the create event's", ALL, OK, BOB, MSG, None),
        ("aliases: sender's server", ALIAS_RULE, OK, BOB, ALIASES, Some(HS)),
        ("aliases: sender not joined", ALIAS_RULE, OK, CAROL, ALIASES, Some(HS)),
        ("aliases: other server", ALIAS_RULE, Err(R::AliasesStateKey), MOD, ALIASES, Some(OTHER)),
        ("aliases: no state_key", ALIAS_RULE, Err(R::AliasesStateKey), MOD, ALIASES, None),
        ("aliases: plain state event", NO_ALIAS_RULE, Err(R::EventLevel), BOB, ALIASES, Some(HS)),
        ("aliases: any state key", NO_ALIAS_RULE, OK, MOD, ALIASES, Some(OTHER)),
        ("sender joined", ALL, OK, BOB, MSG, None),
        ("sender not in the room", ALL, Err(R::SenderNotJoined), CAROL, MSG, None),
        ("sender not joined, state", ALL, Err(R::SenderNotJoined), CAROL, NAME, Some("")),
        ("3pid event: invite level, below state_default", ALL, OK, BOB, TPI, Some(TOKEN)),
        ("level: state at state_default", ALL, OK, MOD, NAME, Some("")),
        ("level: state below state_default", ALL, Err(R::EventLevel), BOB, NAME, Some("")),
        ("@ state key: own user id", ALL, OK, MOD, ST, Some(MOD)),
        ("@ state key: other user id", ALL, Err(R::StateKeyNotSender), MOD, ST, Some(BOB)),
        ("@ state key: not a user id", ALL, Err(R::StateKeyNotSender), MOD, ST, Some("@mod")),
        ("@ state key: no @", ALL, OK, MOD, ST, Some("mod:example.org")),
        ("allow: message", ALL, OK, EVE, MSG, None),
        ("allow: custom state event", ALL, OK, MOD, ST, Some("k")),
    ] {
        t.push(c(name, applies, expect, move |r| r.send(sender, kind, state_key, json!({}))));
    }
    // m.federate: `sender`'s message in a room whose create event has `m.federate: federate`.
    for (name, expect, federate, sender) in [
        ("m.federate false: other server", Err(R::NotFederated), false, EVE),
        ("m.federate false: creator's server", OK, false, BOB),
        ("m.federate true: other server", OK, true, EVE),
    ] {
        t.push(c(name, ALL, expect, move |r| {
            r.create(json!({"m.federate": federate})).msg(sender)
        }));
    }
    // join_authorised_via_users_server (v8+): `@carol` joins under `rule` naming `via` as the
    // authorising user, the event signed by `signer`.
    for (name, applies, expect, rule, via, signer) in [
        ("via: signed by the user's server", V8P, OK, "public", ALICE, Some(HS)),
        ("via: unsigned", V8P, NOT_SIGNED, "public", ALICE, None),
        ("via: signed by another server", V8P, NOT_SIGNED, "public", ALICE, Some(OTHER)),
        ("via: not a user id", V8P, NOT_SIGNED, "public", HS, Some(HS)),
        ("via: ignored", PRE8, OK, "public", ALICE, None),
        ("join: restricted, authorised", V8P, OK, "restricted", BOB, Some(HS)),
        ("join: restricted, via not joined", V8P, NOT_AUTHORISED, "restricted", DAVE, Some(HS)),
        ("join: knock_restricted, authorised", KR, OK, KNOCK_R, ALICE, Some(HS)),
    ] {
        t.push(c(name, applies, expect, move |r| r.via(rule, via, signer)));
    }
    // The first join after the create event (whose `content.creator` is `creator`) by `user`.
    for (name, applies, expect, creator, user, more_prev) in [
        ("join: creator's first join", ALL, OK, ALICE, ALICE, false),
        ("join: creator, more prev events", ALL, Err(R::JoinNotInvited), ALICE, ALICE, true),
        ("join: non-creator after create", ALL, Err(R::JoinNotInvited), ALICE, BOB, false),
        ("join: content.creator's first join", PRE11, OK, BOB, BOB, false),
        ("join: content.creator is no creator", V11P, Err(R::JoinNotInvited), BOB, BOB, false),
    ] {
        t.push(c(name, applies, expect, move |r| {
            r.create(json!({"creator": creator})).first_join(user, more_prev)
        }));
    }
    // `@alice` (the creator) sends the current power levels with `extra` merged in.
    for (name, applies, expect, extra) in [
        ("PL: non-numeric string user level", PRE10, invalid("users"), map("users", BOB, "ten")),
        ("PL: string user level", V10P, invalid("users"), map("users", BOB, "10")),
        ("PL: events not an object", V10P, invalid("events"), json!({"events": 5})),
        ("PL: string in events", V10P, invalid("events"), map("events", NAME, "50")),
        ("PL: notifications a list", V10P, invalid("notifications"), json!({"notifications": [5]})),
        ("PL: string in notifications", V10P, invalid("notifications"), notifications("50")),
        ("PL: users key not a user id", ALL, invalid("users"), map("users", "bob", 10)),
        ("PL: users not an object", ALL, invalid("users"), json!({"users": [BOB]})),
        ("PL: creator in users", V12, Err(R::PowerLevelsCreatorInUsers), map("users", ALICE, 100)),
    ] {
        t.push(c(name, applies, expect, move |r| r.send_pl(ALICE, extra.clone())));
    }
    // `@mod` (50) sends the current power levels with `extra` merged in.
    for (name, applies, expect, extra) in [
        ("PL change: named levels within power", ALL, OK, json!({"kick": 40, "ban": 50})),
        ("PL change: levels at own power", ALL, OK, json!({"users_default": 50, "invite": 50})),
        ("PL change: events entry within power", ALL, OK, map("events", NAME, 40)),
        ("PL change: events entry above sender", ALL, change("events"), map("events", NAME, 60)),
        ("PL change: notifications within power", ALL, OK, notifications(40)),
        ("PL change: notifications above sender", V6P, change("notifications"), notifications(60)),
        ("PL change: notifications unchecked", PRE6, OK, notifications(60)),
        ("PL change: users raised to own level", ALL, OK, json!({"users": {BOB: 50, CAROL: 10}})),
        ("PL change: user raised above sender", ALL, change("users"), map("users", BOB, 51)),
        ("PL change: equal user demoted", ALL, change("users"), map("users", MOD2, 0)),
        ("PL change: equal user removed", ALL, change("users"), map("users", MOD2, J::Null)),
        ("PL change: own entry lowered", ALL, OK, map("users", MOD, 10)),
        ("PL change: own entry raised", ALL, change("users"), map("users", MOD, 51)),
        ("PL change: creator removed", PRE12, change("users"), map("users", ALICE, J::Null)),
    ] {
        t.push(c(name, applies, expect, move |r| r.send_pl(MOD, extra.clone())));
    }
    for name in
        ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"]
    {
        t.push(c(format!("PL: string {name}"), V10P, invalid(name), move |r| {
            r.send_pl(ALICE, json!({name: "50"}))
        }));
        t.push(c(format!("PL change: {name} raised above sender"), ALL, change(name), move |r| {
            r.send_pl(MOD, json!({name: 51}))
        }));
    }
    t
}

#[test]
fn every_rule_in_every_applicable_room_version() {
    let cases = cases();
    let mut names = HashSet::new();
    let (mut runs, mut failures) = (0, Vec::new());
    for case in &cases {
        assert!(names.insert(&case.name), "duplicate case name {}", case.name);
        let versions: Vec<Rules> =
            RoomVersionRules::ALL.into_iter().filter(|v| (case.applies)(v)).collect();
        assert!(!versions.is_empty(), "case `{}` applies to no room version", case.name);
        for v in versions {
            runs += 1;
            let got = (case.body)(&mut Room::new(v));
            if got != case.expect {
                let (name, expect) = (&case.name, &case.expect);
                failures.push(format!(
                    "case `{name}`, room version {}: expected {expect:?}, got {got:?}",
                    v.id
                ));
            }
        }
    }
    let summary = format!("{} of {runs} runs ({} cases) failed", failures.len(), cases.len());
    assert!(failures.is_empty(), "{summary}:\n{}", failures.join("\n"));
}
