//! The static config file (TOML): parsed and validated once, before any
//! device is touched. Unknown keys are errors; errors name the key and line.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(rename = "port")]
    pub ports: Vec<PortSection>,
    #[serde(rename = "listener", default)]
    pub listeners: Vec<Listener>,
    #[serde(rename = "upstream", default)]
    pub upstreams: Vec<UpstreamGroup>,
    #[serde(default)]
    pub management: Management,
    #[serde(default)]
    pub logging: Logging,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// error, warn, info, debug or trace; RUST_LOG overrides it. Nothing is
    /// logged per packet at any level.
    pub level: String,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: "info".into(),
        }
    }
}

/// The management endpoint: a kernel socket on the control thread, never on
/// the data path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Management {
    /// Where /metrics (Prometheus text) and /stats (JSON) are served; loopback
    /// unless you mean to expose them. Empty string: no endpoint.
    pub address: String,
    /// How long SIGTERM lets in-flight connections finish (ms).
    pub drain_timeout_ms: u64,
}

impl Default for Management {
    fn default() -> Self {
        Management {
            address: "127.0.0.1:9090".into(),
            drain_timeout_ms: 10_000,
        }
    }
}

/// How the worker cores are chosen when not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cores {
    Auto,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// The lcore that runs the control thread (never polls a queue).
    pub main_lcore: u32,
    /// `"auto"`: one worker on every CPU of the NIC's NUMA node except the
    /// control CPU (only the isolated ones, if any are), decided at start-up
    /// from sysfs. Instead of `worker_lcores` / `worker_cpus`.
    pub cores: Option<Cores>,
    /// Worker lcores: worker i polls queue i of every port.
    pub worker_lcores: Vec<u32>,
    /// CPUs the worker lcores run on (same order); each lcore on the CPU of
    /// its own number when absent. Lets more lcores than CPUs share cores
    /// (tests on small machines; not for production).
    pub worker_cpus: Option<Vec<u32>>,
    /// An idle worker sleeps this long after 1,000 empty polls (0: always
    /// busy-poll). Saves a core on an idle appliance; adds up to this much
    /// latency to the first frame after a quiet spell.
    pub idle_sleep_us: u32,
    /// hugetlbfs mount DPDK takes memory from.
    pub hugepage_dir: Option<PathBuf>,
    /// Run without hugepages (tests only: slower, not for production).
    pub no_huge: bool,
    /// Memory (MB) to take when `no_huge` is set.
    pub memory_mb: u32,
    /// Mbufs per pool (one pool per NUMA node in use).
    pub mbufs: u32,
    /// Per-lcore mbuf cache size.
    pub mbuf_cache: u32,
    /// Most TCP flows one worker holds at once; further SYNs are refused with a RST.
    pub max_flows: u32,
    /// Half-open connections (SYN received, handshake not finished) a worker
    /// holds; beyond that, SYNs get SYN cookies and no state (0: always cookies).
    pub syn_backlog: u32,
    /// Bytes of receive / send buffer per TCP socket.
    pub socket_rx_buffer: u32,
    pub socket_tx_buffer: u32,
    /// Longest a partly filled TX burst waits before it is flushed.
    pub tx_drain_us: u32,
    /// Extra EAL arguments, appended as given (e.g. ["--log-level=pmd.net.af_xdp:debug"]).
    pub eal_args: Vec<String>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            main_lcore: 0,
            cores: None,
            worker_lcores: vec![1],
            worker_cpus: None,
            idle_sleep_us: 0,
            hugepage_dir: None,
            no_huge: false,
            memory_mb: 512,
            mbufs: 16383,
            mbuf_cache: 256,
            syn_backlog: 1024,
            max_flows: 16384,
            socket_rx_buffer: 16384,
            socket_tx_buffer: 16384,
            tx_drain_us: 100,
            eal_args: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// Name other sections refer to (e.g. "client", "upstream").
    pub name: String,
    /// A DPDK virtual device string, e.g. "net_af_xdp0,iface=eth1".
    pub vdev: Option<String>,
    /// A PCI address of a NIC bound to vfio-pci, e.g. "0000:03:00.0".
    pub pci: Option<String>,
    /// Our address on this link, "A.B.C.D/prefix".
    pub address: String,
    /// Next hop for destinations off the link.
    pub gateway: Option<Ipv4Addr>,
    /// Rx/tx queue pairs: one per worker (the default); if given, it must
    /// equal the number of workers.
    pub queues: Option<u16>,
    #[serde(default = "descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "descriptors")]
    pub tx_descriptors: u16,
    /// IP MTU; the device default when absent.
    pub mtu: Option<u16>,
}

