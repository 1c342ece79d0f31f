//! Server access control lists (`m.room.server_acl`): which servers may take part in a room.
//!
//! The rules, in the spec's order (client-server API, `m.room.server_acl`):
//! 1. no ACL in the room's state: allow (the caller decides this: it has no [`ServerAcl`]);
//! 2. the server name is an IP literal (v4, or v6 in brackets) and `allow_ip_literals` is
//!    `false`: deny;
//! 3. the server name matches an entry of `deny`: deny;
//! 4. it matches an entry of `allow`: allow;
//! 5. otherwise deny.
//!
//! Entries are glob patterns (`*`: any run of characters, `?`: exactly one), matched
//! case-insensitively against the server name without its port. A missing `allow` is an
//! empty list (everybody denied); a missing or non-boolean `allow_ip_literals` is `true`;
//! entries that are not strings are ignored.

use crate::json::{Object, Value};

/// The parsed content of an `m.room.server_acl` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAcl {
    allow: Vec<String>,
    deny: Vec<String>,
    allow_ip_literals: bool,
}

/// The string entries of a list in `content` (lower-cased; nothing when not a list).
fn patterns(content: &Object, key: &str) -> Vec<String> {
    content
        .get(key)
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect())
        .unwrap_or_default()
}

impl ServerAcl {
    /// The ACL an event's `content` describes (never fails: malformed parts read as the
    /// spec's defaults).
    pub fn from_content(content: &Object) -> Self {
        ServerAcl {
            allow: patterns(content, "allow"),
            deny: patterns(content, "deny"),
            allow_ip_literals: content
                .get("allow_ip_literals")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        }
    }

    /// Whether `server_name` (a host with an optional port) may take part in the room.
    pub fn allows(&self, server_name: &str) -> bool {
        let host = host_of(server_name).to_ascii_lowercase();
        if !self.allow_ip_literals && is_ip_literal(&host) {
            return false;
        }
        if self.deny.iter().any(|pattern| glob_matches(pattern, &host)) {
            return false;
        }
        self.allow.iter().any(|pattern| glob_matches(pattern, &host))
    }
}

/// A server name without its port (`[::1]:8448` -> `[::1]`, `example.org:80` -> `example.org`).
pub fn host_of(server_name: &str) -> &str {
    if server_name.starts_with('[') {
        return match server_name.find(']') {
            Some(end) => &server_name[..=end],
            None => server_name,
        };
    }
    match server_name.rsplit_once(':') {
        Some((host, _port)) => host,
        None => server_name,
    }
}

/// Whether a host (without port) is an IPv4 literal or a bracketed IPv6 literal.
pub fn is_ip_literal(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    host.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Whether `text` matches the glob `pattern` (`*` any run, `?` one character), comparing
/// ASCII letters case-insensitively. Linear in `pattern.len() * text.len()` at worst: a
/// failed match after a `*` moves that `*` on by one character, never back further.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // The last `*` seen and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(json: &str) -> ServerAcl {
        match crate::json::parse_lenient(json.as_bytes()) {
            Ok(Value::Object(content)) => ServerAcl::from_content(&content),
            other => panic!("not an object: {other:?}"),
        }
    }

    #[test]
    fn globs_match_any_run_and_one_character() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("*", "evil.com"));
        assert!(glob_matches("*.evil.com", "a.b.evil.com"));
        assert!(!glob_matches("*.evil.com", "evil.com"));
        assert!(glob_matches("evil.c?m", "evil.com"));
        assert!(!glob_matches("evil.c?m", "evil.cm"));
        assert!(glob_matches("e*l.*", "evil.com"));
        assert!(glob_matches("EVIL.com", "evil.COM"));
        assert!(!glob_matches("evil.com", "evil.com.au"));
        assert!(glob_matches("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaab"));
        assert!(!glob_matches("a*a*a*a*b", &"a".repeat(5_000)));
        assert!(glob_matches("??", "ab"));
        assert!(!glob_matches("??", "abc"));
    }

    #[test]
    fn ports_are_ignored_and_ip_literals_recognised() {
        assert_eq!(host_of("evil.com:8448"), "evil.com");
        assert_eq!(host_of("evil.com"), "evil.com");
        assert_eq!(host_of("[::1]:8448"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
        assert!(is_ip_literal("1.2.3.4"));
        assert!(is_ip_literal("[2001:db8::1]"));
        assert!(!is_ip_literal("1.2.3.4.example.org"));
        assert!(!is_ip_literal("example.org"));
    }

    #[test]
    fn the_spec_example_denies_evil_servers_and_ip_literals() {
        // The spec's example content of `m.room.server_acl`.
        let example = acl(
            r#"{"allow": ["*"], "allow_ip_literals": false, "deny": ["*.evil.com", "evil.com"]}"#,
        );
        assert!(example.allows("good.example.org"));
        assert!(!example.allows("evil.com"));
        assert!(!example.allows("evil.com:8448"));
        assert!(!example.allows("evil.com:1234"));
        assert!(!example.allows("sub.EVIL.com"));
        assert!(!example.allows("1.2.3.4"));
        assert!(!example.allows("1.2.3.4:8448"));
        assert!(!example.allows("[::1]:8448"));
        assert!(example.allows("notevil.com"));
    }

    #[test]
    fn defaults_deny_everyone_without_allow_and_allow_ip_literals() {
        assert!(!acl("{}").allows("example.org"));
        assert!(!acl(r#"{"deny": []}"#).allows("example.org"));
        let ips = acl(r#"{"allow": ["*"], "allow_ip_literals": "no"}"#);
        assert!(ips.allows("1.2.3.4"), "a non-boolean allow_ip_literals reads as true");
        // Entries that are not strings, and a list that is not a list, are ignored.
        let odd = acl(r#"{"allow": [1, null, "ok.org"], "deny": "ok.org"}"#);
        assert!(odd.allows("ok.org"));
        assert!(!odd.allows("other.org"));
        // Only the allow list: everybody else is denied, case-insensitively.
        let only = acl(r#"{"allow": ["*.Example.org"]}"#);
        assert!(only.allows("matrix.example.ORG:443"));
        assert!(!only.allows("example.org"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let both = acl(r#"{"allow": ["*"], "deny": ["b.test"]}"#);
        assert!(both.allows("a.test"));
        assert!(!both.allows("b.test"));
        assert!(!both.allows("B.TEST:8448"));
    }
}
