//! The command line of `zproxy-world`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use zproxy_bench::config::parse_duration;
use zproxy_bench::KeepAlive;

/// A load generator and an origin on DPDK + smoltcp, one core, two ports
/// (typically `net_memif`): no kernel on the path. The generator connects
/// from `--client-port` to `--target`; the origin answers on
/// `--origin-port`. Joined directly (a memif pair between the two ports),
/// it measures the world's own capacity; with ZProxy between them, ZProxy's.
#[derive(Clone, Debug, Parser)]
#[command(name = "zproxy-world", version, about, long_about = None)]
pub struct WorldArgs {
    /// The generator's DPDK device (`--vdev` syntax), e.g.
    /// `net_memif0,role=server,socket=/run/w/client.sock,socket-abstract=no`.
    #[arg(long)]
    pub client_vdev: String,
    /// The generator's address and prefix length on its port.
    #[arg(long, value_parser = parse_cidr)]
    pub client_addr: (Ipv4Addr, u8),
    /// The origin's DPDK device.
    #[arg(long)]
    pub origin_vdev: String,
    /// The origin's address and prefix length on its port.
    #[arg(long, value_parser = parse_cidr)]
    pub origin_addr: (Ipv4Addr, u8),
    /// The TCP port the origin listens on.
    #[arg(long, default_value_t = 80)]
    pub origin_port: u16,
    /// Where the generator connects: ZProxy's listener, or the origin itself.
    #[arg(long)]
    pub target: SocketAddrV4,

    /// Measured duration.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Not measured, before the window (ARP, health checks, warm caches).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Requests started per second at most (with keep-alive off, each a
    /// new connection; with it on, a kept connection waits for its turn);
    /// unlimited (closed loop) when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, value_enum, default_value_t = KeepAlive::Off)]
    pub keep_alive: KeepAlive,
    /// With keep-alive on: each connection makes one request, then stays
    /// open and idle to the end of the run (memory per open connection).
    #[arg(long)]
    pub hold_open: bool,
    /// Request body bytes (an upload; POST when above 0).
    #[arg(long, default_value_t = 0)]
    pub request_size: usize,
    /// Response body bytes the origin sends (and the generator expects).
    #[arg(long, default_value_t = 64)]
    pub response_size: u64,
    /// Check every body byte on both sides (a compare per byte).
    #[arg(long)]
    pub verify: bool,
    /// A request (or a connect) not done in this long fails.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// How long to wait for both ports' links (the memif peers) to come up.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub link_timeout: Duration,
    /// After the run, keep the ports up (unpolled) until the peer's links go
    /// down or this long: stop ZProxy first, then the world leaves (see
    /// `setup::linger`). Results are all written before (the `--world-json`
    /// file last).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub linger: Duration,

    /// Flow slots of the world's stack (generator and origin flows together).
    #[arg(long, default_value_t = 16384)]
    pub max_flows: usize,
    /// Socket buffer bytes per direction per flow.
    #[arg(long, default_value_t = 16384)]
    pub socket_buffer: usize,
    /// Mbufs in the world's pool.
    #[arg(long, default_value_t = 32767)]
    pub mbufs: u32,
    /// The CPU the world runs on (its EAL main lcore).
    #[arg(long, default_value_t = 0)]
    pub cpu: u32,
    /// EAL `--file-prefix` (keeps instances apart).
    #[arg(long, default_value = "zpworld")]
    pub file_prefix: String,
    /// Extra EAL arguments, e.g. `--eal=--no-huge`.
    #[arg(long = "eal", allow_hyphen_values = true)]
    pub eal: Vec<String>,

