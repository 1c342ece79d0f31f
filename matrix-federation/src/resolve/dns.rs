//! [`Dns`] over hickory-resolver.

use std::net::IpAddr;

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{CLOUDFLARE, GOOGLE, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::{Dns, DnsError, SrvRecord};

/// Records of one kind kept at most from one answer.
const MAX_RECORDS: usize = 32;

/// DNS through hickory-resolver (its own cache, by the records' TTLs), configured from the
/// system (`/etc/resolv.conf`); when that cannot be read or names no server, Cloudflare's and
/// Google's public resolvers.
#[derive(Debug, Clone)]
pub struct HickoryDns {
    resolver: TokioResolver,
    /// Whether the system configuration was unusable and the public resolvers are used.
    fallback: bool,
}

impl HickoryDns {
    /// A resolver with the system's configuration, or the public fallback.
    pub fn from_system() -> Result<Self, DnsError> {
        if let Ok((config, options)) = hickory_resolver::system_conf::read_system_conf()
            && !config.name_servers().is_empty()
            && let Ok(resolver) =
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                    .with_options(options)
                    .build()
        {
            return Ok(HickoryDns { resolver, fallback: false });
        }
        let mut config = ResolverConfig::udp_and_tcp(&CLOUDFLARE);
        for server in ResolverConfig::udp_and_tcp(&GOOGLE).name_servers() {
            config.add_name_server(server.clone());
        }
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .build()
            .map_err(|e| DnsError(e.to_string()))?;
        Ok(HickoryDns { resolver, fallback: true })
    }

    /// Whether the system configuration was unusable and public resolvers are used instead.
    pub fn uses_fallback(&self) -> bool {
        self.fallback
    }
}

/// Nothing found is an empty answer, not an error.
fn empty_or_error<T>(error: NetError) -> Result<Vec<T>, DnsError> {
    if error.is_no_records_found() || error.is_nx_domain() {
        Ok(Vec::new())
    } else {
        Err(DnsError(error.to_string()))
    }
}

/// The name as a fully qualified one, so that search domains are not tried.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') { name.to_owned() } else { format!("{name}.") }
}

#[async_trait]
impl Dns for HickoryDns {
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        let lookup = match self.resolver.srv_lookup(fqdn(name)).await {
            Ok(lookup) => lookup,
            Err(e) => return empty_or_error(e),
        };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_ascii(),
                }),
                _ => None,
            })
            .take(MAX_RECORDS)
            .collect())
    }

    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        match self.resolver.lookup_ip(fqdn(host)).await {
            Ok(lookup) => Ok(lookup.iter().take(MAX_RECORDS).collect()),
            Err(e) => empty_or_error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_from_the_system_or_the_fallback_and_answers_ip_literals_offline() {
        let dns = HickoryDns::from_system().expect("a resolver");
        assert_eq!(dns.ips("127.0.0.1").await, Ok(vec![IpAddr::from([127, 0, 0, 1])]));
        assert_eq!(fqdn("a.org"), "a.org.");
        assert_eq!(fqdn("a.org."), "a.org.");
    }
}