fn descriptors() -> u16 {
    1024
}

impl PortSection {
    /// The device name DPDK knows the port by.
    pub fn device(&self) -> &str {
        self.vdev.as_deref().or(self.pci.as_deref()).unwrap_or("")
    }

    /// Address and prefix length (validated at load).
    pub fn cidr(&self) -> (Ipv4Addr, u8) {
        parse_cidr(&self.address).expect("validated at load")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Which port's address to listen on.
    pub port: String,
    /// TCP port.
    pub tcp_port: u16,
    pub mode: ListenerMode,
    /// For `mode = "static"`: the fixed response.
    #[serde(rename = "static")]
    pub static_response: Option<StaticResponse>,
    /// Close connections idle this long (ms).
    #[serde(default = "idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// For `tcp` mode: the upstream group every connection goes to. For
    /// `http` mode: where requests that match no route go (optional).
    pub upstream: Option<String>,
    /// For `http` mode: routes by Host and path prefix, first match wins.
    #[serde(rename = "route", default)]
    pub routes: Vec<Route>,
    /// For `http` mode: a request head must arrive within this (slowloris).
    #[serde(default = "header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Open connections one client address may hold (0: no limit); more get a RST.
    #[serde(default)]
    pub max_connections_per_source: u32,
    /// Client networks allowed to connect ("A.B.C.D/len"); any when empty.
    /// Others get a RST and are counted (`refused_acl`).
    #[serde(default)]
    pub allow: Vec<String>,
}

fn idle_timeout_ms() -> u64 {
    60_000
}
fn header_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Host header to match (port ignored, case-insensitive); any when absent.
    pub host: Option<String>,
    /// Path prefix to match.
    #[serde(default = "slash")]
    pub path_prefix: String,
    pub upstream: String,
}

fn slash() -> String {
    "/".into()
}

/// A group of upstream servers and how to use them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamGroup {
    pub name: String,
    /// The [[port]] whose address connections come from.
    pub port: String,
    pub servers: Vec<Server>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default = "connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for the upstream's response (and between its reads).
    #[serde(default = "read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Idle upstream connections kept open per worker for reuse (0: none).
    #[serde(default = "keepalive")]
    pub keepalive: u32,
    /// Local TCP ports for upstream connections, inclusive.
    #[serde(default = "local_ports")]
    pub local_ports: [u16; 2],
    /// Active health checks (none when absent: connect failures still mark
    /// a server down for a while).
    pub health_check: Option<HealthCheckConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default)]
    pub kind: HealthKind,
    /// For `kind = "http"`: what to GET and the status that means healthy.
    #[serde(default = "slash")]
    pub path: String,
    #[serde(default = "ok_status")]
    pub expect_status: u16,
    #[serde(default = "health_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "health_timeout_ms")]
    pub timeout_ms: u64,
    /// Failed probes in a row that take a server out.
    #[serde(default = "two")]
    pub fall: u32,
    /// Good probes in a row that bring it back.
    #[serde(default = "two")]
    pub rise: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// The connect must succeed.
    #[default]
    Tcp,
    /// A GET of `path` must answer `expect_status`.
    Http,
}

fn health_interval_ms() -> u64 {
    2_000
}
fn health_timeout_ms() -> u64 {
    1_000
}
fn two() -> u32 {
    2
}

/// Longer than a SYN's first retransmission (1 s), so that one lost SYN or
/// SYN-ACK does not count as a failed connect (two mark the server down).
fn connect_timeout_ms() -> u64 {
    3_000
}
fn read_timeout_ms() -> u64 {
    30_000
}
fn keepalive() -> u32 {
    256
}
fn local_ports() -> [u16; 2] {
    [20_000, 60_999]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// "A.B.C.D:port"
    pub address: SocketAddrV4,
    #[serde(default = "weight")]
    pub weight: u32,
}

fn weight() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Weighted round robin (smooth, as nginx does).
    #[default]
    RoundRobin,
    /// Fewest active connections per unit of weight.
    LeastConn,
    /// Hash of the client's IP address: a client keeps its server.
    SourceHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Answer every request with a fixed HTTP response (health endpoints, tests).
    Static,
    /// Relay bytes to an upstream server (L4).
    Tcp,
    /// Parse HTTP/1.1 requests, route them, and proxy them to upstreams.
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResponse {
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default = "text_plain")]
    pub content_type: String,
}

