//! A real `Worker` on real DPDK, without a NIC: EAL with `--no-huge` and two
//! `net_ring` ports (what the worker sends on a ring port comes back on its
//! rx queue, where the harness reads it instead of the worker). Port 0 is
//! the client side (10.71.0.2/24, gateway 10.71.0.1), port 1 the upstream
//! side (10.72.0.2/24), as in the netns lab. The worker proxies HTTP on :80
//! (routes by Host and path to two groups), TCP on :81, and answers
//! statically on :8080 and on :8081 (allow-list and per-source limit).
//!
//! The harness plays every other host: clients, the gateway and the
//! upstream servers, answering ARP. For each input it opens connections
//! with valid handshakes (one per listener, and the TCP proxy's upstream
//! connection), runs the input's operations (`ops.rs`), then lets a minute
//! pass and checks that the worker is back to nothing: no open flow, every
//! mbuf back in its pool. Every frame the worker sends is checked on the way
//! (`wire::check_sent`).
//!
//! EAL can be initialised once per process and `Worker::new` keeps its
//! socket buffer arena for the life of the process, so one worker serves
//! every input; the minute between inputs is what makes them independent.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use zproxy::app::proxy::balance::{Balancer, ServerState};
use zproxy::app::proxy::engine::GroupSpec;
use zproxy::app::proxy::session::Routes;
use zproxy::app::proxy::tls::config::server_config_from_pem;
use zproxy::app::proxy::tls::ServerTls;
use zproxy::app::responder::Responder;
use zproxy::app::worker::{ListenerApp, ListenerSpec, Worker, WorkerSpec};
use zproxy::config::{Balance, StaticResponse};
use zproxy::dpdk::{Eal, MbufBurst, Mempool, Port, PortConfig, QueueId};
use zproxy::net::counters::SharedCounters;
use zproxy::net::handoff::handoff_inboxes;
use zproxy::net::link::PortSpec;
use zproxy::secrets::Secrets;

use crate::ops::{self, Op, ACK, FIN, RST, SYN};
use crate::wire::{self, mac_of, Mac, Segment, Sent};

pub const CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 2);
pub const UPSTREAM_SIDE: Ipv4Addr = Ipv4Addr::new(10, 72, 0, 2);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 1);
/// The client port's IPv6 addresses and gateway (NDP, DAD and echo).
pub const FUZZ_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, 2);
pub const FUZZ_V6_LL: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
pub const FUZZ_V6_GW: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Upstream servers: group "web" has the first two, group "api" the third.
pub const SERVERS: [SocketAddrV4; 3] = [
    SocketAddrV4::new(Ipv4Addr::new(10, 72, 0, 1), 80),
    SocketAddrV4::new(Ipv4Addr::new(10, 72, 0, 3), 80),
    SocketAddrV4::new(Ipv4Addr::new(10, 72, 0, 5), 8000),
];
/// Clients a `Connect` picks from: on-link ones inside and outside the
/// :8081 allow-list, and off-link ones behind the gateway.
pub const CLIENTS: [Ipv4Addr; 7] = [
    Ipv4Addr::new(10, 71, 0, 1),
    Ipv4Addr::new(10, 71, 0, 11),
    Ipv4Addr::new(10, 71, 0, 12),
    Ipv4Addr::new(10, 71, 0, 13),
    Ipv4Addr::new(10, 71, 0, 200),
    Ipv4Addr::new(198, 51, 100, 7),
    Ipv4Addr::new(203, 0, 113, 9),
];
/// The HTTPS listener (not in `ops::LISTENER_PORTS`: `run_tls` connects to it).
pub const TLS_PORT: u16 = 443;
const IP_MTU: usize = 1500;
const MAX_FLOWS: usize = 16;
/// Time between inputs: past every idle timeout, TIME-WAIT (10 s), a
/// server's down time (5 s) and the upstream pool's idle limit (30 s).
const QUIET_US: u64 = 60_000_000;
/// Each injected frame moves the clock on by this much.
const FRAME_US: u64 = 10;
/// Linux's SYN options: MSS 1460, SACK permitted, timestamps, window scale 7.
const SYN_OPTIONS: [u8; 20] = [
    2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0x10, 0, 0, 0, 0, 0, 1, 3, 3, 7,
];
/// An upstream server's SYN-ACK options (nginx on Linux, no timestamps).
const SYNACK_OPTIONS: [u8; 12] = [2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7];

