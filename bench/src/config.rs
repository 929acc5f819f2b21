//! Command-line configuration.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// `--keep-alive on|off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeepAlive {
    /// Reuse connections for several requests.
    On,
    /// One request per connection (`Connection: close`).
    Off,
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeepAlive::On => "on",
            KeepAlive::Off => "off",
        })
    }
}

/// HTTP/1.1 load generator measuring connection rate and latency.
#[derive(Clone, Debug, Parser)]
#[command(name = "zproxy-bench", version, about, long_about = None)]
pub struct Args {
    /// Target host: an IPv4 or IPv6 address, or a name resolving to an IPv4 one.
    #[arg(long)]
    pub host: String,

    /// Target TCP port.
    #[arg(long, default_value_t = 80)]
    pub port: u16,

    /// Measured duration ("10s", "500ms", "1m"). Defaults to 10s unless
    /// `--requests` is given, in which case the run lasts until N requests completed.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Number of requests kept in flight at all times.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// `off`: one request per connection with `Connection: close`; `on`: reuse connections.
    #[arg(long, value_enum, default_value_t = KeepAlive::Off)]
    pub keep_alive: KeepAlive,

    /// Request path.
    #[arg(long, default_value = "/")]
    pub path: String,

    /// Optional limit of requests started per second, across all connections.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Warm-up time before the measured window; its requests are not counted.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// Request body size in bytes; when > 0 a POST with Content-Length is sent.
    #[arg(long, default_value_t = 0)]
    pub body_size: usize,

    /// Expected response body size in bytes; any other size is a failure.
    #[arg(long)]
    pub expect_size: Option<u64>,

    /// Connect timeout, also the limit for a whole request.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,

    /// Worker threads (each runs its own event loop with a share of the connections).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: u32,

    /// Write machine-readable results (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write the markdown report to FILE (it is always printed to stdout too).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Write SVG charts: PREFIX-latency.svg (latency CDF and percentiles) and
    /// PREFIX-rate.svg (requests/s and Mbit/s over time).
    #[arg(long, value_name = "PREFIX")]
    pub plots: Option<PathBuf>,

    /// Name of this run shown in the report.
    #[arg(long)]
    pub label: Option<String>,

    /// Stop after N completed (measured) requests.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Exit with status 1 when any request failed.
    #[arg(long)]
    pub fail_on_error: bool,
}

impl Args {
    /// Measured duration, `None` when the run is bounded by `--requests` only.
    pub fn measured_duration(&self) -> Option<Duration> {
        match (self.duration, self.requests) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        }
    }

    /// Resolves `--host`/`--port` to one socket address: an IPv4 or IPv6
    /// literal (bare or in brackets) as given, a name to its first IPv4 address.
    pub fn target(&self) -> Result<SocketAddr, String> {
        if let Ok(ip) = self.host.parse::<std::net::Ipv4Addr>() {
            return Ok(SocketAddr::V4(SocketAddrV4::new(ip, self.port)));
        }
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::Ipv6Addr>() {
            return Ok(SocketAddr::new(ip.into(), self.port));
        }
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?;
        addrs
            .into_iter()
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{} has no IPv4 address", self.host))
    }

    /// Checks option combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err("--rate must be a positive number".into());
            }
        }
        if self.threads > self.concurrency {
            return Err("--threads must not exceed --concurrency".into());
        }
        if !self.path.starts_with('/') && self.path != "*" {
            return Err("--path must start with '/'".into());
        }
        if self.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("--path must not contain spaces or control characters".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be > 0".into());
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err("--duration must be > 0".into());
        }
        Ok(())
    }

    /// HTTP method used for requests.
    pub fn method(&self) -> &'static str {
        if self.body_size > 0 {
            "POST"
        } else {
            "GET"
        }
    }
}

/// Parses durations such as `10s`, `500ms`, `250us`, `2m`, `1h`, `1.5s` or a bare
/// number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid duration {s:?}: missing number"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: bad number"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("invalid duration {s:?}: unknown unit {other:?}")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Formats a duration compactly (`10s`, `500ms`, `1.5s`).
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        "0s".into()
    } else if us % 1_000_000 == 0 {
        format!("{}s", us / 1_000_000)
    } else if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("10parsecs").is_err());
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
    }
}