fn ok_status() -> u16 {
    200
}
fn text_plain() -> String {
    "text/plain".into()
}

/// Longest duration any `*_ms` key takes (30 days).
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;

/// A config problem, with the file, the line where known, and what to do.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!("{}: cannot read config file: {e}", path.display()))
        })?;
        Self::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_on(text, Path::new("/sys"))
    }

    /// As `parse`, with the machine's topology (for `cores = "auto"`) read
    /// under `sysfs` (normally `/sys`).
    pub fn parse_on(text: &str, sysfs: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!("line {}: ", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            ConfigError(format!("{line}{}", e.message()))
        })?;
        if cfg.runtime.cores == Some(Cores::Auto) {
            cfg.choose_worker_cores(text, sysfs)?;
        }
        cfg.validate(text)?;
        Ok(cfg)
    }

    /// `cores = "auto"`: fills in worker_lcores (lcore i on CPU i) from the topology.
    fn choose_worker_cores(&mut self, text: &str, sysfs: &Path) -> Result<(), ConfigError> {
        use crate::topology::{auto_worker_cpus, pci_node, Topology};
        let raw: toml::Table = text.parse().map_err(|e| ConfigError(format!("{e}")))?;
        let runtime = raw.get("runtime").and_then(|r| r.as_table());
        for key in ["worker_lcores", "worker_cpus"] {
            if runtime.is_some_and(|r| r.contains_key(key)) {
                return Err(ConfigError(format!(
                    "runtime: cores = \"auto\" chooses the workers itself: remove {key}, or remove cores to list them"
                )));
            }
        }
        let topo = Topology::read(sysfs);
        let port_nodes: Vec<Option<u32>> = self
            .ports
            .iter()
            .map(|p| p.pci.as_deref().and_then(|a| pci_node(sysfs, a)))
            .collect();
        let queues = self.ports.iter().filter_map(|p| p.queues).min();
        let cpus = auto_worker_cpus(&topo, self.runtime.main_lcore, &port_nodes, queues)
            .map_err(|e| ConfigError(format!("runtime: {e}")))?;
        self.runtime.worker_lcores = cpus;
        self.runtime.worker_cpus = None;
        Ok(())
    }

    /// Cross-checks that serde cannot express.
    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let at = |needle: &str| -> String {
            text.lines()
                .position(|l| l.contains(needle))
                .map(|n| format!("line {}: ", n + 1))
                .unwrap_or_default()
        };
        let rt = &self.runtime;
        if rt.worker_lcores.is_empty() {
            return Err(ConfigError(format!(
                "{}runtime.worker_lcores is empty: list at least one core, e.g. [1]",
                at("worker_lcores")
            )));
        }
        let mut sorted = rt.worker_lcores.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != rt.worker_lcores.len() {
            return Err(ConfigError(format!(
                "{}runtime.worker_lcores lists a core twice",
                at("worker_lcores")
            )));
        }
        if rt
            .worker_cpus
            .as_ref()
            .is_some_and(|c| c.len() != rt.worker_lcores.len())
        {
            return Err(ConfigError(format!(
                "{}runtime.worker_cpus must name one CPU per worker lcore ({} of them)",
                at("worker_cpus"),
                rt.worker_lcores.len()
            )));
        }
        if rt.worker_lcores.contains(&rt.main_lcore) {
            return Err(ConfigError(format!(
                "{}runtime.worker_lcores contains the main lcore {}: the control thread needs its own core",
                at("worker_lcores"),
                rt.main_lcore
            )));
        }
        if !(2..=4_000_000).contains(&rt.max_flows) {
            return Err(ConfigError(format!(
                "{}runtime.max_flows must be 2..=4000000 (a proxied connection takes two: client and upstream)",
                at("max_flows")
            )));
        }
        for (key, v) in [
            ("socket_rx_buffer", rt.socket_rx_buffer),
            ("socket_tx_buffer", rt.socket_tx_buffer),
        ] {
            if !(536..=16 << 20).contains(&v) {
                return Err(ConfigError(format!(
                    "{}runtime.{key} = {v}: must be 536..=16777216 bytes",
                    at(key)
                )));
            }
        }
        // In u64: descriptors of many ports times many workers overflow u32.
        let min_mbufs = self
            .ports
            .iter()
            .map(|p| u64::from(p.rx_descriptors) + u64::from(p.tx_descriptors))
            .sum::<u64>()
            * rt.worker_lcores.len() as u64
            * 2;
        if u64::from(rt.mbufs) < min_mbufs {
            return Err(ConfigError(format!(
                "{}runtime.mbufs = {}: too small for the ports' descriptor rings; use at least {min_mbufs}",
                at("mbufs"),
                rt.mbufs
            )));
        }
        if self.ports.is_empty() {
            return Err(ConfigError(
                "no [[port]] section: configure at least one port".into(),
            ));
        }
        for (i, p) in self.ports.iter().enumerate() {
            let where_ = at(&format!("\"{}\"", p.name));
            match (&p.vdev, &p.pci) {
                (Some(_), Some(_)) => return Err(ConfigError(format!("{where_}port '{}': give either vdev or pci, not both", p.name))),
                (None, None) => return Err(ConfigError(format!("{where_}port '{}': give vdev (e.g. \"net_af_xdp0,iface=eth1\") or pci (e.g. \"0000:03:00.0\")", p.name))),
                _ => {}
            }
            if parse_cidr(&p.address).is_none() {
                return Err(ConfigError(format!(
                    "{}port '{}': address = \"{}\" is not A.B.C.D/prefix (e.g. \"10.0.0.2/24\")",
                    at(&p.address),
                    p.name,
                    p.address
                )));
            }
            if p.queues
                .is_some_and(|q| usize::from(q) != rt.worker_lcores.len())
            {
                return Err(ConfigError(format!(
                    "{where_}port '{}': queues = {}: each of the {} workers polls one queue of every port, so queues must be {}",
                    p.name,
                    p.queues.unwrap_or(0),
                    rt.worker_lcores.len(),
                    rt.worker_lcores.len()
                )));
            }
            if self.ports[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError(format!(
                    "{where_}port name '{}' is used twice",
                    p.name
                )));
            }
        }
        for l in &self.listeners {
            if !self.ports.iter().any(|p| p.name == l.port) {
                let names: Vec<_> = self.ports.iter().map(|p| p.name.as_str()).collect();
                return Err(ConfigError(format!(
                    "{}listener on tcp_port {}: port = \"{}\" names no [[port]] (have: {})",
                    at(&format!("\"{}\"", l.port)),
                    l.tcp_port,
                    l.port,
                    names.join(", ")
                )));
            }
            let lat = at(&format!("tcp_port = {}", l.tcp_port));
            match l.mode {
                ListenerMode::Static if l.static_response.is_none() => {
                    return Err(ConfigError(format!(
                        "{lat}listener on tcp_port {}: mode = \"static\" needs a [listener.static] table",
                        l.tcp_port
                    )));
                }
                ListenerMode::Tcp if l.upstream.is_none() => {
                    return Err(ConfigError(format!(
                        "{lat}listener on tcp_port {}: mode = \"tcp\" needs upstream = \"<group name>\"",
                        l.tcp_port
                    )));
                }
                ListenerMode::Http if l.upstream.is_none() && l.routes.is_empty() => {
                    return Err(ConfigError(format!(
                        "{lat}listener on tcp_port {}: mode = \"http\" needs [[listener.route]] tables or upstream = \"<group name>\"",
                        l.tcp_port
                    )));
                }
                _ => {}
            }
            let named = l
                .upstream
                .iter()
                .chain(l.routes.iter().map(|r| &r.upstream));
            for group in named {
                if !self.upstreams.iter().any(|u| &u.name == group) {
                    let names: Vec<_> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
                    return Err(ConfigError(format!(
                        "{}listener on tcp_port {}: upstream \"{group}\" names no [[upstream]] group (have: {})",
                        at(&format!("\"{group}\"")),
                        l.tcp_port,
                        names.join(", ")
                    )));
                }
            }
            if let Some(bad) = l.allow.iter().find(|a| parse_cidr(a).is_none()) {
                return Err(ConfigError(format!(
                    "{}listener on tcp_port {}: allow entry \"{bad}\" is not A.B.C.D/prefix (e.g. \"10.0.0.0/8\")",
                    at(bad),
                    l.tcp_port
                )));
            }
            if let Some(r) = l.routes.iter().find(|r| !r.path_prefix.starts_with('/')) {
                return Err(ConfigError(format!(
                    "{}route path_prefix = \"{}\" must start with '/'",
                    at(&r.path_prefix),
                    r.path_prefix
                )));
            }
            if self
                .listeners
                .iter()
                .filter(|o| o.port == l.port && o.tcp_port == l.tcp_port)
                .count()
                > 1
            {
                return Err(ConfigError(format!(
                    "{lat}two listeners on port '{}' tcp_port {}",
                    l.port, l.tcp_port
                )));
            }
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.logging.level.as_str()) {
            return Err(ConfigError(format!(
                "{}logging.level = \"{}\": use error, warn, info, debug or trace",
                at("level"),
                self.logging.level
            )));
        }
        if !self.management.address.is_empty()
            && self
                .management
                .address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(ConfigError(format!(
                "{}management.address = \"{}\" is not IP:port (e.g. \"127.0.0.1:9090\"; \"\" turns it off)",
                at(&self.management.address),
                self.management.address
            )));
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            let uat = at(&format!("\"{}\"", u.name));
            if self.upstreams[..i].iter().any(|o| o.name == u.name) {
                return Err(ConfigError(format!(
                    "{uat}upstream group name '{}' is used twice",
                    u.name
                )));
            }
            let Some(port) = self.ports.iter().find(|p| p.name == u.port) else {
                return Err(ConfigError(format!(
                    "{}upstream '{}': port = \"{}\" names no [[port]]",
                    at(&format!("\"{}\"", u.port)),
                    u.name,
                    u.port
                )));
            };
            if u.servers.is_empty() {
                return Err(ConfigError(format!(
                    "{uat}upstream '{}': servers is empty",
                    u.name
                )));
            }
            let (addr, len) = port.cidr();
            for s in &u.servers {
                if s.weight == 0 || s.weight > 1000 {
                    return Err(ConfigError(format!(
                        "{}upstream '{}': server {} weight must be 1..=1000",
                        at(&s.address.to_string()),
                        u.name,
                        s.address
                    )));
                }
                let on_link = in_network(*s.address.ip(), addr, len);
                if !on_link && port.gateway.is_none() {
                    return Err(ConfigError(format!(
                        "{}upstream '{}': server {} is not on port '{}' ({}) and that port has no gateway",
                        at(&s.address.to_string()),
                        u.name,
                        s.address,
                        port.name,
                        port.address
                    )));
                }
            }
            let [lo, hi] = u.local_ports;
            if lo == 0 || lo > hi {
                return Err(ConfigError(format!(
                    "{}upstream '{}': local_ports = [{lo}, {hi}] must be an ascending range of non-zero ports",
                    at("local_ports"),
                    u.name
                )));
            }
            if self
                .listeners
                .iter()
                .any(|l| l.port == u.port && (lo..=hi).contains(&l.tcp_port))
            {
                return Err(ConfigError(format!(
                    "{}upstream '{}': local_ports [{lo}, {hi}] overlap a listener on port '{}'",
                    at("local_ports"),
                    u.name,
                    u.port
                )));
            }
            if let Some(h) = &u.health_check {
                if h.interval_ms < 100
                    || h.timeout_ms == 0
                    || h.timeout_ms > h.interval_ms
                    || h.fall == 0
                    || h.rise == 0
                {
                    return Err(ConfigError(format!(
                        "{}upstream '{}': health_check needs interval_ms >= 100, 0 < timeout_ms <= interval_ms, fall and rise >= 1",
                        at("health_check"),
                        u.name
                    )));
                }
                if !h.path.starts_with('/') {
                    return Err(ConfigError(format!(
                        "{}upstream '{}': health_check path must start with '/'",
                        at(&h.path),
                        u.name
                    )));
                }
            }
            if u.connect_timeout_ms == 0 || u.read_timeout_ms == 0 {
                return Err(ConfigError(format!(
                    "{uat}upstream '{}': timeouts must be > 0 ms",
                    u.name
                )));
            }
        }
        self.validate_durations(&at)
    }

    /// Durations become microseconds (ms * 1000) and deadlines (now +
    /// duration) on the data path: bounded here so neither can overflow.
    fn validate_durations(&self, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let mut durations = vec![(
            "management.drain_timeout_ms".to_owned(),
            self.management.drain_timeout_ms,
        )];
        for l in &self.listeners {
            let on = format!("listener on tcp_port {}: ", l.tcp_port);
            durations.push((format!("{on}idle_timeout_ms"), l.idle_timeout_ms));
            durations.push((format!("{on}header_timeout_ms"), l.header_timeout_ms));
        }
        for u in &self.upstreams {
            let on = format!("upstream '{}': ", u.name);
            durations.push((format!("{on}connect_timeout_ms"), u.connect_timeout_ms));
            durations.push((format!("{on}read_timeout_ms"), u.read_timeout_ms));
            if let Some(h) = &u.health_check {
                durations.push((format!("{on}health_check interval_ms"), h.interval_ms));
                durations.push((format!("{on}health_check timeout_ms"), h.timeout_ms));
            }
        }
        match durations.iter().find(|(_, ms)| *ms > MAX_DURATION_MS) {
            Some((key, ms)) => Err(ConfigError(format!(
                "{}{key} = {ms}: at most {MAX_DURATION_MS} ms (30 days)",
                at(&ms.to_string())
            ))),
            None => Ok(()),
        }
    }

    /// EAL arguments for this config; `file_prefix` keeps instances apart.
    pub fn eal_args(&self, file_prefix: &str) -> Vec<String> {
        let rt = &self.runtime;
        // lcore@cpu for every lcore: lcore ids need not be CPU numbers.
        let cpus = rt
            .worker_cpus
            .clone()
            .unwrap_or_else(|| rt.worker_lcores.clone());
        let mut lcores = vec![format!("{}@{}", rt.main_lcore, rt.main_lcore)];
        lcores.extend(
            rt.worker_lcores
                .iter()
                .zip(&cpus)
                .map(|(l, c)| format!("{l}@{c}")),
        );
        let mut args = vec![
            "zproxy".to_owned(),
            "--lcores".into(),
            lcores.join(","),
            "--main-lcore".into(),
            rt.main_lcore.to_string(),
            "--file-prefix".into(),
            file_prefix.into(),
            // Its socket would outlive us in the runtime dir; stats are served by zproxy.
            "--no-telemetry".into(),
        ];
        if rt.no_huge {
            // Anonymous memory: no files to leave behind (and --in-memory would clash).
            args.extend([
                "--no-huge".into(),
                "--no-shconf".into(),
                "-m".into(),
                rt.memory_mb.to_string(),
            ]);
        } else {
            // No shared files: nothing is left in the huge dir or /var/run/dpdk.
            args.push("--in-memory".into());
            if let Some(dir) = &rt.hugepage_dir {
                args.extend(["--huge-dir".into(), dir.display().to_string()]);
            }
        }
        if self.ports.iter().all(|p| p.pci.is_none()) {
            args.push("--no-pci".into());
        }
        for p in &self.ports {
            match (&p.vdev, &p.pci) {
                (Some(v), _) => args.extend(["--vdev".into(), v.clone()]),
                (_, Some(pci)) => args.extend(["-a".into(), pci.clone()]),
                _ => {}
            }
        }
        args.extend(rt.eal_args.iter().cloned());
        args
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[runtime]
worker_lcores = [1]

[[port]]
name = "client"
vdev = "net_af_xdp0,iface=cli1"
address = "10.71.0.2/24"
gateway = "10.71.0.1"

[[listener]]
port = "client"
tcp_port = 80
mode = "static"
[listener.static]
body = "hi\n"
"#;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().0
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.ports[0].cidr(), (Ipv4Addr::new(10, 71, 0, 2), 24));
        assert_eq!(c.listeners[0].static_response.as_ref().unwrap().status, 200);
        let args = c.eal_args("zp1");
        assert!(args.contains(&"--no-pci".to_owned()));
        assert!(args
            .windows(2)
            .any(|w| w == ["--vdev", "net_af_xdp0,iface=cli1"]));
        assert!(args.windows(2).any(|w| w == ["--lcores", "0@0,1@1"]));
    }

    #[test]
    fn several_workers_map_lcores_and_queues() {
        let two = GOOD
            .replace(
                "worker_lcores = [1]",
                "worker_lcores = [1, 2]\nworker_cpus = [1, 0]",
            )
            .replace("[runtime]", "[runtime]\nmbufs = 32767");
        let c = Config::parse(&two).unwrap();
        let args = c.eal_args("p");
        assert!(
            args.windows(2).any(|w| w == ["--lcores", "0@0,1@1,2@0"]),
            "{args:?}"
        );
        let bad: &[(&str, &str)] = &[
            (&two.replace("worker_cpus = [1, 0]", "worker_cpus = [1]"), "worker_cpus must name one CPU per worker lcore (2 of them)"),
            (&two.replace("worker_lcores = [1, 2]", "worker_lcores = [1, 1]"), "worker_lcores lists a core twice"),
            (&two.replace("gateway = ", "queues = 1\ngateway = "), "queues = 1: each of the 2 workers polls one queue of every port, so queues must be 2"),
            (&two.replace("mbufs = 32767", "mbufs = 8000"), "use at least 8192"),
        ];
        for (text, want) in bad {
            let got = err(text);
            assert!(got.contains(want), "want {want:?} in {got:?}");
        }
    }

    #[test]
    fn cores_auto_takes_the_topology() {
        let root = std::env::temp_dir().join(format!("zproxy-cfg-auto-{}", std::process::id()));
        for (node, cpus) in [(0, "0-3"), (1, "4-7")] {
            let d = root.join(format!("devices/system/node/node{node}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cpulist"), cpus).unwrap();
        }
        let d = root.join("bus/pci/devices/0000:81:00.0");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("numa_node"), "1\n").unwrap();
        let auto = GOOD
            .replace("worker_lcores = [1]", "cores = \"auto\"\nmbufs = 65535")
            .replace(
                "vdev = \"net_af_xdp0,iface=cli1\"",
                "pci = \"0000:81:00.0\"",
            );
        let c = Config::parse_on(&auto, &root).unwrap();
        assert_eq!(c.runtime.worker_lcores, [4, 5, 6, 7]);
        assert!(c
            .eal_args("p")
            .windows(2)
            .any(|w| w == ["--lcores", "0@0,4@4,5@5,6@6,7@7"]));
        let two = auto.replace("gateway = ", "queues = 2\ngateway = ");
        assert_eq!(
            Config::parse_on(&two, &root).unwrap().runtime.worker_lcores,
            [4, 5]
        );
        let bad: &[(&str, &str)] = &[
            (
                &auto.replace("cores = \"auto\"", "cores = \"auto\"\nworker_lcores = [1]"),
                "remove worker_lcores",
            ),
            (&auto.replace("\"auto\"", "\"all\""), "expected `auto`"),
            (
                &auto.replace("gateway = ", "queues = 8\ngateway = "),
                "the ports have 8 queues",
            ),
        ];
        for (text, want) in bad {
            let got = Config::parse_on(text, &root).unwrap_err().0;
            assert!(got.contains(want), "want {want:?} in {got:?}");
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    /// Found writing fuzz/ (config; the input is larger than the fuzzer's
    /// 4 KiB): enough ports times workers overflowed the u32 mbufs floor (a
    /// panic in debug builds, a wrapped floor that let too few mbufs through
    /// in release ones).
    #[test]
    fn mbufs_floor_does_not_overflow() {
        let lcores: Vec<String> = (1..=16385).map(|i| i.to_string()).collect();
        let text = GOOD
            .replace(
                "worker_lcores = [1]",
                &format!("worker_lcores = [{}]", lcores.join(", ")),
            )
            .replace(
                "address = \"10.71.0.2/24\"",
                "address = \"10.71.0.2/24\"\nrx_descriptors = 65535\ntx_descriptors = 65535",
            );
        let got = err(&text);
        assert!(got.contains("use at least 4295163900"), "{got}");
    }

    #[test]
    fn shipped_configs_are_valid() {
        for (name, text) in [
            ("configs/lab.toml", include_str!("../configs/lab.toml")),
            (
                "configs/zproxy.toml",
                include_str!("../configs/zproxy.toml"),
            ),
        ] {
            if let Err(e) = Config::parse(text) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn bad_configs_name_key_and_line() {
        let cases: &[(&str, &str)] = &[
            (
                &GOOD.replace("tcp_port = 80", "tcp_port = 80\nbogus = 1"),
                "line 14: unknown field `bogus`",
            ),
            (
                &GOOD.replace("10.71.0.2/24", "10.71.0.2"),
                "line 8: port 'client': address = \"10.71.0.2\" is not A.B.C.D/prefix",
            ),
            (
                &GOOD.replace("port = \"client\"", "port = \"nope\""),
                "names no [[port]] (have: client)",
            ),
            (
                &GOOD.replace("worker_lcores = [1]", "worker_lcores = [0]"),
                "line 3: runtime.worker_lcores contains the main lcore 0",
            ),
            (
                &GOOD.replace("[runtime]", "[runtime]\nmax_flows = 1"),
                "runtime.max_flows must be 2..=4000000",
            ),
            (
                &GOOD.replace("mode = \"static\"", "mode = \"udp\""),
                "line 14: unknown variant `udp`",
            ),
            (
                &GOOD.replace("vdev = ", "pci = \"0000:01:00.0\"\nvdev = "),
                "give either vdev or pci, not both",
            ),
            (
                &GOOD.replace("tcp_port = 80", "tcp_port = 99999"),
                "line 13:",
            ),
        ];
        // A proxy config and its cross-checks.
        let proxy = GOOD.replace("mode = \"static\"\n[listener.static]\nbody = \"hi\\n\"", "mode = \"http\"\nupstream = \"web\"")
            + "\n[[upstream]]\nname = \"web\"\nport = \"client\"\nservers = [{ address = \"10.71.0.9:80\" }]\n";
        Config::parse(&proxy).expect("the proxy variant is valid");
        let proxy_cases: &[(&str, &str)] = &[
            (&proxy.replace("upstream = \"web\"", "upstream = \"nope\""), "line 15: listener on tcp_port 80: upstream \"nope\" names no [[upstream]] group (have: web)"),
            (&proxy.replace("mode = \"http\"\nupstream = \"web\"", "mode = \"tcp\""), "mode = \"tcp\" needs upstream"),
            (&proxy.replace("port = \"client\"\nservers", "port = \"nic9\"\nservers"), "upstream 'web': port = \"nic9\" names no [[port]]"),
            (&proxy.replace("10.71.0.9:80", "192.0.2.1:80").replace("gateway = \"10.71.0.1\"\n", ""), "server 192.0.2.1:80 is not on port 'client' (10.71.0.2/24) and that port has no gateway"),
            (&proxy.replace("10.71.0.9:80\" }", "10.71.0.9:80\", weight = 0 }"), "weight must be 1..=1000"),
            (&proxy.replace("10.71.0.9:80\" }]", "10.71.0.9:80\" }]\nlocal_ports = [70, 90]"), "local_ports [70, 90] overlap a listener on port 'client'"),
            (&proxy.replace("10.71.0.9:80\" }]", "10.71.0.9:80\" }]\nlocal_ports = [9000, 100]"), "must be an ascending range"),
            (&(proxy.clone() + "[management]\naddress = \"localhost\"\n"), "management.address = \"localhost\" is not IP:port"),
            (&proxy.replace("upstream = \"web\"\n", "upstream = \"web\"\nallow = [\"10.0.0.0\"]\n"), "allow entry \"10.0.0.0\" is not A.B.C.D/prefix"),
            (&(proxy.clone() + "[logging]\nlevel = \"loud\"\n"), "logging.level = \"loud\": use error, warn, info, debug or trace"),
            (&(proxy.clone() + "[[listener]]\nport = \"client\"\ntcp_port = 80\nmode = \"tcp\"\nupstream = \"web\"\n"), "two listeners on port 'client' tcp_port 80"),
            (&proxy.replace("servers = [{ address = \"10.71.0.9:80\" }]", "servers = [{ address = \"10.71.0.9\" }]"), "line 20: invalid IPv4 socket address syntax"),
            // Found by fuzz/ (config): accepted, then `ms * 1000` overflowed in plan.
            (&proxy.replace("upstream = \"web\"\n", "upstream = \"web\"\nidle_timeout_ms = 9223372036854775807\n"), "line 16: listener on tcp_port 80: idle_timeout_ms = 9223372036854775807: at most 2592000000 ms (30 days)"),
            (&proxy.replace("10.71.0.9:80\" }]", "10.71.0.9:80\" }]\nread_timeout_ms = 18446744073709552"), "upstream 'web': read_timeout_ms = 18446744073709552: at most"),
            (&(proxy.clone() + "[management]\ndrain_timeout_ms = 2592000001\n"), "management.drain_timeout_ms = 2592000001: at most"),
        ];
        for (text, want) in cases.iter().chain(proxy_cases) {
            let got = err(text);
            assert!(got.contains(want), "want {want:?} in {got:?}");
        }
    }
}