/// The other end of one connection, as the harness plays it.
#[derive(Debug, Clone)]
struct Peer {
    /// The worker's port it is on (0 clients, 1 upstreams).
    port: usize,
    addr: (Ipv4Addr, u16),
    mac: Mac,
    local_port: u16,
    /// Next sequence number this peer sends.
    my_nxt: u32,
    /// Next sequence number expected from the worker (once it sent its SYN).
    their_nxt: Option<u32>,
    /// Send the handshake's final ACK when the SYN-ACK comes.
    complete: bool,
    upstream: bool,
    reset: bool,
}

pub struct Harness {
    _ports: Vec<Port>,
    rx: Vec<zproxy::dpdk::PortQueue>,
    macs: [Mac; 2],
    pool: Arc<Mempool>,
    worker: Worker,
    now_us: u64,
    peers: Vec<Peer>,
    mode: u8,
    trace: bool,
    /// Inputs run so far (ISNs differ per input).
    runs: u32,
}

fn eal() -> Eal {
    let prefix = format!("zpfuzz-{}", std::process::id());
    let args = [
        "zproxy-fuzz",
        "-l",
        "0",
        "--no-huge",
        "--no-shconf",
        "--no-telemetry",
        "-m",
        "128",
        "--no-pci",
        "--file-prefix",
        &prefix,
        "--vdev",
        "net_ring0",
        "--vdev",
        "net_ring1",
        "--log-level",
        "lib.eal:error",
        "--log-level",
        "pmd.net.ring:error",
    ];
    let eal = Eal::init(&args).expect("EAL with --no-huge and two net_ring vdevs (run as root)");
    // --no-shconf leaves the runtime directory empty; it is not needed.
    let _ = std::fs::remove_dir(format!("/var/run/dpdk/{prefix}"));
    eal
}

fn static_app(body: &str) -> ListenerApp {
    ListenerApp::Static(Arc::new(Responder::new(&StaticResponse {
        status: 200,
        body: body.into(),
        content_type: "text/plain".into(),
    })))
}

