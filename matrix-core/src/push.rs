//! Push rule evaluation (client-server API, "Push Notifications", "Push Rules"): which of a
//! user's rules an event matches first, and so what its actions are.
//!
//! The rules are ruma's [`Ruleset`] (what clients read and write); the event is our parsed
//! [`Object`], read in place (no flattening and no copy per user). Kinds are tried in the
//! spec's order, override, content, room, sender, underride, each in its list's order;
//! disabled rules never match, and the first rule that matches decides (its actions may be
//! empty: then the event does not notify). No rule matching means no notification.
//!
//! Conditions, as spec v1.19 defines them:
//! - `event_match`: the property at the dot-separated path `key` (`\.` and `\\` escaped) is a
//!   string that the glob `pattern` (`*` any run of characters, `?` one) matches whole,
//!   case-insensitively;
//! - `event_property_is`: the property is exactly the scalar `value` (string, integer,
//!   boolean or null);
//! - `event_property_contains`: the property is an array holding the scalar `value`;
//! - `contains_display_name`: `content.body` holds the user's display name in the room
//!   between word boundaries (case-insensitive; no display name never matches);
//! - `room_member_count`: the room's joined member count compares as `is` says (`2`, `==2`,
//!   `<2`, `>2`, `<=2`, `>=2`);
//! - `sender_notification_permission`: the sender's power level is at least the level the
//!   room's power levels set under `notifications.<key>` (50 when unset);
//! - anything else (an unknown kind) does not match.
//!
//! Content rules match their glob against a part of `content.body` that starts and ends at a
//! word boundary (the start or end of the body, or a character outside `[A-Za-z0-9_]`).
//!
//! Matching is an automaton over the pattern (one pass over the value, a set of pattern
//! positions), so its work is bounded by the value's length times the pattern's, whatever
//! the pattern; [`check_pattern`] and [`check_key`] bound what a client may store.

use ruma_common::push::{Action, ComparisonOperator, PushCondition, Ruleset, ScalarJsonValue};
use std::borrow::Cow;

use crate::json::{Object, Value};

/// The longest glob pattern, in characters, a rule may hold.
pub const MAX_PATTERN_CHARS: usize = 512;
/// The longest dot-separated key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// The most conditions one rule may hold.
pub const MAX_CONDITIONS: usize = 32;

/// What the room and the user are when an event is evaluated for that user.
#[derive(Debug, Clone, Copy)]
pub struct PushContext<'a> {
    /// The room of the event.
    pub room_id: &'a str,
    /// The user the rules are of.
    pub user_id: &'a str,
    /// The user's display name in the room, if they have one.
    pub display_name: Option<&'a str>,
    /// How many users are joined to the room.
    pub member_count: u64,
    /// The sender's power level in the room.
    pub sender_power_level: i64,
    /// The `notifications` object of the room's power levels, if any.
    pub notification_levels: Option<&'a Object>,
}

/// What the first matching rule says to do.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'r> {
    /// The id of the rule that matched.
    pub rule_id: &'r str,
    /// Its actions.
    pub actions: &'r [Action],
}

impl Outcome<'_> {
    /// Whether the event notifies the user.
    pub fn notifies(&self) -> bool {
        self.actions.iter().any(Action::should_notify)
    }

    /// Whether it is a highlight (the `highlight` tweak, true when it has no value).
    pub fn highlights(&self) -> bool {
        self.actions.iter().any(Action::is_highlight)
    }
}

/// The first rule of `rules` that `event` (a whole event, as a client or server sees it)
/// matches, or `None`: the event does not notify.
pub fn evaluate<'r>(
    rules: &'r Ruleset,
    event: &Object,
    ctx: &PushContext<'_>,
) -> Option<Outcome<'r>> {
    for rule in &rules.override_ {
        if rule.enabled && rule.conditions.iter().all(|c| condition(c, event, ctx)) {
            return Some(Outcome { rule_id: &rule.rule_id, actions: &rule.actions });
        }
    }
    let body = lookup(event, "content.body").and_then(Value::as_str);
    for rule in &rules.content {
        if rule.enabled && body.is_some_and(|body| glob_words(&rule.pattern, body)) {
            return Some(Outcome { rule_id: &rule.rule_id, actions: &rule.actions });
        }
    }
    for rule in &rules.room {
        if rule.enabled && rule.rule_id.as_str() == ctx.room_id {
            return Some(Outcome { rule_id: rule.rule_id.as_str(), actions: &rule.actions });
        }
    }
    let sender = event.get_str("sender");
    for rule in &rules.sender {
        if rule.enabled && Some(rule.rule_id.as_str()) == sender {
            return Some(Outcome { rule_id: rule.rule_id.as_str(), actions: &rule.actions });
        }
    }
    for rule in &rules.underride {
        if rule.enabled && rule.conditions.iter().all(|c| condition(c, event, ctx)) {
            return Some(Outcome { rule_id: &rule.rule_id, actions: &rule.actions });
        }
    }
    None
}

