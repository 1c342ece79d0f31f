//! Power levels: reading them from `m.room.power_levels` content, and the rules on changing them.

use super::AuthRejection;
use crate::json::{Number, Object, Value};
use crate::room_version::RoomVersionRules;

/// The named levels whose changes the power-levels rule checks.
const NAMED_LEVELS: [&str; 7] =
    ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"];

/// A power level as the room version reads it: an integer; before v10 also a string holding a
/// base-10 integer (optional sign, surrounding whitespace); before v6 also a float (truncated).
pub fn parse_level(value: &Value, rules: &RoomVersionRules) -> Option<i64> {
    match value {
        Value::Number(Number::Int(i)) => Some(*i),
        Value::Number(Number::Raw(raw)) if rules.auth.float_power_levels => {
            let float: f64 = raw.parse().ok()?;
            let truncated = float.trunc();
            // `as` saturates; refuse what does not fit instead.
            (truncated.is_finite() && truncated.abs() < 9.2e18).then_some(truncated as i64)
        }
        Value::String(s) if !rules.auth.integer_power_levels => {
            let s = s.trim();
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.strip_prefix('+').unwrap_or(s).parse().ok()
        }
        _ => None,
    }
}

/// The effective power levels of a room.
pub(super) struct PowerLevels<'a> {
    rules: &'a RoomVersionRules,
    content: Option<&'a Object>,
    creators: &'a [&'a str],
    users_default: i128,
    pub(super) invite: i128,
    pub(super) kick: i128,
    pub(super) ban: i128,
    pub(super) redact: i128,
    events_default: i128,
    state_default: i128,
}

impl<'a> PowerLevels<'a> {
    pub(super) fn new(
        rules: &'a RoomVersionRules,
        content: Option<&'a Object>,
        creators: &'a [&'a str],
    ) -> Self {
        let named = |name: &str, default: i64| {
            content.and_then(|c| c.get(name)).and_then(|v| parse_level(v, rules)).unwrap_or(default)
        };
        PowerLevels {
            rules,
            content,
            creators,
            users_default: named("users_default", 0).into(),
            invite: named("invite", 0).into(),
            kick: named("kick", 50).into(),
            ban: named("ban", 50).into(),
            redact: named("redact", 50).into(),
            events_default: named("events_default", 0).into(),
            state_default: named("state_default", 50).into(),
        }
    }

    /// The power level of `user`. Room version 12 creators are infinitely powerful.
    pub(super) fn user(&self, user: &str) -> i128 {
        let is_creator = self.creators.contains(&user);
        if self.rules.auth.privileged_creators && is_creator {
            return i128::MAX;
        }
        match self.content {
            Some(content) => content
                .get_object("users")
                .and_then(|users| users.get(user))
                .and_then(|v| parse_level(v, self.rules))
                .map_or(self.users_default, i128::from),
            None if is_creator => 100,
            None => self.users_default,
        }
    }

    /// The level needed to send an event of `kind`.
    pub(super) fn for_event(&self, kind: &str, is_state: bool) -> i128 {
        let specific = self
            .content
            .and_then(|c| c.get_object("events"))
            .and_then(|events| events.get(kind))
            .and_then(|v| parse_level(v, self.rules));
        match specific {
            Some(level) => level.into(),
            None if is_state => self.state_default,
            None => self.events_default,
        }
    }
}

fn is_valid_user_id(id: &str) -> bool {
    ruma_common::UserId::parse(id).is_ok()
}

fn level_map<'a>(
    content: &'a Object,
    key: &'static str,
    rules: &RoomVersionRules,
) -> Result<Vec<(&'a str, i64)>, AuthRejection> {
    match content.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| parse_level(v, rules).map(|level| (k, level)))
            .collect::<Option<Vec<_>>>()
            .ok_or(AuthRejection::PowerLevelsInvalid(key)),
        Some(_) => Err(AuthRejection::PowerLevelsInvalid(key)),
    }
}

fn lookup(map: &[(&str, i64)], key: &str) -> Option<i64> {
    map.binary_search_by(|(k, _)| (*k).cmp(key)).ok().map(|i| map[i].1)
}

fn lenient_map<'a>(
    content: &'a Object,
    key: &str,
    rules: &RoomVersionRules,
) -> Vec<(&'a str, i64)> {
    content
        .get_object(key)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k, parse_level(v, rules)?))).collect())
        .unwrap_or_default()
}

/// Each key of `old` and `new` whose value differs: `(key, old, new)`.
fn changed_entries<'a>(
    old: &'a [(&'a str, i64)],
    new: &'a [(&'a str, i64)],
) -> impl Iterator<Item = (&'a str, Option<i64>, Option<i64>)> + 'a {
    let removed_or_changed = old.iter().filter_map(move |&(k, o)| {
        let n = lookup(new, k);
        (n != Some(o)).then_some((k, Some(o), n))
    });
    let added =
        new.iter().filter(move |(k, _)| lookup(old, k).is_none()).map(|&(k, n)| (k, None, Some(n)));
    removed_or_changed.chain(added)
}

/// The `m.room.power_levels` rule: content validity, then what the sender may change.
pub(super) fn check_change(
    rules: &RoomVersionRules,
    new: &Object,
    old: Option<&Object>,
    sender: &str,
    sender_level: i128,
    creators: &[&str],
) -> Result<(), AuthRejection> {
    // Validity of the new content.
    for name in NAMED_LEVELS {
        if let Some(value) = new.get(name)
            && parse_level(value, rules).is_none()
        {
            return Err(AuthRejection::PowerLevelsInvalid(name));
        }
    }
    let new_events = level_map(new, "events", rules)?;
    let new_notifications = level_map(new, "notifications", rules)?;
    let new_users = level_map(new, "users", rules)?;
    if new_users.iter().any(|(user, _)| !is_valid_user_id(user)) {
        return Err(AuthRejection::PowerLevelsInvalid("users"));
    }
    if rules.auth.privileged_creators && new_users.iter().any(|(user, _)| creators.contains(user)) {
        return Err(AuthRejection::PowerLevelsCreatorInUsers);
    }

    let Some(old) = old else { return Ok(()) };

    // Levels in the current state were accepted before; read what parses.
    let lenient = |content, key| lenient_map(content, key, rules);
    let beyond = |level: Option<i64>| level.is_some_and(|l| i128::from(l) > sender_level);

    for name in NAMED_LEVELS {
        let before = old.get(name).and_then(|v| parse_level(v, rules));
        let after = new.get(name).and_then(|v| parse_level(v, rules));
        if before != after && (beyond(before) || beyond(after)) {
            return Err(AuthRejection::PowerLevelsChange(name));
        }
    }

    let mut maps = vec![("events", lenient(old, "events"), new_events)];
    if rules.auth.notifications_in_power_levels {
        maps.push(("notifications", lenient(old, "notifications"), new_notifications));
    }
    for (name, before, after) in &maps {
        for (_, old_level, new_level) in changed_entries(before, after) {
            if beyond(old_level) || beyond(new_level) {
                return Err(AuthRejection::PowerLevelsChange(name));
            }
        }
    }

    let old_users = lenient(old, "users");
    for (user, old_level, new_level) in changed_entries(&old_users, &new_users) {
        if user != sender && old_level.is_some_and(|l| i128::from(l) >= sender_level) {
            return Err(AuthRejection::PowerLevelsChange("users"));
        }
        if beyond(new_level) {
            return Err(AuthRejection::PowerLevelsChange("users"));
        }
    }
    Ok(())
}
