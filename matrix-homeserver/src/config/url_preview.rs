//! URL previews (`/_matrix/client/v1/media/preview_url`): off by default; when on, what the
//! server may fetch and how much.

use serde::{Deserialize, Serialize};

use super::IpNetwork;

/// The networks a preview never fetches from, unless [`UrlPreviewConfig::ip_allowlist`] names
/// them: this host, private and shared networks, link-local, documentation, benchmarking,
/// multicast and reserved ranges, and their IPv6 equivalents. An IPv4-mapped IPv6 address
/// (`::ffff:10.0.0.1`) is checked as its IPv4 address against the IPv4 entries.
pub const DEFAULT_IP_BLOCKLIST: &[&str] = &[
    // "This network", and 0.0.0.0 itself.
    "0.0.0.0/8",
    "10.0.0.0/8",
    // Shared address space (carrier-grade NAT).
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    // IETF protocol assignments; documentation (TEST-NET-1); 6to4 relay anycast.
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    // Benchmarking; documentation (TEST-NET-2, TEST-NET-3).
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    // Multicast; reserved, with the broadcast address 255.255.255.255.
    "224.0.0.0/4",
    "240.0.0.0/4",
    // Loopback; the unspecified address, loopback and the deprecated IPv4-compatible
    // addresses (::a.b.c.d).
    "::1/128",
    "::/96",
    // NAT64 (an IPv4 address behind a translator, RFC 6052 and RFC 8215).
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    // Discard-only.
    "100::/64",
    // IETF protocol assignments (Teredo among them); documentation.
    "2001::/23",
    "2001:db8::/32",
    // 6to4 (an IPv4 address inside).
    "2002::/16",
    // Unique local; link-local; site-local (deprecated); multicast.
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// URL previews. Every field has a default; the defaults keep previews off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct UrlPreviewConfig {
    /// Whether `preview_url` is answered at all; off, it is not a route (404
    /// `M_UNRECOGNIZED`, as Synapse answers with previews off).
    pub enabled: bool,
    /// Addresses never fetched from: every address a name resolves to is checked, and one
    /// blocked address refuses the name. Checked again on every redirect.
    pub ip_blocklist: Vec<IpNetwork>,
    /// Addresses fetched from even though the blocklist names them (an intranet wiki).
    pub ip_allowlist: Vec<IpNetwork>,
    /// The largest page or image fetched, in bytes; a larger one is refused (502
    /// `M_TOO_LARGE`) and not read past this.
    pub max_response_bytes: usize,
    /// Seconds one preview may take in all: resolving, connecting, redirects, the page and
    /// its image.
    pub timeout_secs: u64,
    /// Redirects followed at most.
    pub max_redirects: usize,
    /// Previews fetched at once, server-wide; more answer 429 `M_LIMIT_EXCEEDED` (each
    /// holds up to `max_response_bytes` in memory).
    pub max_concurrent_fetches: usize,
    /// Bytes the previews kept in memory (by URL) may take, about twice their JSON each.
    pub cache_bytes: u64,
    /// Seconds a preview is kept and answered again without fetching.
    pub cache_secs: u64,
}

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        UrlPreviewConfig {
            enabled: false,
            ip_blocklist: default_ip_blocklist(),
            ip_allowlist: Vec::new(),
            max_response_bytes: 10 * 1024 * 1024,
            timeout_secs: 20,
            max_redirects: 5,
            max_concurrent_fetches: 8,
            cache_bytes: 4 * 1024 * 1024,
            cache_secs: 3600,
        }
    }
}

/// [`DEFAULT_IP_BLOCKLIST`], parsed.
pub fn default_ip_blocklist() -> Vec<IpNetwork> {
    DEFAULT_IP_BLOCKLIST.iter().filter_map(|network| network.parse().ok()).collect()
}

impl UrlPreviewConfig {
    /// Whether a preview may not fetch from `ip`: blocklisted and not allowlisted.
    pub fn is_blocked(&self, ip: std::net::IpAddr) -> bool {
        !self.ip_allowlist.iter().any(|net| net.contains(ip))
            && self.ip_blocklist.iter().any(|net| net.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_blocklist_parses_whole_and_blocks_what_it_should() {
        assert_eq!(default_ip_blocklist().len(), DEFAULT_IP_BLOCKLIST.len());
        let config = UrlPreviewConfig::default();
        assert!(!config.enabled);
        for blocked in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            let ip = blocked.parse().expect("an address");
            assert!(config.is_blocked(ip), "{blocked} should be blocked");
        }
        for allowed in ["1.1.1.1", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            let ip = allowed.parse().expect("an address");
            assert!(!config.is_blocked(ip), "{allowed} should be allowed");
        }
    }

    #[test]
    fn the_allowlist_wins_over_the_blocklist() {
        let config = UrlPreviewConfig {
            ip_allowlist: vec!["127.0.0.1".parse().expect("parses")],
            ..UrlPreviewConfig::default()
        };
        assert!(!config.is_blocked("127.0.0.1".parse().expect("an address")));
        assert!(config.is_blocked("127.0.0.2".parse().expect("an address")));
    }
}
