//! Application services (bridges): the registrations, checked and compiled once when the
//! homeserver is built, and the questions every other part asks of them (which service owns
//! this token, this user, this alias; which services are interested in this room).

pub(crate) mod client;
pub(crate) mod devices;
pub(crate) mod interest;
pub(crate) mod query;
pub(crate) mod transactions;

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use ruma::{OwnedDeviceId, OwnedUserId, UserId};

use crate::config::appservice::{AppserviceRegistration, Namespace};
use crate::error::ApiError;
use crate::services::accounts::Accounts;

/// Why the registrations cannot be used. The message names the registration (by `id`); the
/// binary adds the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("application service {id:?}: {reason}")]
pub(crate) struct RegistrationError {
    /// The registration's `id`.
    pub id: String,
    /// What is wrong.
    pub reason: String,
}

/// One namespace regex, compiled (anchored at the start, as Synapse's `re.match`).
#[derive(Debug)]
struct Compiled {
    regex: Regex,
    exclusive: bool,
}

/// Regexes longer than this are refused (a registration is operator input, but a typo should
/// not cost seconds per event).
const MAX_REGEX_LEN: usize = 4096;

fn compile(
    id: &str,
    kind: &str,
    namespaces: &[Namespace],
) -> Result<Vec<Compiled>, RegistrationError> {
    namespaces
        .iter()
        .map(|namespace| {
            if namespace.regex.len() > MAX_REGEX_LEN {
                return Err(RegistrationError {
                    id: id.to_owned(),
                    reason: format!("a {kind} regex is longer than {MAX_REGEX_LEN} bytes"),
                });
            }
            let regex = regex::RegexBuilder::new(&format!("^(?:{})", namespace.regex))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| RegistrationError {
                    id: id.to_owned(),
                    reason: format!("the {kind} regex {:?} is not valid: {e}", namespace.regex),
                })?;
            Ok(Compiled { regex, exclusive: namespace.exclusive })
        })
        .collect()
}

/// A registration, checked, with its namespaces compiled.
#[derive(Debug)]
pub(crate) struct Appservice {
    pub(crate) registration: AppserviceRegistration,
    /// `@sender_localpart:server`.
    pub(crate) sender: OwnedUserId,
    users: Vec<Compiled>,
    aliases: Vec<Compiled>,
    rooms: Vec<Compiled>,
}

fn any_match(namespaces: &[Compiled], value: &str) -> bool {
    namespaces.iter().any(|n| n.regex.is_match(value))
}

fn exclusive_match(namespaces: &[Compiled], value: &str) -> bool {
    namespaces.iter().any(|n| n.exclusive && n.regex.is_match(value))
}

impl Appservice {
    /// The registration's `id`.
    pub(crate) fn id(&self) -> &str {
        &self.registration.id
    }

    /// Whether the service may act as `user`: its own sender, or a user in its namespace.
    pub(crate) fn owns_user(&self, user: &UserId) -> bool {
        user == self.sender || any_match(&self.users, user.as_str())
    }

    /// Whether `user` is in the service's user namespace (or is its sender).
    pub(crate) fn is_interested_in_user(&self, user: &str) -> bool {
        user == self.sender.as_str() || any_match(&self.users, user)
    }

    /// Whether `user` is in an exclusive user namespace of the service.
    pub(crate) fn is_exclusive_user(&self, user: &str) -> bool {
        user == self.sender.as_str() || exclusive_match(&self.users, user)
    }

    /// Whether `alias` is in the service's alias namespace.
    pub(crate) fn is_interested_in_alias(&self, alias: &str) -> bool {
        any_match(&self.aliases, alias)
    }

    /// Whether `alias` is in an exclusive alias namespace of the service.
    pub(crate) fn is_exclusive_alias(&self, alias: &str) -> bool {
        exclusive_match(&self.aliases, alias)
    }

    /// Whether `room` (an id) is in the service's room namespace.
    pub(crate) fn is_interested_in_room_id(&self, room: &str) -> bool {
        any_match(&self.rooms, room)
    }
}

