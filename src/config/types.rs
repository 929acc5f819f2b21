//! The config file's sections as serde reads them, with their defaults.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use serde::Deserialize;

use super::ratelimit::{ConnectionRateLimit, RateLimit, DEFAULT_RATE_LIMIT_ENTRIES};

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
    #[serde(default)]
    pub access_log: AccessLog,
    /// Announce a VIP through BIRD while healthy (`config::announce`).
    pub announce: Option<super::Announce>,
    /// The other instances on the segment (second-chance forwarding).
    pub fleet: Option<super::Fleet>,
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

/// One line per HTTP request and per `tcp` connection, written by a thread
/// of its own from per-worker rings (a full ring drops lines and counts them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    /// "" (off), "stdout", or a file (reopened on SIGUSR1, for logrotate).
    pub path: String,
    pub format: AccessLogFormat,
    /// Log 1 exchange in `sample` (1: all).
    pub sample: u32,
    /// Lines each worker's ring holds for the writer.
    pub ring_entries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    Text,
    Json,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            path: String::new(),
            format: AccessLogFormat::Text,
            sample: 1,
            ring_entries: 4096,
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
    /// Most TCP flows one worker holds at once.
    pub max_flows: u32,
    /// Share of `max_flows` in use past which new clients' SYNs are dropped
    /// (no RST, no state: their TCP sends them again).
    pub admit_flows_percent: u32,
    /// Milliseconds of rx backlog after which the worker is behind its
    /// queue and drops new SYNs until it catches up (0: never).
    pub admit_backlog_ms: u32,
    /// Half-open connections (SYN received, handshake not finished) a worker
    /// holds; beyond that, SYNs get SYN cookies and no state (0: always cookies).
    pub syn_backlog: u32,
    /// Bytes of receive / send buffer per TCP socket.
    pub socket_rx_buffer: u32,
    pub socket_tx_buffer: u32,
    /// An open connection quiet this long with nothing held in its buffers
    /// gives their pages back (see `net::stack::reclaim`).
    pub buffer_release_idle_ms: u32,
    /// Longest a partly filled TX burst waits before it is flushed.
    pub tx_drain_us: u32,
    /// Extra EAL arguments, appended as given (e.g. ["--log-level=pmd.net.af_xdp:debug"]).
    pub eal_args: Vec<String>,
    /// Rate-limit buckets per worker, for each of its two tables (requests,
    /// connections): fixed at start, 16 bytes each (see INSTALL.md).
    pub rate_limit_entries: u32,
    /// TLS handshake steps a worker runs per poll iteration (see `app::proxy::tls`).
    pub tls_handshakes_per_poll: u32,
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
            admit_flows_percent: super::admission::DEFAULT_ADMIT_FLOWS_PERCENT,
            admit_backlog_ms: super::admission::DEFAULT_ADMIT_BACKLOG_MS,
            socket_rx_buffer: 16384,
            socket_tx_buffer: 16384,
            buffer_release_idle_ms: 1000,
            tx_drain_us: 100,
            eal_args: Vec::new(),
            rate_limit_entries: DEFAULT_RATE_LIMIT_ENTRIES,
            tls_handshakes_per_poll: super::tls::DEFAULT_HANDSHAKES_PER_POLL,
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
    /// Our address on this link, "A.B.C.D/prefix" (or give `addresses`).
    #[serde(default)]
    pub address: String,
    /// More addresses, IPv4 and IPv6 with prefix ("2001:db8::2/64",
    /// "fe80::2/64"); exactly one IPv4 among them and `address` (`config::ipv6`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Next hop for destinations off the link.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 next hop (the router's link-local address, usually).
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Rx/tx queue pairs: one per worker (the default); if given, it must
    /// equal the number of workers.
    pub queues: Option<u16>,
    #[serde(default = "descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "descriptors")]
    pub tx_descriptors: u16,
    /// IP MTU; the device default when absent.
    pub mtu: Option<u16>,
    /// A kernel interface for the frames that are not ZProxy's (off when absent).
    pub exception: Option<super::exception::Exception>,
}

fn descriptors() -> u16 {
    1024
}

