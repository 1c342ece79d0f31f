//! The config file: TOML with nested sections, every key optional, unknown keys refused, and
//! any key overridable from the environment (`HOMESERVER__SECTION__KEY=value`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use matrix_homeserver::{
    AppserviceRegistration, Config, DelayedEventsConfig, HttpConfig, LimitsConfig, MetricsConfig,
    PresenceConfig, RateLimitsConfig, RegistrationConfig, ServerNoticesConfig, TurnConfig,
    UrlPreviewConfig, UserDirectoryConfig, WellKnownConfig,
};
use serde::{Deserialize, Serialize};

/// The example config, with every key and its default (`homeserver generate-config`).
pub(crate) const EXAMPLE: &str = include_str!("../homeserver.example.toml");

/// The prefix of environment overrides.
const ENV_PREFIX: &str = "HOMESERVER__";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) server: ServerSection,
    pub(crate) storage: StorageSection,
    pub(crate) registration: RegistrationConfig,
    pub(crate) limits: LimitsConfig,
    pub(crate) well_known: WellKnownConfig,
    pub(crate) rate_limits: RateLimitsConfig,
    pub(crate) http: HttpConfig,
    pub(crate) federation: FederationSection,
    pub(crate) url_preview: UrlPreviewConfig,
    pub(crate) presence: PresenceConfig,
    pub(crate) turn: TurnConfig,
    pub(crate) delayed_events: DelayedEventsConfig,
    pub(crate) user_directory: UserDirectoryConfig,
    pub(crate) server_notices: ServerNoticesConfig,
    pub(crate) logging: LoggingSection,
    pub(crate) metrics: MetricsConfig,
}

/// `[logging]`: what is logged (on stderr) and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LoggingSection {
    /// `RUST_LOG` syntax (`info`, `matrix_homeserver=debug,info`, ...); `RUST_LOG` in the
    /// environment wins.
    pub(crate) filter: String,
    /// `text` (a line each) or `json` (an object a line).
    pub(crate) format: LogFormat,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection { filter: "info".to_owned(), format: LogFormat::Text }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `[federation]`: the library's settings, and where the federation listener listens with
/// which certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FederationSection {
    pub(crate) enabled: bool,
    pub(crate) listen: String,
    /// PEM certificate chain; unset with `tls_key` unset: plain HTTP (behind a reverse proxy).
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) verify_certificates: bool,
    pub(crate) trusted_key_servers: Vec<String>,
}

impl Default for FederationSection {
    fn default() -> Self {
        let library = matrix_homeserver::FederationConfig::default();
        FederationSection {
            enabled: library.enabled,
            listen: "0.0.0.0:8448".to_owned(),
            tls_cert: None,
            tls_key: None,
            verify_certificates: library.verify_certificates,
            trusted_key_servers: library.trusted_key_servers,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServerSection {
    pub(crate) name: String,
    pub(crate) listen: String,
    pub(crate) data_dir: PathBuf,
    /// Application service registration files (YAML, as Synapse reads them).
    pub(crate) app_service_config_files: Vec<PathBuf>,
    /// PEM certificate chain of the client listener; unset with `tls_key` unset: plain HTTP
    /// (behind a reverse proxy). Re-read on SIGHUP.
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            name: "localhost".to_owned(),
            listen: "127.0.0.1:8008".to_owned(),
            data_dir: PathBuf::from("data"),
            app_service_config_files: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StorageBackend {
    #[default]
    Sled,
    /// The embedded store on fjall instead of sled (same tables; cheaper writes).
    Fjall,
    Postgres,
}

impl StorageBackend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            StorageBackend::Sled => "sled",
            StorageBackend::Fjall => "fjall",
            StorageBackend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StorageSection {
    pub(crate) backend: StorageBackend,
    pub(crate) postgres_url: Option<String>,
    pub(crate) sled_cache_mb: u64,
    pub(crate) fjall_cache_mb: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: StorageBackend::Sled,
            postgres_url: None,
            sled_cache_mb: 6,
            fjall_cache_mb: 16,
        }
    }
}

impl FileConfig {
    /// Reads `path` (or nothing: the defaults), then applies the environment's overrides.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the config file {}", path.display()))?,
            None => String::new(),
        };
        let origin = path.map_or_else(|| "the defaults".to_owned(), |p| p.display().to_string());
        Self::parse(&text, std::env::vars(), &origin)
    }

