//! The static config file (TOML): parsed and validated once, before any
//! device is touched. Unknown keys are errors; errors name the key and line.
//!
//! - `types`: the sections and their defaults, as serde reads them.
//! - `validate`: the cross-checks serde cannot express.
//! - `limits`: values DPDK or the data path cannot take.
//! - `locate`: the line of a key in the n-th `[[table]]`.
//! - `warn`: `zproxy check`'s extra: warnings and the machine's checks.
//! - `upgrade`: the checks of the upgrade keys.
//! - `resolve`: upstream host names, resolved at load.
//! - `proxy_keys`: the PROXY protocol keys' checks.
//! - `announce`: the `[announce]` keys (the VIP BIRD announces) and their checks.
//! - `fleet`: the `[fleet]` keys (peers for second-chance forwarding, the VIP).
//! - `eal`: the EAL arguments a config asks for.
//! - `ratelimit`: the rate-limit keys and their checks.
//! - `ipv6`: a port's IPv4 and IPv6 addresses, `gateway6`, IPv6 prefixes.
//! - `error`: [`ConfigError`].

use std::net::Ipv4Addr;
use std::path::Path;

mod admission;
mod announce;
mod eal;
mod error;
pub mod exception;
mod fleet;
mod hashkey;
pub mod headers;
pub mod ipv6;
mod limits;
mod locate;
mod proxy_keys;
mod ratelimit;
pub mod resolve;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_check;
mod tls;
mod types;
mod upgrade;
mod upstream6;
mod validate;
mod warn;

pub use announce::Announce;
pub use error::ConfigError;
pub use fleet::{parse_mac, Fleet, FleetPeer};
pub use hashkey::HashKey;
pub use limits::{
    EAL_FLAGS, MAX_ACCESS_LOG_RING, MAX_ACCESS_LOG_SAMPLE, MAX_DESCRIPTORS, MAX_LCORE, MAX_MBUFS,
    MAX_MBUF_CACHE, MAX_MTU, MIN_MTU,
};
pub use ratelimit::{ConnectionRateLimit, RateLimit, DEFAULT_RATE_LIMIT_ENTRIES};
pub use tls::{TlsCertificate, TlsListener, DEFAULT_HANDSHAKES_PER_POLL};
pub use types::{
    AccessLog, AccessLogFormat, Balance, Config, Cores, HealthCheckConfig, HealthKind, Listener,
    ListenerMode, Logging, Management, PortSection, ProxyProtocol, Route, Runtime, Server,
    StaticResponse, UpstreamGroup,
};
pub use warn::Checked;

/// Longest duration any `*_ms` key takes (30 days).
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;

impl Config {
    /// Reads, parses and validates the file at `path`; errors name it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_on(text, Path::new("/sys"))
    }

    /// As `parse`, with the machine's topology (for `cores = "auto"`) read
    /// under `sysfs` (normally `/sys`).
    pub fn parse_on(text: &str, sysfs: &Path) -> Result<Config, ConfigError> {
        Self::parse_with(text, sysfs, &resolve::system)
    }

    /// As `parse_on`, with host names looked up by `resolve`.
    pub fn parse_with(
        text: &str,
        sysfs: &Path,
        resolve: resolve::Resolve,
    ) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| syntax(text, &e))?;
        if cfg.runtime.cores == Some(Cores::Auto) {
            cfg.choose_worker_cores(text, sysfs)?;
        }
        cfg.resolve_servers(text, resolve)?;
        cfg.validate_addresses(text)?;
        cfg.validate(text)?;
        cfg.validate_proxy_keys(text)?;
        cfg.validate_hash_keys(text)?;
        cfg.validate_limits(text)?;
        cfg.validate_upgrade(text)?;
        cfg.validate_tls(text)?;
        cfg.validate_announce(text)?;
        cfg.validate_fleet(text)?;
        cfg.validate_admission(text)?;
        Ok(cfg)
    }

    /// `cores = "auto"`: fills in worker_lcores (lcore i on CPU i) from the topology.
    fn choose_worker_cores(&mut self, text: &str, sysfs: &Path) -> Result<(), ConfigError> {
        use crate::topology::{auto_worker_cpus, pci_node, Topology};
        let raw: toml::Table = text.parse().map_err(|e| syntax(text, &e))?;
        let runtime = raw.get("runtime").and_then(|r| r.as_table());
        for key in ["worker_lcores", "worker_cpus"] {
            if runtime.is_some_and(|r| r.contains_key(key)) {
                return Err(ConfigError::Invalid {
                    file: None,
                    line: line_of_key(text, key),
                    key: format!("runtime.{key}"),
                    message: format!(
                        "runtime: cores = \"auto\" chooses the workers itself: remove {key}, or remove cores to list them"
                    ),
                });
            }
        }
        let topo = Topology::read(sysfs);
        let port_nodes: Vec<Option<u32>> = self
            .ports
            .iter()
            .map(|p| p.pci.as_deref().and_then(|a| pci_node(sysfs, a)))
            .collect();
        let queues = self.ports.iter().filter_map(|p| p.queues).min();
        let cpus =
            auto_worker_cpus(&topo, self.runtime.main_lcore, &port_nodes, queues).map_err(|e| {
                ConfigError::Invalid {
                    file: None,
                    line: line_of_key(text, "cores"),
                    key: "runtime.cores".into(),
                    message: format!("runtime: {e}"),
                }
            })?;
        self.runtime.worker_lcores = cpus;
        self.runtime.worker_cpus = None;
        Ok(())
    }
}

/// A TOML parse error, at the line its span starts on.
fn syntax(text: &str, e: &toml::de::Error) -> ConfigError {
    ConfigError::Syntax {
        file: None,
        line: e.span().map(|s| text[..s.start].matches('\n').count() + 1),
        message: e.message().to_owned(),
    }
}

/// The first line (1-based) that sets `key` ("key = ...").
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|n| n + 1)
}

/// True when `ip` is inside `net/len`.
pub fn in_network(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// "10.0.0.2/24" -> (10.0.0.2, 24).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((ip.parse().ok()?, len))
}