impl Harness {
    pub fn new() -> Harness {
        // The EAL lives as long as the process (it can be initialised once).
        let eal: &'static Eal = Box::leak(Box::new(eal()));
        let pool = Arc::new(Mempool::new(eal, "fuzz_pool", 2047, 0, 2176, -1).expect("mbuf pool"));
        let cfg = PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: 512,
            tx_descriptors: 512,
            mtu: None,
            rss_key: zproxy::net::rss::RSS_KEY,
        };
        let ports: Vec<Port> = ["net_ring0", "net_ring1"]
            .iter()
            .map(|d| Port::start(eal, d, &cfg, &[&*pool]).expect("start a net_ring port"))
            .collect();
        let macs = [ports[0].mac(), ports[1].mac()];
        let port_spec = |i: usize, address: (Ipv4Addr, u8), gateway| PortSpec {
            queue: ports[i].queue(QueueId(0)),
            mac: macs[i],
            address,
            gateway,
            ip_mtu: IP_MTU,
            rx_checksum_offload: false,
            reta_size: 128,
            exception: None,
            ipv6: (i == 0).then(|| zproxy::net::ipv6::Ipv6Spec {
                addresses: vec![(FUZZ_V6, 64), (FUZZ_V6_LL, 64)],
                gateway: Some(FUZZ_V6_GW),
            }),
            fleet: None,
        };
        let listener = |tcp_port, app| ListenerSpec {
            port_index: 0,
            tcp_port,
            app,
            idle_timeout_us: 10_000_000,
            allow: Vec::new(),
            allow6: Default::default(),
            prefix6: 128,
            header_timeout_us: 2_000_000,
            max_per_source: 0,
            conn_rate: None,
            accept_proxy: None,
            tls: None,
        };
        let group =
            |name: &str, balance, servers: &[(SocketAddrV4, u32)], keepalive, ports| GroupSpec {
                name: name.into(),
                port_index: 1,
                balancer: Balancer::new(
                    balance,
                    servers
                        .iter()
                        .map(|&(a, w)| ServerState::new(a.into(), w))
                        .collect(),
                ),
                connect_timeout_us: 1_000_000,
                read_timeout_us: 3_000_000,
                keepalive,
                local_ports: ports,
                health: None,
                proxy_protocol: None,
                tls: None,
            };
        let spec = WorkerSpec {
            tls_handshakes_per_poll: 4,
            ports: vec![
                port_spec(0, (CLIENT_SIDE, 24), Some(GATEWAY)),
                port_spec(1, (UPSTREAM_SIDE, 24), None),
            ],
            listeners: vec![
                listener(
                    80,
                    ListenerApp::Http(Arc::new(Routes {
                        routes: vec![(Some("api.example".into()), "/v1".into(), 1)],
                        default: Some(0),
                        limits: Vec::new(),
                        headers: Default::default(),
                        upgrade: Default::default(),
                        hash_keys: Vec::new(),
                    })),
                ),
                listener(81, ListenerApp::Tcp { group: 0 }),
                listener(8080, static_app("hello from zproxy\n")),
                ListenerSpec {
                    allow: vec![(Ipv4Addr::new(10, 71, 0, 0), 28)],
                    max_per_source: 2,
                    ..listener(8081, static_app("ok\n"))
                },
                // HTTPS (the `tls_records` target): TLS, then :80's routing.
                ListenerSpec {
                    tls: Some(Arc::new(ServerTls {
                        config: Some(
                            server_config_from_pem(
                                include_bytes!("../certs/fuzz.pem"),
                                include_bytes!("../certs/fuzz.key"),
                            )
                            .expect("the harness's certificate loads"),
                        ),
                        handshake_timeout_us: 1_000_000,
                    })),
                    ..listener(
                        TLS_PORT,
                        ListenerApp::Http(Arc::new(Routes {
                            routes: Vec::new(),
                            default: Some(0),
                            limits: Vec::new(),
                            headers: Default::default(),
                            upgrade: Default::default(),
                            hash_keys: Vec::new(),
                        })),
                    )
                },
            ],
            groups: vec![
                group(
                    "web",
                    Balance::RoundRobin,
                    &[(SERVERS[0], 1), (SERVERS[1], 2)],
                    2,
                    (20_000, 20_999),
                ),
                group(
                    "api",
                    Balance::LeastConn,
                    &[(SERVERS[2], 1)],
                    0,
                    (30_000, 30_099),
                ),
            ],
            max_flows: MAX_FLOWS,
            socket_rx_buffer: 2048,
            socket_tx_buffer: 4096,
            buffer_release_idle_us: 1_000_000,
            tx_drain_us: 0,
            rate_limit_entries: 64,
            pool: pool.clone(),
            upstream_stats: Arc::new(Mutex::new(Vec::new())),
            request_stats: Arc::new(zproxy::app::stats::RequestStats::new(4)),
            worker_index: 0,
            inboxes: handoff_inboxes(1),
            idle_sleep_us: 0,
            // Small, so that a few half-open connections bring in SYN cookies.
            syn_backlog: 4,
            // The fuzzer's frames come in small bursts: never behind.
            admit_flow_limit: MAX_FLOWS,
            admit_backlog_us: 10_000,
            // Fixed, so that runs replay: the same ISNs as with the old `random_seed`.
            secrets: Secrets::from_seed(0x5eed_f022),
            access_log: None,
            capture: Arc::default(),
        };
        let worker = Worker::new(spec, Arc::new(SharedCounters::default()));
        let rx = ports.iter().map(|p| p.queue(QueueId(0))).collect();
        Harness {
            _ports: ports,
            rx,
            macs,
            pool,
            worker,
            now_us: 10_000_000,
            peers: Vec::new(),
            mode: 0,
            trace: std::env::var_os("ZPROXY_FUZZ_TRACE").is_some(),
            runs: 0,
        }
    }

    /// One fuzz input: handshakes, its operations, then the quiet minute and
    /// the checks that nothing is left.
    pub fn run(&mut self, data: &[u8]) {
        let (mode, ops) = ops::decode(data);
        self.runs += 1;
        if self.trace {
            eprintln!("== input {} at {} us", self.runs, self.now_us);
        }
        self.peers.clear();
        self.open_flows();
        self.mode = mode;
        for op in ops {
            if self.trace {
                eprintln!("op {op:?}");
            }
            self.apply(op);
        }
        self.quiesce();
    }

    /// One `tls_records` input: the set-up connections, then a client of
    /// the HTTPS listener sending the input (after its first byte) as its
    /// bytes, in segments of 1 + the first byte, acknowledged; then the
    /// quiet minute and the checks. A stalled handshake times out (1 s).
    pub fn run_tls(&mut self, data: &[u8]) {
        let Some((&split, records)) = data.split_first() else {
            return;
        };
        self.runs += 1;
        self.peers.clear();
        self.open_flows();
        self.mode = ops::AUTO_ACCEPT_UPSTREAM | ops::AUTO_ACK;
        self.connect_to(3, TLS_PORT, true);
        let flow = (self.peers.len() - 1) as u8;
        for chunk in records.chunks(usize::from(split) + 1) {
            self.apply(Op::Segment {
                flow,
                flags: ops::ACK | ops::PSH,
                seq_off: 0,
                ack_off: 0,
                window: 64240,
                options: Vec::new(),
                payload: chunk.to_vec(),
                mangle: 0,
            });
        }
        self.apply(Op::Wait { ms: 1500 });
        self.quiesce();
    }

    fn ip(&self, port: usize) -> Ipv4Addr {
        [CLIENT_SIDE, UPSTREAM_SIDE][port]
    }

    /// A connection to each listener, with complete handshakes (and the TCP
    /// proxy's upstream connection, which the server accepts).
    fn open_flows(&mut self) {
        // The worker's loop ARPs for the gateway and every upstream server
        // (`resolve_upstream_next_hops`); here are those hosts' replies.
        for (port, host) in [(0, GATEWAY)]
            .into_iter()
            .chain(SERVERS.iter().map(|s| (1, *s.ip())))
        {
            let ours = (self.macs[port], self.ip(port));
            let frame = wire::arp_frame(ours.0, 2, (mac_of(host), host), ours);
            self.inject(port, Some(&frame));
        }
        self.mode = ops::AUTO_ACCEPT_UPSTREAM;
        for (client, listener) in [(0, 0), (1, 1), (5, 2), (2, 3)] {
            self.apply(Op::Connect {
                client,
                listener,
                complete: true,
            });
        }
        let ok =
            self.peers.len() == 5 && self.peers.iter().all(|p| p.their_nxt.is_some() && !p.reset);
        assert!(
            ok,
            "the worker did not take the set-up connections (a leak from an earlier input?): {:#?}",
            self.peers
        );
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Raw { port, frame } => self.inject(usize::from(port), Some(&frame)),
            Op::Segment {
                flow,
                flags,
                seq_off,
                ack_off,
                window,
                options,
                payload,
                mangle,
            } => {
                if self.peers.is_empty() {
                    return;
                }
                let i = usize::from(flow) % self.peers.len();
                let p = &self.peers[i];
                let seq = p.my_nxt.wrapping_add(seq_off as u32);
                let ack = p.their_nxt.unwrap_or(0).wrapping_add(ack_off as u32);
                let frame = self.segment(i, seq, ack, flags, window, &options, &payload, mangle);
                if seq_off == 0 && flags & RST == 0 {
                    let used = payload.len() as u32
                        + u32::from(flags & SYN != 0)
                        + u32::from(flags & FIN != 0);
                    let p = &mut self.peers[i];
                    p.my_nxt = p.my_nxt.wrapping_add(used);
                }
                let port = self.peers[i].port;
                self.inject(port, Some(&frame));
            }
            Op::Connect {
                client,
                listener,
                complete,
            } => self.connect(client, listener, complete),
            Op::Wait { ms } => {
                self.now_us += u64::from(ms) * 1000;
                self.inject(0, None);
            }
            Op::Stateless {
                port,
                kind,
                field,
                payload,
            } => {
                let port = usize::from(port);
                let frame = self.stateless(port, kind, field, &payload);
                self.inject(port, Some(&frame));
            }
            Op::AckAll { window } => {
                for i in 0..self.peers.len() {
                    let p = &self.peers[i];
                    if let (Some(ack), false) = (p.their_nxt, p.reset) {
                        let frame = self.segment(i, p.my_nxt, ack, ACK, window, &[], &[], 0);
                        self.inject(self.peers[i].port, Some(&frame));
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn segment(
        &self,
        i: usize,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        options: &[u8],
        payload: &[u8],
        mangle: u8,
    ) -> Vec<u8> {
        let p = &self.peers[i];
        wire::tcp_frame(&Segment {
            src_mac: p.mac,
            dst_mac: self.macs[p.port],
            src: p.addr,
            dst: (self.ip(p.port), p.local_port),
            seq,
            ack,
            flags,
            window,
            options,
            payload,
            mangle,
        })
    }

    fn connect(&mut self, client: u8, listener: u8, complete: bool) {
        let local_port = ops::LISTENER_PORTS[usize::from(listener) % ops::LISTENER_PORTS.len()];
        self.connect_to(client, local_port, complete);
    }

    fn connect_to(&mut self, client: u8, local_port: u16, complete: bool) {
        let ip = CLIENTS[usize::from(client) % CLIENTS.len()];
        // High bit: one of a few fixed source ports (tuples get reused).
        let src_port = if client & 0x80 != 0 {
            40_000 + u16::from((client >> 3) & 0xf)
        } else {
            41_000 + self.peers.len() as u16
        };
        let isn = 0x1000_0000u32
            .wrapping_mul(self.peers.len() as u32 + 1)
            .wrapping_add(self.runs.wrapping_mul(0x9e37));
        let on_link = ip.octets()[..3] == CLIENT_SIDE.octets()[..3];
        let peer = Peer {
            port: 0,
            addr: (ip, src_port),
            mac: mac_of(if on_link { ip } else { GATEWAY }),
            local_port,
            my_nxt: isn.wrapping_add(1),
            their_nxt: None,
            complete,
            upstream: false,
            reset: false,
        };
        let i = match self.find(0, peer.addr, local_port) {
            Some(i) => {
                self.peers[i] = peer;
                i
            }
            None => {
                self.peers.push(peer);
                self.peers.len() - 1
            }
        };
        let mut options = SYN_OPTIONS;
        options[8..12].copy_from_slice(&(self.now_us as u32).to_be_bytes());
        let frame = self.segment(i, isn, 0, SYN, 64240, &options, &[], 0);
        self.inject(0, Some(&frame));
    }

    /// Frames no connection owns, mostly well formed, with fuzzed fields.
    fn stateless(&self, port: usize, kind: u8, field: u32, payload: &[u8]) -> Vec<u8> {
        let ours = self.ip(port);
        let mac = self.macs[port];
        let net = ours.octets();
        let peer = Ipv4Addr::new(net[0], net[1], net[2], (field >> 24) as u8);
        let addr = match field & 3 {
            0 => ours,
            1 => Ipv4Addr::BROADCAST,
            2 => Ipv4Addr::new(net[0], net[1], net[2], 255),
            _ => Ipv4Addr::from(field),
        };
        match kind & 7 {
            0 => wire::arp_frame(wire::BROADCAST, 1, (mac_of(peer), peer), ([0; 6], addr)),
            1 => {
                // An unsolicited ARP reply (or a gratuitous one) with any MAC.
                let mut m = mac_of(peer);
                m[..payload.len().min(6)].copy_from_slice(&payload[..payload.len().min(6)]);
                wire::arp_frame(mac, 2, (m, peer), (mac, addr))
            }
            2 | 3 => {
                let dst = if kind & 1 == 0 { ours } else { addr };
                let icmp = wire::icmp_echo(field as u16, (field >> 16) as u16, payload);
                wire::ipv4_frame(
                    mac,
                    mac_of(peer),
                    wire::ipv4(peer, dst, 1, &icmp, kind >> 3),
                    kind >> 3,
                )
            }
            4 => {
                let udp = wire::udp(field as u16, (field >> 8) as u16, payload);
                wire::ipv4_frame(
                    mac,
                    mac_of(peer),
                    wire::ipv4(peer, addr, 17, &udp, kind >> 3),
                    kind >> 3,
                )
            }
            5 => wire::ipv4_frame(
                mac,
                mac_of(peer),
                wire::ipv4(peer, addr, (field >> 8) as u8, payload, kind >> 3),
                kind >> 3,
            ),
            6 => {
                // TCP from a tuple no connection has (RST, TIME-WAIT, SYN paths).
                let dport = ops::LISTENER_PORTS[(field as usize >> 8) % ops::LISTENER_PORTS.len()];
                wire::tcp_frame(&Segment {
                    src_mac: mac_of(peer),
                    dst_mac: mac,
                    src: (peer, 40_000 + (field as u16 & 0xf)),
                    dst: (ours, dport),
                    seq: field,
                    ack: field.rotate_left(7),
                    flags: (field >> 16) as u8,
                    window: 1024,
                    options: &[],
                    payload,
                    mangle: kind >> 3,
                })
            }
            _ if field & 3 == 0 && kind >> 3 != 0 => self.ipv6(kind >> 3, field, payload),
            _ => {
                // Another ethertype: IPv6, a VLAN tag, LLDP, ...
                let ethertype = [0x86dd, 0x8100, 0x88cc, 0x0842][(field & 3) as usize];
                wire::raw_ethernet(mac, mac_of(peer), ethertype, payload)
            }
        }
    }

    /// An IPv6 frame that gets past the checksum to the port's NDP and
    /// ICMPv6 (see `ops::Op::Stateless`): `v` picks addresses, hop limit, an
    /// extension header and whether the checksum is right; `field` the
    /// message type, flags and target; `payload` its options or data.
    fn ipv6(&self, v: u8, field: u32, payload: &[u8]) -> Vec<u8> {
        use std::net::Ipv6Addr;
        let ours = [FUZZ_V6, FUZZ_V6_LL][(field >> 2 & 1) as usize];
        let peer = Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, (field >> 24) as u16);
        let group = wire::solicited_node(ours);
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let (src, dst) = match v & 3 {
            0 => (peer, ours),
            1 => (peer, group),
            2 => (Ipv6Addr::UNSPECIFIED, group),
            _ => (peer, all_nodes),
        };
        let hop_limit = if v & 4 == 0 { 255 } else { (field >> 8) as u8 };
        let kind = [128, 135, 136, 134, 133, 137, 135, 136][(field >> 3 & 7) as usize];
        let mut icmp = vec![kind, 0, 0, 0, (field >> 16) as u8, 0, 0, 0];
        if (135..=137).contains(&kind) {
            let target = if field & (1 << 6) == 0 { ours } else { peer };
            icmp.extend_from_slice(&target.octets());
        }
        icmp.extend_from_slice(payload);
        // Extension headers: none, hop-by-hop PadN, routing type 0, a fragment.
        let ext = (field >> 7 & 3) as u8;
        let ext = if v & 8 == 0 { None } else { Some(ext) };
        wire::ipv6_icmp_frame(
            self.macs[0],
            wire::mac_of(Ipv4Addr::new(10, 71, 0, (field >> 24) as u8)),
            (src, dst, hop_limit),
            ext,
            &icmp,
            v & 16 != 0,
        )
    }

    fn find(&self, port: usize, addr: (Ipv4Addr, u16), local_port: u16) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.port == port && p.addr == addr && p.local_port == local_port)
    }

    /// Hands one frame (or none: time passing) to the worker, then reads and
    /// answers what it sent, a few rounds at most.
    fn inject(&mut self, port: usize, frame: Option<&[u8]>) {
        self.now_us += FRAME_US;
        let open = self.worker.inject_frame(port, frame, self.now_us);
        if self.trace {
            eprintln!(
                " in port {port} at {}: {} bytes, {open} flows open",
                self.now_us,
                frame.map_or(0, <[u8]>::len)
            );
        }
        for _ in 0..8 {
            let replies = self.read_sent(true);
            if replies.is_empty() {
                return;
            }
            for (port, frame) in replies {
                self.now_us += FRAME_US;
                let open = self.worker.inject_frame(port, Some(&frame), self.now_us);
                if self.trace {
                    eprintln!(
                        " reply on port {port}: {} bytes, {open} flows open",
                        frame.len()
                    );
                }
            }
        }
    }

    /// Everything the worker sent since the last call, checked; the
    /// answers of the hosts the harness plays (when `react`).
    fn read_sent(&mut self, react: bool) -> Vec<(usize, Vec<u8>)> {
        let mut replies = Vec::new();
        let mut burst = MbufBurst::<32>::default();
        for port in 0..2 {
            loop {
                let n = self.rx[port].rx_burst(&mut burst);
                if n == 0 {
                    break;
                }
                for m in burst.drain() {
                    let sent = wire::check_sent(m.data(), self.macs[port], self.ip(port), IP_MTU);
                    if self.trace {
                        eprintln!("  port {port} sent {sent:?}");
                    }
                    self.observe(port, sent, react, &mut replies);
                }
            }
        }
        replies
    }

    fn observe(
        &mut self,
        port: usize,
        sent: Sent,
        react: bool,
        replies: &mut Vec<(usize, Vec<u8>)>,
    ) {
        match sent {
            Sent::ArpRequest { target } => {
                let known = match port {
                    0 => target == GATEWAY || CLIENTS.contains(&target),
                    _ => SERVERS.iter().any(|s| *s.ip() == target),
                };
                if known && react {
                    let ours = (self.macs[port], self.ip(port));
                    replies.push((
                        port,
                        wire::arp_frame(ours.0, 2, (mac_of(target), target), ours),
                    ));
                }
            }
            Sent::Tcp {
                dst,
                src_port,
                seq,
                ack: _,
                flags,
                len,
            } => {
                let i = match self.find(port, dst, src_port) {
                    Some(i) => i,
                    None if port == 1 && flags & SYN != 0 && flags & ACK == 0 => {
                        // The worker connects to an upstream server.
                        let isn = 0x5000_0000u32
                            .wrapping_add(0x0100_0000u32.wrapping_mul(self.peers.len() as u32))
                            .wrapping_add(self.runs);
                        self.peers.push(Peer {
                            port: 1,
                            addr: dst,
                            mac: mac_of(dst.0),
                            local_port: src_port,
                            my_nxt: isn,
                            their_nxt: None,
                            complete: false,
                            upstream: true,
                            reset: false,
                        });
                        self.peers.len() - 1
                    }
                    None => return,
                };
                let p = &mut self.peers[i];
                let end = seq
                    .wrapping_add(len as u32)
                    .wrapping_add(u32::from(flags & (SYN | FIN) != 0));
                match p.their_nxt {
                    _ if flags & SYN != 0 => p.their_nxt = Some(end),
                    Some(n) if (end.wrapping_sub(n) as i32) > 0 => p.their_nxt = Some(end),
                    Some(_) => {}
                    None => p.their_nxt = Some(end),
                }
                if flags & RST != 0 {
                    p.reset = true;
                    return;
                }
                if !react {
                    return;
                }
                let reply = if p.upstream
                    && flags & SYN != 0
                    && flags & ACK == 0
                    && self.mode & ops::AUTO_ACCEPT_UPSTREAM != 0
                {
                    let isn = p.my_nxt;
                    p.my_nxt = isn.wrapping_add(1);
                    Some((isn, SYN | ACK, &SYNACK_OPTIONS[..]))
                } else if flags & SYN != 0 && flags & ACK != 0 && p.complete {
                    p.complete = false;
                    Some((p.my_nxt, ACK, &[][..]))
                } else if (len > 0 || flags & FIN != 0) && self.mode & ops::AUTO_ACK != 0 {
                    Some((p.my_nxt, ACK, &[][..]))
                } else {
                    None
                };
                if let Some((seq, flags, options)) = reply {
                    let ack = p.their_nxt.unwrap_or(0);
                    let frame = self.segment(i, seq, ack, flags, 64240, options, &[], 0);
                    replies.push((port, frame));
                }
            }
            Sent::Other => {}
        }
    }

    /// A minute passes with no frame from anyone: every connection must be
    /// gone by then (timeouts), every mbuf back in the pool, and every flow
    /// slot usable again (`probe`).
    fn quiesce(&mut self) {
        self.now_us += QUIET_US;
        if self.trace {
            eprintln!("== quiet minute, to {} us", self.now_us);
        }
        let mut open = usize::MAX;
        for _ in 0..4 {
            open = self.worker.inject_frame(0, None, self.now_us);
            self.read_sent(false);
            if open == 0 {
                break;
            }
            self.now_us += 1_000_000;
        }
        assert_eq!(open, 0, "flows still open after a quiet minute");
        self.read_sent(false);
        // A released flow slot keeps smoltcp's "waiting for ARP" silence
        // (1 s) of its last connection, and connects the input left to time
        // out in the quiet minute mark their servers down (5 s, see
        // `balance`): let both lapse so the next input's connections start
        // as they would on a fresh worker.
        self.now_us += 6_000_000;
        self.worker.inject_frame(0, None, self.now_us);
        self.read_sent(false);
        self.probe();
        assert_eq!(
            self.pool.in_use(),
            0,
            "mbufs out of the pool with nothing in flight"
        );
    }

    /// Fills every flow slot with a new connection (to the static :8080: a
    /// proxied client would keep a slot free for its upstream; handshakes
    /// complete, so no SYN cookies), checks each was taken,
    /// and resets them all: a slot the input left unusable fails here, in
    /// the same input.
    fn probe(&mut self) {
        self.peers.clear();
        self.mode = 0;
        for k in 0..MAX_FLOWS as u8 {
            self.apply(Op::Connect {
                client: k,
                listener: 2,
                complete: true,
            });
        }
        assert!(
            self.peers.iter().all(|p| p.their_nxt.is_some() && !p.reset),
            "a flow slot is no longer usable after the input: {:#?}",
            self.peers
        );
        for i in 0..self.peers.len() {
            let p = &self.peers[i];
            let frame = self.segment(i, p.my_nxt, 0, RST, 0, &[], &[], 0);
            self.inject(0, Some(&frame));
        }
        let open = self.worker.inject_frame(0, None, self.now_us);
        self.read_sent(false);
        assert_eq!(open, 0, "reset connections still open");
        assert_eq!(
            self.pool.in_use(),
            0,
            "mbufs out of the pool with nothing in flight"
        );
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