    /// Parses `text`, with overrides from `env` (`HOMESERVER__SECTION__KEY`).
    pub(crate) fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        origin: &str,
    ) -> anyhow::Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).with_context(|| format!("{origin} is not valid TOML"))?;
        for (name, raw) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else { continue };
            let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
            set(&mut table, &keys, parse_value(&raw))
                .with_context(|| format!("the environment variable {name}"))?;
        }
        table
            .try_into::<FileConfig>()
            .with_context(|| format!("the configuration from {origin} (and the environment)"))
    }

    /// The library's settings.
    pub(crate) fn homeserver(&self) -> Config {
        let mut config = Config::new(self.server.name.clone());
        config.registration = self.registration.clone();
        config.limits = self.limits.clone();
        if config.limits.media_path.is_none() {
            config.limits.media_path = Some(self.server.data_dir.join("media"));
        }
        config.rate_limits = self.rate_limits;
        config.well_known = self.well_known.clone();
        config.http = self.http.clone();
        config.federation.enabled = self.federation.enabled;
        config.federation.verify_certificates = self.federation.verify_certificates;
        config.federation.trusted_key_servers = self.federation.trusted_key_servers.clone();
        config.url_preview = self.url_preview.clone();
        config.presence = self.presence.clone();
        config.turn = self.turn.clone();
        config.delayed_events = self.delayed_events.clone();
        config.user_directory = self.user_directory;
        config.metrics = self.metrics.clone();
        config.server_notices = self.server_notices.clone();
        config
    }
}

/// The application service registrations of `files`, each read as Synapse's YAML; an error
/// names the file. The homeserver checks what they say when it is built (see
/// [`name_registration_files`] for its errors).
pub(crate) fn read_appservices(files: &[PathBuf]) -> anyhow::Result<Vec<AppserviceRegistration>> {
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("reading the application service registration {}", path.display())
            })?;
            serde_norway::from_str::<AppserviceRegistration>(&text).with_context(|| {
                format!("the application service registration {} is not valid", path.display())
            })
        })
        .collect()
}

/// The files of the registrations an error the homeserver gave names (by their `id`s, one,
/// or two for a conflict between registrations), in the order they are listed.
pub(crate) fn name_registration_files(
    message: &str,
    files: &[PathBuf],
    registrations: &[AppserviceRegistration],
) -> Vec<PathBuf> {
    registrations
        .iter()
        .zip(files)
        .filter(|(registration, _)| message.contains(&format!("{:?}", registration.id)))
        .map(|(_, path)| path.clone())
        .collect()
}