    /// Label in reports.
    #[arg(long)]
    pub label: Option<String>,
    /// Write the results as JSON (the `zproxy-bench` shape).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the markdown report here too.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the latency and rate charts as PREFIX-latency.svg / PREFIX-rate.svg.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Write the world's own figures (its busy share, stack counters) as JSON.
    #[arg(long)]
    pub world_json: Option<PathBuf>,
    /// Exit with status 1 when any request failed.
    #[arg(long)]
    pub fail_on_error: bool,
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: give ADDRESS/PREFIX, e.g. 10.81.0.1/24"))?;
    let ip = ip
        .parse()
        .map_err(|e| format!("{s:?}: bad IPv4 address: {e}"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|&l| l <= 32)
        .ok_or_else(|| format!("{s:?}: the prefix length must be 0..=32"))?;
    Ok((ip, len))
}

impl WorldArgs {
    /// Refuses combinations that cannot run.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_flows < 2 * self.concurrency as usize + 64 {
            return Err(format!(
                "--max-flows {} is too small for --concurrency {}: each request takes a \
                 generator and an origin flow; give at least {}",
                self.max_flows,
                self.concurrency,
                2 * self.concurrency as usize + 64
            ));
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("--rate must be a positive number of requests per second".into());
        }
        if self.hold_open && self.keep_alive != KeepAlive::On {
            return Err("--hold-open keeps connections open: give --keep-alive on too".into());
        }
        if self.socket_buffer < 1024 {
            return Err("--socket-buffer must be at least 1024 bytes".into());
        }
        Ok(())
    }

    /// The same run in `zproxy-bench`'s terms, for its report and charts.
    pub fn bench_args(&self) -> zproxy_bench::Args {
        let mut argv = vec![
            "zproxy-world".to_string(),
            "--host".into(),
            self.target.ip().to_string(),
            "--port".into(),
            self.target.port().to_string(),
            "--duration".into(),
            format!("{}ms", self.duration.as_millis()),
            "--warmup".into(),
            format!("{}ms", self.warmup.as_millis()),
            "--concurrency".into(),
            self.concurrency.to_string(),
            "--keep-alive".into(),
            self.keep_alive.to_string(),
            "--body-size".into(),
            self.request_size.to_string(),
            "--expect-size".into(),
            self.response_size.to_string(),
            "--timeout".into(),
            format!("{}ms", self.timeout.as_millis()),
        ];
        if let Some(r) = self.rate {
            argv.extend(["--rate".into(), r.to_string()]);
        }
        if let Some(l) = &self.label {
            argv.extend(["--label".into(), l.clone()]);
        }
        use clap::Parser as _;
        zproxy_bench::Args::try_parse_from(argv)
            .expect("the world's arguments are valid bench arguments")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<WorldArgs, clap::Error> {
        let mut argv = vec![
            "zproxy-world",
            "--client-vdev",
            "net_memif0",
            "--client-addr",
            "10.81.0.1/24",
            "--origin-vdev",
            "net_memif1",
            "--origin-addr",
            "10.82.0.1/24",
            "--target",
            "10.81.0.2:80",
        ];
        argv.extend(extra);
        WorldArgs::try_parse_from(argv)
    }

    #[test]
    fn parses_and_maps_to_bench_args() {
        let a = args(&[
            "--keep-alive",
            "on",
            "--response-size",
            "1048576",
            "--rate",
            "1000",
        ])
        .unwrap();
        assert_eq!(a.client_addr, (Ipv4Addr::new(10, 81, 0, 1), 24));
        a.validate().unwrap();
        let b = a.bench_args();
        assert_eq!(b.keep_alive, KeepAlive::On);
        assert_eq!(b.expect_size, Some(1 << 20));
        assert_eq!(b.rate, Some(1000.0));
        assert_eq!(b.port, 80);
    }

    #[test]
    fn refuses_bad_values_with_what_to_do() {
        assert!(args(&["--client-addr", "10.81.0.1"]).is_err());
        assert!(args(&["--client-addr", "10.81.0.1/40"]).is_err());
        let e = args(&["--concurrency", "10000"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains("give at least 20064"), "{e}");
        assert!(args(&["--rate", "0"]).unwrap().validate().is_err());
    }
}