impl PortSection {
    /// The device name DPDK knows the port by.
    pub fn device(&self) -> &str {
        self.vdev.as_deref().or(self.pci.as_deref()).unwrap_or("")
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
    /// Open connections one client address may hold (0: no limit); more get
    /// a RST. Unset: a quarter of `max_flows`, so that no one address can
    /// take the flow table that every listener shares.
    pub max_connections_per_source: Option<u32>,
    /// Client networks allowed to connect ("A.B.C.D/len"); any when empty.
    /// Others get a RST and are counted (`refused_acl`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// An IPv6 client's per-source key: its address's first this many bits
    /// (64: a whole /64 is one source; unset: 128). Keys the per-source limit and
    /// the connection rate of IPv6 clients.
    pub per_source_prefix6: Option<u8>,
    /// For `http` mode: requests per client address, for requests whose
    /// route has no `rate_limit` of its own; over it: 429.
    pub rate_limit: Option<RateLimit>,
    /// New connections per client address, refused at the SYN (a RST).
    pub connection_rate_limit: Option<ConnectionRateLimit>,
    /// For `http` mode: header rules and limits (`config::headers`).
    #[serde(default)]
    pub request_headers: super::headers::HeaderRules,
    #[serde(default)]
    pub response_headers: super::headers::HeaderRules,
    /// Forward a client's own X-Request-Id instead of a generated one.
    #[serde(default)]
    pub trust_request_id: bool,
    /// More header lines than this (1..=64; unset: 64) get a 431.
    pub max_header_count: Option<u32>,
    /// A request head larger than this gets a 431 (unset: the socket buffer).
    pub max_header_bytes: Option<u32>,
    /// For `http` mode: protocols an `Upgrade` request may switch to
    /// (unset: ["websocket"]); a route's own list replaces it.
    pub upgrade: Option<Vec<String>>,
    /// For `http` mode: an upgraded connection (WebSocket) idle this long is closed.
    #[serde(default = "tunnel_idle_timeout_ms")]
    pub tunnel_idle_timeout_ms: u64,
    /// Connections from `trusted_proxies` must start with a PROXY protocol
    /// (v1 or v2) header naming the real client (see `proxy_protocol.rs`).
    #[serde(default)]
    pub accept_proxy_protocol: bool,
    /// Networks ("A.B.C.D/len" or "2001:db8::/len") whose PROXY headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// For `https` and `tls` modes: certificates and protocol settings.
    pub tls: Option<super::tls::TlsListener>,
}

fn tunnel_idle_timeout_ms() -> u64 {
    crate::app::proxy::upgrade::DEFAULT_TUNNEL_IDLE_MS
}

impl Listener {
    /// How the access log and /metrics name the listener: "PORT:TCP_PORT"
    /// (listeners have no name of their own).
    pub fn label(&self) -> String {
        format!("{}:{}", self.port, self.tcp_port)
    }
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
    /// Requests per client address on this route; over it: 429.
    pub rate_limit: Option<RateLimit>,
    /// Applied after the listener's (`config::headers`).
    #[serde(default)]
    pub request_headers: super::headers::HeaderRules,
    #[serde(default)]
    pub response_headers: super::headers::HeaderRules,
    /// Protocols an `Upgrade` request may switch to here (unset: the listener's).
    pub upgrade: Option<Vec<String>>,
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
    /// Send a PROXY protocol header ("v1" or "v2") naming the client before
    /// its first byte; such a group pools no connections.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// What `balance = "consistent_hash"` hashes (client address by default).
    #[serde(default)]
    pub hash_key: super::HashKey,
    /// Speak TLS to the servers (verified against `tls_ca`, else the webpki roots).
    #[serde(default)]
    pub tls: bool,
    pub tls_ca: Option<PathBuf>,
    /// The name sent (SNI) and verified; unset: the server's address.
    pub tls_sni: Option<String>,
    /// A client certificate chain and its key, for servers that ask.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    V1,
    V2,
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
    /// As written: "A.B.C.D:port", "[2001:db8::1]:port" or "host.name:port".
    #[serde(rename = "address")]
    pub given: String,
    /// `given`, resolved at load (`resolve.rs`; a name with several
    /// addresses becomes one server per address its port can reach).
    #[serde(skip, default = "unresolved")]
    pub address: SocketAddr,
    #[serde(default = "weight")]
    pub weight: u32,
    /// Takes traffic only while no primary (non-backup) server of its group
    /// is up, as HAProxy's `backup` and nginx's `backup` do.
    #[serde(default)]
    pub backup: bool,
}

fn unresolved() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
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
    /// Rendezvous hashing of `hash_key` over the servers' addresses: every
    /// instance of a fleet picks the same server for a key, and a server's
    /// loss moves only its own keys.
    ConsistentHash,
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
    /// TLS (`[listener.tls]`), then everything `http` does.
    Https,
    /// TLS (`[listener.tls]`), then the TCP relay of `tcp`.
    Tls,
}

impl ListenerMode {
    /// What the listener does once TLS is off: `http` or `tcp` for the
    /// TLS modes, else the mode itself.
    pub fn base(self) -> ListenerMode {
        match self {
            ListenerMode::Https => ListenerMode::Http,
            ListenerMode::Tls => ListenerMode::Tcp,
            m => m,
        }
    }
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