/// A TOML value as written (`8008`, `true`, `["a"]`), or else the text as a string.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set(table: &mut toml::Table, keys: &[String], value: toml::Value) -> anyhow::Result<()> {
    match keys {
        [] => anyhow::bail!("names no key"),
        [key] => {
            table.insert(key.clone(), value);
            Ok(())
        }
        [section, rest @ ..] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                anyhow::bail!("{section} is not a section");
            };
            set(inner, rest, value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn the_example_is_the_defaults_and_names_every_key() {
        let example = FileConfig::parse(EXAMPLE, no_env(), "the example").expect("parses");
        assert_eq!(example, FileConfig::default());
        // Every key the structs write is in the example (the unset ones, commented out).
        let defaults = toml::to_string(&FileConfig::default()).expect("serialises");
        let defaults: toml::Table = toml::from_str(&defaults).expect("parses");
        for (section, keys) in &defaults {
            assert!(EXAMPLE.contains(&format!("[{section}]")), "section {section}");
            for key in keys.as_table().expect("a section").keys() {
                assert!(EXAMPLE.contains(&format!("\n{key} = ")), "{section}.{key}");
            }
        }
        for optional in ["postgres_url", "client_base_url", "server", "media_path"] {
            assert!(EXAMPLE.contains(&format!("# {optional} = ")), "{optional}");
        }
    }

    #[test]
    fn the_checked_in_example_is_what_generate_config_prints() {
        let file = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/homeserver.example.toml"
        ))
        .expect("reads");
        assert_eq!(file, EXAMPLE);
    }

    #[test]
    fn nested_sections_and_environment_overrides() {
        let text = "[server]\nname = \"example.org\"\n[registration]\nmode = \"open\"\n";
        let env = vec![
            ("HOMESERVER__SERVER__LISTEN".to_owned(), "0.0.0.0:8448".to_owned()),
            ("HOMESERVER__LIMITS__MAX_REQUEST_BYTES".to_owned(), "4096".to_owned()),
            ("HOMESERVER__REGISTRATION__TOKENS".to_owned(), "[\"a\", \"b\"]".to_owned()),
            (
                "HOMESERVER__HTTP__TRUSTED_PROXIES".to_owned(),
                "[\"10.0.0.0/8\", \"::1\"]".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = FileConfig::parse(text, env, "test").expect("parses");
        assert_eq!(config.server.name, "example.org");
        assert_eq!(config.server.listen, "0.0.0.0:8448");
        assert_eq!(config.limits.max_request_bytes, 4096);
        assert_eq!(config.registration.tokens, ["a", "b"]);
        assert_eq!(config.registration.mode, matrix_homeserver::RegistrationMode::Open);
        let proxies: Vec<String> =
            config.http.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(proxies, ["10.0.0.0/8", "::1"]);
        let bad = "[http]\ntrusted_proxies = [\"10.0.0.0/40\"]\n";
        let err = FileConfig::parse(bad, no_env(), "test").expect_err("not a network");
        assert!(format!("{err:#}").contains("10.0.0.0/40"), "{err:#}");
    }

    #[test]
    fn url_previews_are_off_unless_enabled_and_reach_the_library() {
        let config = FileConfig::parse("", no_env(), "test").expect("parses").homeserver();
        assert!(!config.url_preview.enabled);
        assert_eq!(config.url_preview.ip_blocklist, matrix_homeserver::default_ip_blocklist());
        let text = "[url_preview]\nenabled = true\nip_allowlist = [\"10.1.0.0/16\"]\n";
        let env = vec![("HOMESERVER__URL_PREVIEW__MAX_REDIRECTS".to_owned(), "2".to_owned())];
        let config = FileConfig::parse(text, env, "test").expect("parses").homeserver();
        assert!(config.url_preview.enabled);
        assert_eq!(config.url_preview.max_redirects, 2);
        assert!(!config.url_preview.is_blocked("10.1.2.3".parse().expect("an address")));
        assert!(config.url_preview.is_blocked("10.2.0.1".parse().expect("an address")));
    }

    #[test]
    fn registration_files_are_read_and_their_errors_name_them() {
        let dir = tempfile::tempdir().expect("a directory");
        let good = dir.path().join("discord.yaml");
        std::fs::write(
            &good,
            "id: discord\nurl: http://localhost:29334\nas_token: a\nhs_token: h\n\
             sender_localpart: discordbot\nrate_limited: false\nnamespaces:\n  users:\n  \
             - regex: '@discord_.*:example\\.org'\n    exclusive: true\n",
        )
        .expect("writes");
        let read = read_appservices(std::slice::from_ref(&good)).expect("reads");
        assert_eq!(read[0].id, "discord");
        assert!(!read[0].is_rate_limited());
        let bad = dir.path().join("broken.yaml");
        std::fs::write(&bad, "id: [unclosed\n").expect("writes");
        let err = read_appservices(&[good.clone(), bad.clone()]).expect_err("not YAML");
        assert!(format!("{err:#}").contains("broken.yaml"), "{err:#}");
        let missing = dir.path().join("missing.yaml");
        let err = read_appservices(&[missing]).expect_err("no file");
        assert!(format!("{err:#}").contains("missing.yaml"), "{err:#}");
        let text =
            format!("[server]\napp_service_config_files = [{:?}]\n", good.display().to_string());
        let config = FileConfig::parse(&text, no_env(), "test").expect("parses");
        assert_eq!(config.server.app_service_config_files, std::slice::from_ref(&good));
        let named = name_registration_files(
            "application service \"discord\": the users regex is not valid",
            std::slice::from_ref(&good),
            &read,
        );
        assert_eq!(named, vec![good.clone()]);
        let mut other = read[0].clone();
        other.id = "telegram".to_owned();
        let second = dir.path().join("telegram.yaml");
        let both = name_registration_files(
            "application service \"telegram\": its exclusive users namespace \"x\" is also \
             a namespace of \"discord\"",
            &[good.clone(), second.clone()],
            &[read[0].clone(), other],
        );
        assert_eq!(both, vec![good, second]);
    }

    #[test]
    fn unknown_keys_are_reported_by_name() {
        let err =
            FileConfig::parse("[server]\nnmae = \"x\"\n", no_env(), "test").expect_err("a typo");
        assert!(format!("{err:#}").contains("nmae"), "{err:#}");
        let err = FileConfig::parse("[sever]\n", no_env(), "test").expect_err("a typo");
        assert!(format!("{err:#}").contains("sever"), "{err:#}");
        let env = vec![("HOMESERVER__SERVER__PORT".to_owned(), "1".to_owned())];
        let err = FileConfig::parse("", env, "test").expect_err("unknown");
        assert!(format!("{err:#}").contains("port"), "{err:#}");
    }
}