/// Whether one condition holds.
#[allow(deprecated)] // contains_display_name is deprecated in ruma but in the spec still.
fn condition(condition: &PushCondition, event: &Object, ctx: &PushContext<'_>) -> bool {
    match condition {
        PushCondition::EventMatch(c) => lookup(event, &c.key)
            .and_then(Value::as_str)
            .is_some_and(|value| glob_whole(&c.pattern, value)),
        PushCondition::EventPropertyIs(c) => {
            lookup(event, &c.key).is_some_and(|value| scalar_eq(value, &c.value))
        }
        PushCondition::EventPropertyContains(c) => lookup(event, &c.key)
            .and_then(Value::as_array)
            .is_some_and(|items| items.iter().any(|item| scalar_eq(item, &c.value))),
        PushCondition::ContainsDisplayName => {
            let Some(name) = ctx.display_name.filter(|n| !n.is_empty()) else { return false };
            lookup(event, "content.body")
                .and_then(Value::as_str)
                .is_some_and(|body| literal_words(name, body))
        }
        PushCondition::RoomMemberCount(c) => {
            let (count, wanted) = (ctx.member_count, u64::from(c.is.count));
            match c.is.prefix {
                ComparisonOperator::Eq => count == wanted,
                ComparisonOperator::Lt => count < wanted,
                ComparisonOperator::Gt => count > wanted,
                ComparisonOperator::Ge => count >= wanted,
                ComparisonOperator::Le => count <= wanted,
            }
        }
        PushCondition::SenderNotificationPermission(c) => {
            let needed = ctx
                .notification_levels
                .and_then(|levels| levels.get(c.key.as_str()))
                .and_then(level)
                .unwrap_or(50);
            ctx.sender_power_level >= needed
        }
        _ => false,
    }
}

/// A power level: an integer, or (room versions 1-9) a string holding one.
fn level(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Whether a property equals a scalar: strings, integers and booleans by value, null to
/// null; arrays, objects and non-integer numbers never.
fn scalar_eq(value: &Value, scalar: &ScalarJsonValue) -> bool {
    match (value, scalar) {
        (Value::Null, ScalarJsonValue::Null) => true,
        (Value::Bool(a), ScalarJsonValue::Bool(b)) => a == b,
        (Value::String(a), ScalarJsonValue::String(b)) => a == b,
        (Value::Number(n), ScalarJsonValue::Integer(i)) => n.as_i64() == Some(i64::from(*i)),
        _ => false,
    }
}

/// The value at a dot-separated path (`\.` is a dot in a key, `\\` a backslash, any other
/// backslash itself).
pub fn lookup<'e>(event: &'e Object, key: &str) -> Option<&'e Value> {
    let mut segments = Segments { rest: Some(key) };
    let first = segments.next()?;
    let mut found = event.get(&first)?;
    for segment in segments {
        found = found.as_object()?.get(&segment)?;
    }
    Some(found)
}

/// The segments of a dot-separated path, unescaped (a trailing dot makes an empty last one).
struct Segments<'k> {
    rest: Option<&'k str>,
}

impl<'k> Iterator for Segments<'k> {
    type Item = Cow<'k, str>;

    fn next(&mut self) -> Option<Cow<'k, str>> {
        let rest = self.rest.take()?;
        if !rest.contains('\\') {
            return Some(Cow::Borrowed(match rest.split_once('.') {
                Some((segment, tail)) => {
                    self.rest = Some(tail);
                    segment
                }
                None => rest,
            }));
        }
        let mut segment = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&(_, next @ ('.' | '\\'))) => {
                        chars.next();
                        segment.push(next);
                    }
                    _ => segment.push('\\'),
                },
                '.' => {
                    self.rest = Some(&rest[i + 1..]);
                    return Some(Cow::Owned(segment));
                }
                other => segment.push(other),
            }
        }
        Some(Cow::Owned(segment))
    }
}

/// Why a pattern or key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A glob pattern too long.
    #[error("a push rule pattern has at most {MAX_PATTERN_CHARS} characters")]
    PatternTooLong,
    /// A key that is empty, too long, or has an empty segment.
    #[error("{0:?} is not a dot-separated property path")]
    BadKey(String),
    /// Too many conditions.
    #[error("a push rule has at most {MAX_CONDITIONS} conditions")]
    TooManyConditions,
}

/// Checks a glob pattern a client stores: at most [`MAX_PATTERN_CHARS`] characters (every
/// other string is a valid glob: `*` and `?` are its only special characters).
pub fn check_pattern(pattern: &str) -> Result<(), RuleError> {
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(RuleError::PatternTooLong);
    }
    Ok(())
}