/// Refuses exclusive namespaces that two registrations both claim: the same regex (users or
/// aliases, exclusive in one of them at least), or one's exclusive user namespace holding the
/// other's sender. The error names the later registration, and the earlier in its reason.
fn overlaps(list: &[Arc<Appservice>]) -> Result<(), RegistrationError> {
    for (at, later) in list.iter().enumerate() {
        for earlier in &list[..at] {
            let fail = |reason: String| RegistrationError { id: later.id().to_owned(), reason };
            let pairs = [
                (
                    "users",
                    &earlier.registration.namespaces.users,
                    &later.registration.namespaces.users,
                ),
                (
                    "aliases",
                    &earlier.registration.namespaces.aliases,
                    &later.registration.namespaces.aliases,
                ),
            ];
            for (kind, theirs, ours) in pairs {
                for namespace in ours {
                    let shared = theirs.iter().find(|other| {
                        other.regex == namespace.regex && (other.exclusive || namespace.exclusive)
                    });
                    if shared.is_some() {
                        return Err(fail(format!(
                            "its exclusive {kind} namespace {:?} is also a namespace of {:?}",
                            namespace.regex,
                            earlier.id()
                        )));
                    }
                }
            }
            for (one, other) in [(earlier, later), (later, earlier)] {
                if exclusive_match(&one.users, other.sender.as_str()) {
                    return Err(fail(format!(
                        "the sender {} of {:?} is in an exclusive user namespace of {:?}",
                        other.sender,
                        other.id(),
                        one.id()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Who a request made with a service's `as_token` acts as, as Synapse decides: the service's
/// sender, or the user named by the `user_id` query parameter when the service owns it and it
/// is an active account here. The device: none, unless the service manages its users' devices
/// (MSC4190 or MSC3202) and names an existing device of that user in `device_id`.
pub(crate) async fn masquerade(
    service: &Appservice,
    user_id: Option<&str>,
    device_id: Option<&str>,
    accounts: &Accounts,
) -> Result<(OwnedUserId, Option<OwnedDeviceId>), ApiError> {
    let user = match user_id {
        None => service.sender.clone(),
        Some(text) => {
            let cannot = || {
                ApiError::forbidden(format!(
                    "Application service cannot masquerade as this user ({text})"
                ))
            };
            let user = UserId::parse(text).map_err(|_| cannot())?;
            if user.server_name() != service.sender.server_name() || !service.owns_user(&user) {
                return Err(cannot());
            }
            if user != service.sender && !accounts.is_active(&user).await? {
                return Err(ApiError::forbidden(format!(
                    "Application service has not registered this user ({user})"
                )));
            }
            user
        }
    };
    let manages_devices = service.registration.msc4190 || service.registration.msc3202;
    let device = match device_id {
        Some(device) if manages_devices => {
            match accounts.device(&user, device).await {
                Ok(_) => {}
                Err(e) if e.errcode() == "M_NOT_FOUND" => {
                    return Err(ApiError::with_code(
                        400,
                        "M_FORBIDDEN",
                        "Application service trying to use a device that does not exist",
                    ));
                }
                Err(e) => return Err(e),
            }
            Some(OwnedDeviceId::from(device))
        }
        _ => None,
    };
    Ok((user, device))
}

/// Every registration, checked: ids and tokens unique, regexes valid.
#[derive(Debug)]
pub(crate) struct Appservices {
    list: Vec<Arc<Appservice>>,
    by_as_token: HashMap<String, usize>,
    client: client::AppserviceClient,
}

impl Appservices {
    /// Checks `registrations` for `server_name`.
    pub(crate) fn new(
        registrations: &[AppserviceRegistration],
        server_name: &str,
    ) -> Result<Self, RegistrationError> {
        let mut list = Vec::with_capacity(registrations.len());
        let mut by_as_token = HashMap::new();
        let mut ids = HashMap::new();
        let mut hs_tokens = HashMap::new();
        for (index, registration) in registrations.iter().enumerate() {
            let id = registration.id.as_str();
            let fail = |reason: String| RegistrationError { id: id.to_owned(), reason };
            if id.is_empty() {
                return Err(fail("`id` is empty".to_owned()));
            }
            if ids.insert(id, index).is_some() {
                return Err(fail("two registrations have this id".to_owned()));
            }
            if registration.as_token.is_empty() || registration.hs_token.is_empty() {
                return Err(fail("`as_token` and `hs_token` must not be empty".to_owned()));
            }
            if let Some(other) = by_as_token.insert(registration.as_token.clone(), index) {
                return Err(fail(format!(
                    "its `as_token` is also the `as_token` of {:?}",
                    registrations[other].id
                )));
            }
            if let Some(other) = hs_tokens.insert(registration.hs_token.as_str(), index) {
                return Err(fail(format!(
                    "its `hs_token` is also the `hs_token` of {:?}",
                    registrations[other].id
                )));
            }
            if let Some(url) = &registration.url {
                let parsed = url::Url::parse(url)
                    .map_err(|e| fail(format!("`url` {url:?} is not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(fail(format!("`url` {url:?} is not http or https")));
                }
            }
            let localpart = registration.sender_localpart.as_str();
            let conforming = !localpart.is_empty()
                && localpart.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=/+-".contains(&b)
                });
            let sender = UserId::parse(format!("@{localpart}:{server_name}"))
                .ok()
                .filter(|_| conforming)
                .ok_or_else(|| {
                    fail(format!("`sender_localpart` {localpart:?} is not a valid localpart"))
                })?;
            let namespaces = &registration.namespaces;
            list.push(Arc::new(Appservice {
                users: compile(id, "users", &namespaces.users)?,
                aliases: compile(id, "aliases", &namespaces.aliases)?,
                rooms: compile(id, "rooms", &namespaces.rooms)?,
                sender,
                registration: registration.clone(),
            }));
        }
        // A token that is both one service's as_token and another's hs_token would let the
        // one impersonate us to the other.
        for registration in registrations {
            if let Some(&other) = by_as_token.get(&registration.hs_token) {
                return Err(RegistrationError {
                    id: registration.id.clone(),
                    reason: format!(
                        "its `hs_token` is the `as_token` of {:?}",
                        registrations[other].id
                    ),
                });
            }
        }
        overlaps(&list)?;
        let client = client::AppserviceClient::new()
            .map_err(|reason| RegistrationError { id: String::new(), reason })?;
        Ok(Appservices { list, by_as_token, client })
    }

    /// The HTTP client requests to services go through.
    pub(crate) fn client(&self) -> &client::AppserviceClient {
        &self.client
    }

    /// Whether any service is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every service.
    pub(crate) fn all(&self) -> &[Arc<Appservice>] {
        &self.list
    }

    /// The service whose `as_token` this is.
    pub(crate) fn by_as_token(&self, token: &str) -> Option<&Arc<Appservice>> {
        self.by_as_token.get(token).map(|&index| &self.list[index])
    }

    /// Whether `user` is held exclusively by a service other than `except` (a registration by
    /// anyone else must be refused with `M_EXCLUSIVE`).
    pub(crate) fn user_is_exclusive_to_other(&self, user: &str, except: Option<&str>) -> bool {
        self.list
            .iter()
            .any(|service| Some(service.id()) != except && service.is_exclusive_user(user))
    }

    /// Refuses the creation of `alias` by `by` (the service whose token made the request,
    /// if any) when another service holds it exclusively, or when a service asks for an
    /// alias outside its namespace: 400 `M_EXCLUSIVE`, as Synapse.
    pub(crate) fn check_alias_creation(
        &self,
        alias: &str,
        by: Option<&Appservice>,
    ) -> Result<(), ApiError> {
        if let Some(service) = by
            && !service.is_interested_in_alias(alias)
        {
            return Err(ApiError::exclusive(
                "This application service has not reserved this kind of alias.",
            ));
        }
        if self.alias_is_exclusive_to_other(alias, by.map(Appservice::id)) {
            return Err(ApiError::exclusive("This alias is reserved by an application service."));
        }
        Ok(())
    }

    /// Whether `alias` is held exclusively by a service other than `except`.
    pub(crate) fn alias_is_exclusive_to_other(&self, alias: &str, except: Option<&str>) -> bool {
        self.list
            .iter()
            .any(|service| Some(service.id()) != except && service.is_exclusive_alias(alias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::appservice::Namespace;

    fn registration(id: &str, as_token: &str, hs_token: &str) -> AppserviceRegistration {
        let mut r = AppserviceRegistration::new(
            id,
            Some("http://127.0.0.1:29318".to_owned()),
            as_token,
            hs_token,
            format!("{id}bot"),
        );
        r.namespaces.users.push(Namespace::new(format!("@{id}_.*:example\\.org"), true));
        r.namespaces.aliases.push(Namespace::new(format!("#{id}_.*:example\\.org"), false));
        r
    }

    #[test]
    fn namespaces_match_from_the_start_as_synapse_does() {
        let services =
            Appservices::new(&[registration("irc", "a1", "h1")], "example.org").expect("valid");
        let irc = services.by_as_token("a1").expect("found");
        assert!(irc.is_interested_in_user("@irc_alice:example.org"));
        assert!(irc.is_interested_in_user("@ircbot:example.org"), "its sender");
        assert!(!irc.is_interested_in_user("@alice_irc_x:example.org"), "anchored at the start");
        assert!(irc.is_exclusive_user("@irc_bob:example.org"));
        assert!(irc.is_interested_in_alias("#irc_chan:example.org"));
        assert!(!irc.is_exclusive_alias("#irc_chan:example.org"));
        assert!(services.user_is_exclusive_to_other("@irc_bob:example.org", None));
        assert!(!services.user_is_exclusive_to_other("@irc_bob:example.org", Some("irc")));
        assert!(services.by_as_token("h1").is_none(), "an hs_token does not authenticate");
    }

    #[test]
    fn bad_registrations_are_refused_by_name() {
        let twice = Appservices::new(
            &[registration("a", "t1", "h1"), registration("a", "t2", "h2")],
            "example.org",
        )
        .expect_err("same id");
        assert_eq!(twice.id, "a");
        let token = Appservices::new(
            &[registration("a", "t1", "h1"), registration("b", "t1", "h2")],
            "example.org",
        )
        .expect_err("same as_token");
        assert!(token.reason.contains("as_token"), "{token}");
        let crossed = Appservices::new(
            &[registration("a", "t1", "h1"), registration("b", "t2", "t1")],
            "example.org",
        )
        .expect_err("hs_token of one is the as_token of another");
        assert_eq!(crossed.id, "b");
        let mut bad = registration("c", "t3", "h3");
        bad.namespaces.users.push(Namespace::new("@c_(.*:example.org", true));
        let regex = Appservices::new(&[bad], "example.org").expect_err("bad regex");
        assert!(regex.to_string().contains("\"c\""), "{regex}");
        let mut sender = registration("d", "t4", "h4");
        sender.sender_localpart = "has space".to_owned();
        Appservices::new(&[sender], "example.org").expect_err("bad sender");
        let mut url = registration("e", "t5", "h5");
        url.url = Some("ftp://x".to_owned());
        Appservices::new(&[url], "example.org").expect_err("bad url");
    }

    #[test]
    fn overlapping_exclusive_namespaces_are_refused_naming_both() {
        // Two bridges with different namespaces: fine, and so is a shared non-exclusive one.
        let mut a = registration("a", "t1", "h1");
        let mut b = registration("b", "t2", "h2");
        a.namespaces.users.push(Namespace::new("@shared_.*:example\\.org", false));
        b.namespaces.users.push(Namespace::new("@shared_.*:example\\.org", false));
        Appservices::new(&[a.clone(), b.clone()], "example.org").expect("no overlap");
        // The same regex, exclusive in one of them.
        let mut same = registration("c", "t3", "h3");
        same.namespaces.users.push(Namespace::new("@a_.*:example\\.org", false));
        let error = Appservices::new(&[a.clone(), same], "example.org").expect_err("overlap");
        assert_eq!(error.id, "c");
        assert!(error.reason.contains("\"a\""), "{error}");
        let mut alias = registration("d", "t4", "h4");
        alias.namespaces.aliases.push(Namespace::new("#a_.*:example\\.org", true));
        let error = Appservices::new(&[a.clone(), alias], "example.org").expect_err("aliases");
        assert!(error.to_string().contains("\"d\"") && error.reason.contains("\"a\""));
        // One's sender in the other's exclusive user namespace, either way round.
        let mut inside = registration("e", "t5", "h5");
        inside.sender_localpart = "a_bot".to_owned();
        let error = Appservices::new(&[a.clone(), inside.clone()], "example.org")
            .expect_err("the sender of e is a's");
        assert!(error.to_string().contains("\"e\"") && error.reason.contains("\"a\""));
        let error = Appservices::new(&[inside, a], "example.org").expect_err("either order");
        assert!(error.to_string().contains("\"a\"") && error.reason.contains("\"e\""));
    }

    #[test]
    fn a_mautrix_registration_reads() {
        let yaml = r#"
id: discord
url: http://localhost:29334
as_token: aaa
hs_token: hhh
sender_localpart: discordbot
rate_limited: false
namespaces:
  users:
  - regex: '@discord_.*:example\.org'
    exclusive: true
  aliases: []
de.sorunome.msc2409.push_ephemeral: true
receive_ephemeral: true
io.element.msc4190: true
"#;
        let registration: AppserviceRegistration = serde_norway::from_str(yaml).expect("reads");
        assert_eq!(registration.url.as_deref(), Some("http://localhost:29334"));
        assert!(!registration.is_rate_limited());
        assert!(registration.receives_ephemeral());
        assert!(registration.msc4190 && !registration.msc3202);
        let services = Appservices::new(&[registration], "example.org").expect("valid");
        let discord = services.by_as_token("aaa").expect("found");
        assert!(discord.is_exclusive_user("@discord_123:example.org"));
        let null_url: AppserviceRegistration = serde_norway::from_str(
            "id: x\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: x\n",
        )
        .expect("a null url reads");
        assert!(null_url.url.is_none() && null_url.is_rate_limited());
    }
}
