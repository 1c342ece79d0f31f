//! Secure defaults, checked before the server starts: a configuration that would expose the
//! server (open registration nobody meant, URL previews that can reach the local network) is
//! refused with one line naming the key to change; weaker choices (rate limits off, a short
//! shared secret, secret files others can read) are warned about, each naming its key.

use std::net::IpAddr;
use std::path::Path;

use anyhow::bail;
use matrix_homeserver::RegistrationMode;

use crate::config::FileConfig;

/// The shortest registration shared secret not warned about.
pub(crate) const MIN_SECRET_CHARS: usize = 32;

/// Addresses a URL preview must never fetch from: loopback and the cloud metadata service.
const NEVER_FETCHED: &[&str] = &["127.0.0.1", "::1", "169.254.169.254", "0.0.0.0"];
/// Private networks: fetching from them is warned about (an allowlisted intranet may be
/// meant).
const PRIVATE: &[&str] = &["10.0.0.1", "172.16.0.1", "192.168.0.1", "fc00::1", "100.64.0.1"];

/// Checks `config` (read from `config_path`, if a file): `Err` with the reason when the
/// server must not start, else the warnings to log.
pub(crate) fn check(
    config: &FileConfig,
    config_path: Option<&Path>,
) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let registration = &config.registration;
    if registration.mode == RegistrationMode::Open
        && !registration.enable_registration_without_verification
    {
        bail!(
            "refusing to start: registration.mode = \"open\" lets anyone (spam bots included) \
             make accounts; use mode = \"token\", or set \
             registration.enable_registration_without_verification = true if you mean it"
        );
    }
    if registration.mode == RegistrationMode::Open {
        warnings.push(
            "registration is open to anyone (registration.mode = \"open\" with \
             registration.enable_registration_without_verification = true)"
                .to_owned(),
        );
    }
    if !config.rate_limits.enabled {
        warnings.push(
            "RATE LIMITS ARE OFF (rate_limits.enabled = false): any client may flood logins, \
             registrations and messages; turn them on outside tests"
                .to_owned(),
        );
    }
    let preview = &config.url_preview;
    if preview.enabled {
        for address in NEVER_FETCHED {
            let ip: IpAddr = address.parse()?;
            if !preview.is_blocked(ip) {
                bail!(
                    "refusing to start: url_preview.enabled = true and url_preview.ip_blocklist \
                     (with url_preview.ip_allowlist) lets previews fetch from {address}: any \
                     user could read this machine's local services; keep the default \
                     url_preview.ip_blocklist"
                );
            }
        }
        for address in PRIVATE {
            let ip: IpAddr = address.parse()?;
            if !preview.is_blocked(ip) {
                warnings.push(format!(
                    "url_preview.ip_blocklist (with url_preview.ip_allowlist) lets URL previews \
                     fetch from the private address {address}: users can read what it serves"
                ));
            }
        }
    }
    if let Some(secret) = &registration.shared_secret {
        if secret.chars().count() < MIN_SECRET_CHARS {
            warnings.push(format!(
                "registration.shared_secret is shorter than {MIN_SECRET_CHARS} characters: \
                 whoever guesses it makes administrators; use `openssl rand -hex 32`"
            ));
        }
        if let Some(path) = config_path
            && let Some(mode) = readable_by_others(path)
        {
            warnings.push(format!(
                "the config file {} holds registration.shared_secret and others can read it \
                 (mode {mode:o}): chmod 600 it",
                path.display()
            ));
        }
    }
    let key = config.server.data_dir.join("signing.key");
    if let Some(mode) = readable_by_others(&key) {
        warnings.push(format!(
            "the signing key {} can be read by others (mode {mode:o}): chmod 600 it (it is in \
             server.data_dir)",
            key.display()
        ));
    }
    for (section, tls_key) in
        [("server", &config.server.tls_key), ("federation", &config.federation.tls_key)]
    {
        if let Some(path) = tls_key
            && let Some(mode) = readable_by_others(path)
        {
            warnings.push(format!(
                "the TLS key {} ([{section}] tls_key) can be read by others (mode {mode:o}): \
                 chmod 600 it",
                path.display()
            ));
        }
    }
    Ok(warnings)
}

/// The permission bits of `path` when users other than its owner and group can read it.
fn readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o004 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FileConfig {
        FileConfig::parse(text, Vec::new(), "test").expect("parses")
    }

    #[test]
    fn the_defaults_pass_without_warnings() {
        let dir = tempfile::tempdir().expect("a directory");
        let mut config = parse("");
        config.server.data_dir = dir.path().to_owned();
        assert_eq!(check(&config, None).expect("passes"), Vec::<String>::new());
    }

    #[test]
    fn open_registration_needs_the_explicit_key() {
        let err = check(&parse("[registration]\nmode = \"open\"\n"), None).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("enable_registration_without_verification"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
        let config = parse(
            "[registration]\nmode = \"open\"\nenable_registration_without_verification = true\n",
        );
        let warnings = check(&config, None).expect("allowed");
        assert!(warnings.iter().any(|w| w.contains("open to anyone")), "{warnings:?}");
    }

    #[test]
    fn previews_that_reach_loopback_are_refused_and_private_ones_warned() {
        let err = check(&parse("[url_preview]\nenabled = true\nip_blocklist = []\n"), None)
            .expect_err("refused");
        assert!(err.to_string().contains("url_preview.ip_blocklist"), "{err}");
        let text = "[url_preview]\nenabled = true\nip_allowlist = [\"10.0.0.0/8\"]\n";
        let warnings = check(&parse(text), None).expect("allowed");
        assert!(warnings.iter().any(|w| w.contains("10.0.0.1")), "{warnings:?}");
    }

    #[test]
    fn weak_secrets_rate_limits_off_and_readable_files_are_warned() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("homeserver.toml");
        let text = "[registration]\nshared_secret = \"short\"\n[rate_limits]\nenabled = false\n";
        std::fs::write(&path, text).expect("writes");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        let mut config = parse(text);
        config.server.data_dir = dir.path().to_owned();
        let warnings = check(&config, Some(&path)).expect("allowed");
        let has = |needle: &str| warnings.iter().any(|w| w.contains(needle));
        assert!(has("registration.shared_secret is shorter"), "{warnings:?}");
        assert!(has("rate_limits.enabled = false"), "{warnings:?}");
        #[cfg(unix)]
        assert!(has("chmod 600"), "{warnings:?}");
    }
}