/// Checks a dot-separated key a client stores: not empty, at most [`MAX_KEY_BYTES`], no
/// empty segment.
pub fn check_key(key: &str) -> Result<(), RuleError> {
    if key.len() > MAX_KEY_BYTES || (Segments { rest: Some(key) }).any(|s| s.is_empty()) {
        return Err(RuleError::BadKey(key.chars().take(64).collect()));
    }
    Ok(())
}

/// Checks a rule's conditions: how many, and each pattern and key.
pub fn check_conditions(conditions: &[PushCondition]) -> Result<(), RuleError> {
    if conditions.len() > MAX_CONDITIONS {
        return Err(RuleError::TooManyConditions);
    }
    for c in conditions {
        match c {
            PushCondition::EventMatch(c) => {
                check_key(&c.key)?;
                check_pattern(&c.pattern)?;
            }
            PushCondition::EventPropertyIs(c) => check_key(&c.key)?,
            PushCondition::EventPropertyContains(c) => check_key(&c.key)?,
            _ => {}
        }
    }
    Ok(())
}

/// One element of a glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Glob {
    Any,
    One,
    Char(char),
}

fn parse_glob(pattern: &str) -> Vec<Glob> {
    pattern
        .chars()
        .map(|c| match c {
            '*' => Glob::Any,
            '?' => Glob::One,
            c => Glob::Char(c),
        })
        .collect()
}

/// Case-insensitive equality of two characters.
fn same(a: char, b: char) -> bool {
    a == b
        || if a.is_ascii() && b.is_ascii() {
            a.eq_ignore_ascii_case(&b)
        } else {
            a.to_lowercase().eq(b.to_lowercase())
        }
}

/// Whether the glob matches all of `value`, case-insensitively.
pub fn glob_whole(pattern: &str, value: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        // No wildcard: equality.
        return if pattern.is_ascii() && value.is_ascii() {
            pattern.eq_ignore_ascii_case(value)
        } else {
            pattern.chars().count() == value.chars().count()
                && pattern.chars().zip(value.chars()).all(|(a, b)| same(a, b))
        };
    }
    Matcher::new(&parse_glob(pattern)).run(value, false)
}

/// Whether the glob matches a part of `value` between word boundaries.
pub fn glob_words(pattern: &str, value: &str) -> bool {
    Matcher::new(&parse_glob(pattern)).run(value, true)
}

/// Whether `literal` (no wildcards) occurs in `value` between word boundaries.
fn literal_words(literal: &str, value: &str) -> bool {
    let glob: Vec<Glob> = literal.chars().map(Glob::Char).collect();
    Matcher::new(&glob).run(value, true)
}

/// A word character: `[A-Za-z0-9_]`.
fn word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The glob automaton: states are positions in the pattern (state `k`: the first `k`
/// elements matched).
struct Matcher<'g> {
    glob: &'g [Glob],
    current: Vec<bool>,
    next: Vec<bool>,
}

impl<'g> Matcher<'g> {
    fn new(glob: &'g [Glob]) -> Self {
        Matcher { glob, current: vec![false; glob.len() + 1], next: vec![false; glob.len() + 1] }
    }

    /// Adds state `k` and what it reaches without a character (past `*`s).
    fn add(glob: &[Glob], set: &mut [bool], mut k: usize) {
        loop {
            set[k] = true;
            if glob.get(k) == Some(&Glob::Any) {
                k += 1;
            } else {
                return;
            }
        }
    }

    /// Runs over `value`: whole (start at its start, accept at its end) or between word
    /// boundaries (start after any boundary, accept before any).
    fn run(&mut self, value: &str, words: bool) -> bool {
        let end = self.glob.len();
        Self::add(self.glob, &mut self.current, 0);
        let mut previous: Option<char> = None;
        for c in value.chars() {
            if words {
                // A match may start here if the character before is not a word character.
                if previous.is_some_and(word) {
                    // not a boundary
                } else {
                    Self::add(self.glob, &mut self.current, 0);
                }
                // A match may end here if this character is not a word character.
                if self.current[end] && !word(c) {
                    return true;
                }
            }
            self.next.iter_mut().for_each(|s| *s = false);
            let mut any = false;
            for k in 0..end {
                if !self.current[k] {
                    continue;
                }
                match self.glob[k] {
                    Glob::Any => {
                        Self::add(self.glob, &mut self.next, k);
                        any = true;
                    }
                    Glob::One => {
                        Self::add(self.glob, &mut self.next, k + 1);
                        any = true;
                    }
                    Glob::Char(p) if same(p, c) => {
                        Self::add(self.glob, &mut self.next, k + 1);
                        any = true;
                    }
                    Glob::Char(_) => {}
                }
            }
            std::mem::swap(&mut self.current, &mut self.next);
            if !any && !words {
                return false;
            }
            previous = Some(c);
        }
        if words && !previous.is_some_and(word) {
            Self::add(self.glob, &mut self.current, 0);
        }
        self.current[end]
    }
}

#[cfg(test)]
mod tests;
