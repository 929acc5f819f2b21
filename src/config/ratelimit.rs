//! Rate-limit keys (`rate_limit`, `connection_rate_limit`,
//! `runtime.rate_limit_entries`) and their checks.

use serde::Deserialize;

use super::validate::invalid;
use super::{Config, ConfigError, ListenerMode};

/// Buckets per worker and table, by default (16 bytes each: 1 MiB).
pub const DEFAULT_RATE_LIMIT_ENTRIES: u32 = 65_536;
/// A table is at least one set of `net::ratelimit::WAYS`.
pub const MIN_RATE_LIMIT_ENTRIES: u32 = 4;
/// Most buckets per worker and table (256 MiB).
pub const MAX_RATE_LIMIT_ENTRIES: u32 = 1 << 24;

/// Requests per client address (on an `http` listener or one of its routes).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate (may be fractional: 0.5 is one request per 2 s).
    pub requests_per_second: f64,
    /// Requests a client may make at once after a quiet spell.
    pub burst: u32,
}

/// New connections per client address, decided at the SYN (any listener).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRateLimit {
    pub connections_per_second: f64,
    pub burst: u32,
}

fn check_rate(rate: f64, burst: u32, what: &str) -> Result<(), String> {
    if !(rate.is_finite() && (0.001..=1e9).contains(&rate)) {
        return Err(format!(
            "{what} per second = {rate}: must be 0.001..=1000000000"
        ));
    }
    if !(1..=1_000_000).contains(&burst) {
        return Err(format!(
            "burst = {burst}: must be 1..=1000000 (1: no burst)"
        ));
    }
    Ok(())
}

impl Config {
    pub(super) fn validate_rate_limits(&self, text: &str) -> Result<(), ConfigError> {
        let at = |needle: &str| text.lines().position(|l| l.contains(needle)).map(|n| n + 1);
        let n = self.runtime.rate_limit_entries;
        if !(MIN_RATE_LIMIT_ENTRIES..=MAX_RATE_LIMIT_ENTRIES).contains(&n) {
            return Err(invalid(at("rate_limit_entries"), "runtime.rate_limit_entries", format!("runtime.rate_limit_entries = {n}: must be {}..={MAX_RATE_LIMIT_ENTRIES} (buckets per worker, 16 bytes each)", MIN_RATE_LIMIT_ENTRIES)));
        }
        for l in &self.listeners {
            let lat = at(&format!("tcp_port = {}", l.tcp_port));
            let name = format!("listener on tcp_port {}", l.tcp_port);
            if let Some(r) = &l.rate_limit {
                if l.mode.base() != ListenerMode::Http {
                    return Err(invalid(at("requests_per_second").or(lat), "listener.rate_limit", format!("{name}: rate_limit limits HTTP requests and needs mode = \"http\"; for connections use connection_rate_limit")));
                }
                check_rate(r.requests_per_second, r.burst, "requests").map_err(|m| {
                    invalid(
                        at("requests_per_second").or(lat),
                        "listener.rate_limit",
                        format!("{name}: rate_limit {m}"),
                    )
                })?;
            }
            for r in l.routes.iter().filter_map(|r| r.rate_limit.as_ref()) {
                check_rate(r.requests_per_second, r.burst, "requests").map_err(|m| {
                    invalid(
                        at("requests_per_second").or(lat),
                        "listener.route.rate_limit",
                        format!("{name}: route rate_limit {m}"),
                    )
                })?;
            }
            if let Some(r) = &l.connection_rate_limit {
                check_rate(r.connections_per_second, r.burst, "connections").map_err(|m| {
                    invalid(
                        at("connections_per_second").or(lat),
                        "listener.connection_rate_limit",
                        format!("{name}: connection_rate_limit {m}"),
                    )
                })?;
            }
        }
        Ok(())
    }
}
