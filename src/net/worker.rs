//! One polling core: rx burst per port queue, demux each frame to its flow's
//! own socket set, run the application (static responder or proxy session),
//! transmit, and poll only the flows whose timers are due (DPDK l3fwd's loop
//! shape, with smoltcp per flow).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use smoltcp::iface::{
    Config as IfaceConfig, Interface, PollResult, SocketHandle, SocketSet, SocketStorage,
};
use smoltcp::phy::{DeviceCapabilities, TxToken as _};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpCidr, IpProtocol, Ipv4Packet, TcpPacket,
};

use super::arena::Arena;
use super::counters::{Counter, Counters, SharedCounters};
use super::device::{self, FrameDevice, TxQueue, BURST};
use super::flow::{FlowKey, FlowTable, TimeWait};
use super::rss::{Steering, RSS_KEY};
use super::segment;
use super::syncookie::CookieJar;
use super::timers::Timers;
use crate::app::proxy::balance::Balancer;
use crate::app::proxy::health::{self, HealthCheck, ServerHealth};
use crate::app::proxy::session::{Mode, Routes, Session, Step};
use crate::app::responder::{Responder, ResponderState};
use crate::config::in_network;
use crate::dpdk::{rdtsc, tsc_hz, Mbuf, MbufBurst, Mempool, PortQueue};

/// smoltcp's TIME-WAIT length, kept here as compact state instead.
const TIME_WAIT_US: u64 = 10_000_000;
/// Most due timers handled per loop iteration, so rx is never starved.
const TIMERS_PER_ITERATION: usize = 256;
/// `poll_egress` sends one segment per socket per call; bound the loop.
const EGRESS_ROUNDS: usize = 64;
/// How often counters are published for the control thread.
const PUBLISH_US: u64 = 100_000;
/// How often next hops of upstream servers are re-resolved (smoltcp forgets
/// a neighbour after 60 s; a connect must not wait for ARP).
const ARP_REFRESH_US: u64 = 20_000_000;
/// Idle pooled upstream connections are closed after this long (below
/// nginx's default keepalive_timeout of 75 s, so we close first).
const POOL_IDLE_US: u64 = 30_000_000;
/// smoltcp forgets a neighbour after 60 s; tell it again after this long.
const GLEAN_EVERY_US: u64 = 30_000_000;
/// On-link neighbours remembered for gleaning (smoltcp's cache holds 256).
const GLEANED_NEIGHBOURS: usize = 256;
/// How often the worker looks for health probes that are due.
const HEALTH_TICK_US: u64 = 10_000;
/// Attempts to find a free local port for an upstream connection.
const LOCAL_PORT_TRIES: u32 = 64;
/// Empty polls before an idle worker starts sleeping (`idle_sleep_us`).
const IDLE_POLLS_BEFORE_SLEEP: u32 = 1_000;
/// Handed-off frames taken per loop iteration.
const HANDOFFS_PER_ITERATION: usize = 2 * BURST;
/// How often a draining worker closes connections that became idle.
const DRAIN_SWEEP_US: u64 = 100_000;
/// Longest the worker waits at exit for the NIC to take and complete its last frames.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_millis(20);
/// smoltcp treats instant 0 specially ("send now"); start the clock later.
const CLOCK_ORIGIN_US: u64 = 1_000_000;

/// One port as this worker sees it.
pub struct PortSpec {
    pub queue: PortQueue,
    pub mac: [u8; 6],
    pub address: (Ipv4Addr, u8),
    pub gateway: Option<Ipv4Addr>,
    pub ip_mtu: usize,
    pub rx_checksum_offload: bool,
    /// Entries in the port's RSS redirection table (see `rss::Steering`).
    pub reta_size: u32,
}

/// What a listener does with accepted connections.
pub enum ListenerApp {
    Static(Arc<Responder>),
    Tcp { group: usize },
    Http(Arc<Routes>),
}

/// A TCP listener on one of the worker's ports.
pub struct ListenerSpec {
    pub port_index: usize,
    pub tcp_port: u16,
    pub app: ListenerApp,
    pub idle_timeout_us: u64,
    /// Client networks allowed in (address, prefix length); any when empty.
    pub allow: Vec<(Ipv4Addr, u8)>,
    pub header_timeout_us: u64,
    /// Open connections per client address (0: no limit).
    pub max_per_source: u32,
}

impl ListenerSpec {
    fn allows(&self, client: Ipv4Addr) -> bool {
        self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|&(net, len)| in_network(client, net, len))
    }
}

/// An upstream group as this worker uses it.
pub struct GroupSpec {
    pub name: String,
    pub port_index: usize,
    pub balancer: Balancer,
    pub connect_timeout_us: u64,
    pub read_timeout_us: u64,
    /// Idle connections kept per server for reuse.
    pub keepalive: usize,
    pub local_ports: (u16, u16),
    pub health: Option<HealthCheck>,
}

/// One upstream server's figures, as published for the management endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamStat {
    pub group: String,
    pub server: std::net::SocketAddrV4,
    pub requests: u64,
    pub connect_failures: u64,
    pub active: u32,
    pub healthy: bool,
    pub retired: bool,
    pub response_us_sum: u64,
    pub responses: u64,
}

/// What the control thread tells the workers (relaxed flags, read once per loop).
pub struct Control {
    /// Stop now.
    pub stop: AtomicBool,
    /// Refuse new connections, let the open ones finish, stop when none is left.
    pub draining: AtomicBool,
    /// Per worker: a reloaded config's groups and listeners (SIGHUP), picked up between bursts.
    pub reload: Vec<ArrayQueue<Reload>>,
    /// Workers that have returned.
    pub finished: AtomicUsize,
}

impl Control {
    pub fn new(workers: usize) -> Self {
        Control {
            stop: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            reload: (0..workers).map(|_| ArrayQueue::new(1)).collect(),
            finished: AtomicUsize::new(0),
        }
    }
}

/// A frame that arrived on a worker that does not own its flow, on its way
/// to the owner (or a copy of an ARP frame every worker must see).
pub struct Handoff {
    pub port: usize,
    pub mbuf: Mbuf,
    pub arp_copy: bool,
}

/// One lock-free inbox per worker.
pub type Inboxes = Arc<Vec<ArrayQueue<Handoff>>>;

/// Frames one worker's inbox holds; more are dropped and counted.
const INBOX_CAPACITY: usize = 4096;

pub fn handoff_inboxes(workers: usize) -> Inboxes {
    Arc::new(
        (0..workers)
            .map(|_| ArrayQueue::new(INBOX_CAPACITY))
            .collect(),
    )
}

/// The reloadable part of the config, in the indices the worker already uses
/// (see `plan::Layout`).
pub struct Reload {
    pub groups: Vec<GroupSpec>,
    pub listeners: Vec<ListenerApp>,
}

pub struct WorkerSpec {
    pub ports: Vec<PortSpec>,
    pub listeners: Vec<ListenerSpec>,
    pub groups: Vec<GroupSpec>,
    pub max_flows: usize,
    pub socket_rx_buffer: usize,
    pub socket_tx_buffer: usize,
    pub tx_drain_us: u64,
    pub pool: Arc<Mempool>,
    /// Where the worker publishes per-server figures.
    pub upstream_stats: Arc<Mutex<Vec<UpstreamStat>>>,
    /// This worker's number: it polls queue `worker_index` of every port and
    /// owns the flows RSS puts on that queue (see `rss::Steering`).
    pub worker_index: usize,
    /// Every worker's inbox (their count is the number of workers).
    pub inboxes: Inboxes,
    pub idle_sleep_us: u64,
    /// Half-open client connections (SYN received, no ACK yet) beyond which
    /// SYNs are answered with SYN cookies instead of state; 0: always cookies.
    pub syn_backlog: usize,
    /// Seed for smoltcp's ISNs and ports (must differ per run).
    pub random_seed: u64,
}

struct PortState {
    rx: PortQueue,
    tx: TxQueue,
    /// Never flushed: where a cookie connection's SYN-ACK is caught (`capture_syn_ack`).
    capture: TxQueue,
    iface: Interface,
    caps: DeviceCapabilities,
    ip: Ipv4Addr,
    mac: EthernetAddress,
    /// Next hop for destinations off the link.
    gateway: Option<Ipv4Addr>,
    prefix_len: u8,
    rx_checksum_offload: bool,
    /// Which worker owns a flow on this port.
    steering: Steering,
    /// When each on-link neighbour's MAC was last given to smoltcp (µs).
    gleaned: HashMap<Ipv4Addr, u64>,
}

impl PortState {
    fn on_link(&self, ip: Ipv4Addr) -> bool {
        in_network(ip, self.ip, self.prefix_len)
    }
}

struct Group {
    spec: GroupSpec,
    next_local_port: u16,
    /// Idle upstream flows per server, most recently used last.
    pools: Vec<Vec<u32>>,
    /// Active health check state per server.
    health: Vec<ServerHealth>,
}

impl Group {
    fn new(spec: GroupSpec) -> Group {
        Group {
            next_local_port: spec.local_ports.0,
            pools: vec![Vec::with_capacity(spec.keepalive); spec.balancer.servers.len()],
            health: vec![ServerHealth::default(); spec.balancer.servers.len()],
            spec,
        }
    }
}

/// What a flow slot is being used for.
enum FlowApp {
    Static(ResponderState),
    /// An accepted connection proxied to upstreams.
    Client(Session),
    /// A connection to an upstream server (attached to a client via `peer`, or pooled).
    Upstream {
        group: usize,
        server: usize,
        connecting: bool,
    },
    /// An active health check of one server.
    Probe {
        group: usize,
        server: usize,
        /// The HTTP request went out.
        sent: bool,
        /// The result was recorded.
        decided: bool,
    },
}

struct Flow {
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    port: usize,
    /// The listener that accepted it (client flows).
    listener: usize,
    app: FlowApp,
    /// The other half of a proxied connection.
    peer: Option<u32>,
    /// Last time the flow received a frame (for the idle timeout).
    last_rx_us: u64,
    idle_timeout_us: u64,
    /// Our ISN as the client knows it minus smoltcp's (opened from a SYN
    /// cookie; see `syncookie`), else 0.
    seq_delta: u32,
    /// Accepted from a SYN and not yet past SYN-RECEIVED (counted in `half_open`).
    half_open: bool,
}

impl Flow {
    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }
}

/// What a received frame is, decided before smoltcp sees it.
enum Frame {
    Tcp {
        key: FlowKey,
        syn: bool,
        ack: bool,
        /// Where it came from (to glean the neighbour's MAC from a SYN).
        src_mac: EthernetAddress,
    },
    Arp,
    /// ICMP, broadcasts: smoltcp answers with no socket involved.
    Stateless,
    Drop(Counter),
}

pub struct Worker {
    ports: Vec<PortState>,
    listeners: Vec<ListenerSpec>,
    groups: Vec<Group>,
    flows: FlowTable<Flow>,
    timers: Timers,
    time_wait: TimeWait,
    /// Open accepted connections per client address, for listeners with a
    /// per-source limit.
    per_source: HashMap<Ipv4Addr, u32>,
    /// Upstream flows whose SYN may be waiting for ARP.
    connecting: Vec<u32>,
    /// Client flows of proxying listeners, and how many of them have an
    /// upstream linked: each of the others is promised a free slot for its
    /// upstream connection (see `spare_slots`).
    proxied_clients: usize,
    linked: usize,
    /// A socket set with no sockets: frames without a flow get smoltcp's
    /// stateless answers (ARP reply, echo reply, RST).
    no_sockets: SocketSet<'static>,
    scratch: Box<[u8]>,
    /// For frames the worker makes itself (ARP).
    pool: Arc<Mempool>,
    counters: Counters,
    shared: Arc<SharedCounters>,
    /// Per-server figures for the management endpoint, refreshed with the counters.
    upstream_stats: Arc<Mutex<Vec<UpstreamStat>>>,
    index: usize,
    inboxes: Inboxes,
    idle_sleep_us: u64,
    /// SYN flood defence: cookies once `half_open` reaches `syn_backlog`.
    cookies: CookieJar,
    half_open: usize,
    syn_backlog: usize,
    /// Until when an ACK for no flow may carry a cookie we sent.
    cookies_valid_until_us: u64,
    /// The receive window a cookie SYN-ACK offers (no window scaling).
    cookie_window: u16,
    /// The monotonic clock: the CPU's invariant TSC (as DPDK's timers use),
    /// read once per loop iteration instead of a clock_gettime call.
    tsc_origin: u64,
    tsc_per_us: u64,
    draining: bool,
}

impl Worker {
    /// Builds every flow slot (sockets and buffers) up front; run this on the
    /// worker's own core so the memory is local to it.
    pub fn new(spec: WorkerSpec, shared: Arc<SharedCounters>) -> Worker {
        let drain_cycles = spec.tx_drain_us * tsc_hz() / 1_000_000;
        let ports = spec
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let caps = device::capabilities(p.ip_mtu, p.rx_checksum_offload);
                let mut tx = TxQueue::new(p.queue, spec.pool.clone(), drain_cycles);
                let mac = EthernetAddress(p.mac);
                let mut config = IfaceConfig::new(HardwareAddress::Ethernet(mac));
                config.random_seed =
                    spec.random_seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut dev = FrameDevice {
                    rx: None,
                    tx: &mut tx,
                    caps: &caps,
                    seq_delta: 0,
                };
                let mut iface = Interface::new(config, &mut dev, instant(CLOCK_ORIGIN_US));
                iface.update_ip_addrs(|addrs| {
                    addrs
                        .push(IpCidr::new(p.address.0.into(), p.address.1))
                        .expect("one address per port");
                });
                if let Some(gw) = p.gateway {
                    iface
                        .routes_mut()
                        .add_default_ipv4_route(gw)
                        .expect("one default route");
                }
                PortState {
                    rx: p.queue,
                    tx,
                    capture: TxQueue::new(p.queue, spec.pool.clone(), drain_cycles),
                    iface,
                    caps,
                    ip: p.address.0,
                    mac,
                    gateway: p.gateway,
                    prefix_len: p.address.1,
                    rx_checksum_offload: p.rx_checksum_offload,
                    steering: Steering::new(&RSS_KEY, p.reta_size, spec.inboxes.len() as u16),
                    gleaned: HashMap::with_capacity(GLEANED_NEIGHBOURS),
                }
            })
            .collect();
        let (rx_len, tx_len) = (spec.socket_rx_buffer, spec.socket_tx_buffer);
        // One mapping for every socket buffer, on this worker's node.
        let arena = Arena::on_node(
            spec.max_flows * (rx_len + tx_len),
            crate::dpdk::lcore::current_node(),
        )
        .expect("mapping the socket buffer arena (out of address space?)")
        .leak();
        let mut chunks = arena.chunks_exact_mut(rx_len + tx_len);
        let flows = FlowTable::new(spec.max_flows, || {
            let (rx, tx) = chunks
                .next()
                .expect("arena sized for max_flows")
                .split_at_mut(rx_len);
            let socket = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
            let mut sockets = SocketSet::new(vec![SocketStorage::EMPTY]);
            let handle = sockets.add(socket);
            Flow {
                sockets,
                handle,
                port: 0,
                listener: 0,
                app: FlowApp::Static(ResponderState::default()),
                peer: None,
                last_rx_us: 0,
                idle_timeout_us: 0,
                seq_delta: 0,
                half_open: false,
            }
        });
        let mut groups: Vec<Group> = spec.groups.into_iter().map(Group::new).collect();
        // Start each group's local ports somewhere random, so that a restarted
        // zproxy does not reuse the tuples of the previous run first.
        for (i, g) in groups.iter_mut().enumerate() {
            let (lo, hi) = g.spec.local_ports;
            let span = u64::from(hi - lo) + 1;
            g.next_local_port =
                lo + (crate::net::flow::mix(spec.random_seed ^ i as u64) % span) as u16;
        }
        Worker {
            ports,
            listeners: spec.listeners,
            groups,
            timers: Timers::new(spec.max_flows),
            time_wait: TimeWait::new(spec.max_flows * 8, TIME_WAIT_US),
            connecting: Vec::with_capacity(spec.max_flows),
            proxied_clients: 0,
            linked: 0,
            per_source: HashMap::with_capacity(spec.max_flows),
            flows,
            no_sockets: SocketSet::new(Vec::new()),
            scratch: vec![0u8; rx_len.max(tx_len)].into_boxed_slice(),
            pool: spec.pool.clone(),
            counters: Counters::new(),
            shared,
            upstream_stats: spec.upstream_stats,
            index: spec.worker_index,
            inboxes: spec.inboxes,
            idle_sleep_us: spec.idle_sleep_us,
            cookies: CookieJar::new(spec.random_seed ^ 0x5359_4e43_4f4f_4b49),
            half_open: 0,
            syn_backlog: spec.syn_backlog,
            cookies_valid_until_us: 0,
            cookie_window: spec.socket_rx_buffer.min(usize::from(u16::MAX)) as u16,
            tsc_origin: rdtsc(),
            tsc_per_us: (tsc_hz() / 1_000_000).max(1),
            draining: false,
        }
    }

    /// Polls until told to stop, or until draining leaves no connection.
    pub fn run(&mut self, control: &Control) {
        let mut rx = MbufBurst::<BURST>::default();
        let mut last_publish_us = 0;
        let mut next_arp_us = 0;
        let mut next_health_us = 0;
        let mut next_drain_sweep_us = 0;
        let mut idle_polls = 0u32;
        let mut last_tsc = rdtsc();
        while !control.stop.load(Ordering::Relaxed) {
            let now_us = self.now_us();
            if control.draining.load(Ordering::Relaxed) && now_us >= next_drain_sweep_us {
                self.draining = true;
                next_drain_sweep_us = now_us + DRAIN_SWEEP_US;
                // The control thread stops every worker once none has a
                // connection left; until then this one keeps polling (its
                // queues may carry frames of other workers' flows).
                self.drain_sweep(now_us);
            }
            let mut work = 0;
            for p in 0..self.ports.len() {
                let n = self.ports[p].rx.rx_burst(&mut rx);
                work += n;
                self.counters.add(Counter::RxFrames, n as u64);
                for m in rx.drain() {
                    self.counters.add(Counter::RxBytes, m.data().len() as u64);
                    self.on_frame(p, m, false, now_us);
                }
            }
            work += self.take_handoffs(now_us);
            work += self.run_timers(now_us);
            self.time_wait.expire(now_us);
            if now_us >= next_health_us && !self.draining {
                next_health_us = now_us + HEALTH_TICK_US;
                self.launch_probes(now_us);
            }
            if now_us >= next_arp_us {
                next_arp_us = now_us + ARP_REFRESH_US;
                self.resolve_upstream_next_hops();
            }
            let tsc = rdtsc();
            for port in &mut self.ports {
                port.tx.flush_if_due(tsc, work == 0);
            }
            if work == 0 {
                idle_polls += 1;
                if self.idle_sleep_us > 0 && idle_polls >= IDLE_POLLS_BEFORE_SLEEP {
                    std::thread::sleep(std::time::Duration::from_micros(self.idle_sleep_us));
                }
            } else {
                idle_polls = 0;
            }
            let cycles = tsc.wrapping_sub(last_tsc);
            last_tsc = tsc;
            self.counters.add(Counter::TotalCycles, cycles);
            if work > 0 {
                self.counters.add(Counter::BusyCycles, cycles);
            }
            if now_us - last_publish_us >= PUBLISH_US {
                last_publish_us = now_us;
                self.publish();
                if let Some(reload) = control.reload[self.index].pop() {
                    self.apply_reload(reload, now_us);
                }
            }
        }
        self.reset_all(self.now_us());
        for port in &mut self.ports {
            port.tx.drain(SHUTDOWN_DRAIN);
        }
        self.publish();
    }

    /// At exit: a RST for every open connection, as the kernel sends when a
    /// process dies, so no peer keeps a connection we forgot (an upstream's
    /// idle keep-alive connection would otherwise meet our next SYN).
    fn reset_all(&mut self, now_us: u64) {
        for slot in 0..self.flows.capacity() as u32 {
            if self.flows.key(slot).is_some() {
                self.flows.get_mut(slot).socket().abort();
                self.finish(slot, now_us);
            }
        }
    }

    fn now_us(&self) -> u64 {
        CLOCK_ORIGIN_US + rdtsc().wrapping_sub(self.tsc_origin) / self.tsc_per_us
    }

    fn publish(&mut self) {
        self.counters
            .set(Counter::FlowsActive, self.flows.active() as u64);
        self.counters
            .set(Counter::TimeWaitEntries, self.time_wait.len() as u64);
        self.counters.set(
            Counter::TxFrames,
            self.ports.iter().map(|p| p.tx.sent).sum(),
        );
        self.counters.set(
            Counter::TxDropped,
            self.ports.iter().map(|p| p.tx.dropped).sum(),
        );
        self.counters.set(
            Counter::TxBytes,
            self.ports.iter().map(|p| p.tx.sent_bytes).sum(),
        );
        self.counters.set(
            Counter::UpstreamPooled,
            self.groups
                .iter()
                .flat_map(|g| &g.pools)
                .map(|p| p.len() as u64)
                .sum(),
        );
        self.shared.publish(&self.counters);
        // Never wait on the control thread: skip this round if it is reading.
        if let Ok(mut stats) = self.upstream_stats.try_lock() {
            stats.clear();
            for g in &self.groups {
                for s in &g.spec.balancer.servers {
                    stats.push(UpstreamStat {
                        group: g.spec.name.clone(),
                        server: s.address,
                        requests: s.requests,
                        connect_failures: s.failures,
                        active: s.active,
                        healthy: s.healthy,
                        retired: s.retired,
                        response_us_sum: s.response_us_sum,
                        responses: s.responses,
                    });
                }
            }
        }
    }

    /// A frame from this worker's own rx queue (`handed` false) or from
    /// another worker's (`handed` true: it is ours or no one's; never pass it on).
    fn on_frame(&mut self, port: usize, m: Mbuf, handed: bool, now_us: u64) {
        let p = &self.ports[port];
        let frame = if m.is_chained() {
            Frame::Drop(Counter::DropMalformed)
        } else if p.rx_checksum_offload && checksum_bad(m.ol_flags()) {
            Frame::Drop(Counter::DropChecksum)
        } else {
            classify(m.data(), p.ip)
        };
        match frame {
            Frame::Tcp {
                key,
                syn,
                ack,
                src_mac,
            } => {
                // Under a SYN flood (cookies) sources are not trusted yet.
                if syn && !ack && self.half_open < self.syn_backlog {
                    self.glean_neighbour(port, key.remote_ip, src_mac, now_us);
                }
                self.on_tcp(port, m, key, syn && !ack, handed, now_us)
            }
            Frame::Arp => {
                if !handed {
                    self.copy_to_other_workers(port, &m);
                }
                self.answer_stateless(port, m, now_us);
                self.wake_connecting(now_us);
            }
            Frame::Stateless => self.answer_stateless(port, m, now_us),
            Frame::Drop(reason) => self.counters.add(reason, 1),
        }
    }

    fn on_tcp(
        &mut self,
        port: usize,
        m: Mbuf,
        key: FlowKey,
        pure_syn: bool,
        handed: bool,
        now_us: u64,
    ) {
        if let Some(slot) = self.flows.lookup(&key) {
            self.ingress(slot, m, now_us);
            self.after_activity(slot, now_us);
            return;
        }
        if !handed && self.inboxes.len() > 1 {
            let owner = self.owner(port, &key);
            if owner != self.index {
                return self.hand_off(owner, port, m, false);
            }
        }
        if !pure_syn {
            if self.time_wait.contains(&key) {
                // A late segment of a closed connection: not worth a RST.
                self.counters.add(Counter::DropTimeWait, 1);
                self.ack_again_in_time_wait(port, m, key);
            } else if let Some(m) = self.open_from_cookie(port, m, key, now_us) {
                self.answer_stateless(port, m, now_us); // RST
            }
            return;
        }
        let listener = self
            .listeners
            .iter()
            .position(|l| l.port_index == port && l.tcp_port == key.local_port);
        if listener.is_some_and(|l| !self.listeners[l].allows(key.remote_ip)) {
            self.counters.add(Counter::RefusedAcl, 1);
            return self.answer_stateless(port, m, now_us); // RST: not an allowed client network
        }
        if let Some(l) = listener {
            let max = self.listeners[l].max_per_source;
            if max > 0
                && self
                    .per_source
                    .get(&key.remote_ip)
                    .is_some_and(|&n| n >= max)
            {
                self.counters.add(Counter::RefusedPerSource, 1);
                return self.answer_stateless(port, m, now_us); // RST: this address holds enough
            }
        }
        let Some(listener) = listener.filter(|_| !self.draining) else {
            return self.answer_stateless(port, m, now_us); // RST: closed port, or shutting down
        };
        if self.half_open >= self.syn_backlog {
            return self.send_cookie(port, m, key, now_us);
        }
        let Some(slot) = self.accept(port, key, listener, now_us) else {
            return self.answer_stateless(port, m, now_us); // RST: every slot is in use
        };
        let flow = self.flows.get_mut(slot);
        flow.half_open = true;
        self.half_open += 1;
        self.ingress(slot, m, now_us);
        self.after_activity(slot, now_us);
    }

    /// Free slots beyond those promised to proxied clients that have no
    /// upstream yet; negative after an upstream went back to its pool or
    /// began closing while slots were short.
    fn spare_slots(&self) -> isize {
        self.flows.free() as isize - self.proxied_clients as isize + self.linked as isize
    }

    /// A flow for a new connection to `listener`, its socket listening for
    /// the SYN; `None` (counted) when no slot is spare. A proxied client
    /// needs two: its own and one for its upstream, so a table full of
    /// clients still lets each of them reach an upstream.
    fn accept(&mut self, port: usize, key: FlowKey, listener: usize, now_us: u64) -> Option<u32> {
        let proxied = !matches!(self.listeners[listener].app, ListenerApp::Static(_));
        let needed = if proxied { 2 } else { 1 };
        while self.spare_slots() < needed && self.evict_pooled(now_us) {}
        if self.spare_slots() < needed {
            // Refuse with a RST rather than hold state.
            self.counters.add(Counter::FlowsRefused, 1);
            return None;
        }
        self.time_wait.remove(&key);
        let slot = self.flows.insert(key).expect("a spare slot is free");
        self.counters.add(Counter::FlowsAccepted, 1);
        if proxied {
            self.proxied_clients += 1;
        }
        if self.listeners[listener].max_per_source > 0 {
            *self.per_source.entry(key.remote_ip).or_insert(0) += 1;
        }
        let l = &self.listeners[listener];
        let app = match &l.app {
            ListenerApp::Static(_) => FlowApp::Static(ResponderState::new(l.header_timeout_us)),
            ListenerApp::Tcp { group } => FlowApp::Client(Session::new(
                Mode::Tcp,
                key.remote_ip,
                *group,
                self.groups[*group].spec.read_timeout_us,
                0,
            )),
            ListenerApp::Http(_) => FlowApp::Client(Session::new(
                Mode::Http,
                key.remote_ip,
                0,
                0,
                l.header_timeout_us,
            )),
        };
        let flow = self.flows.get_mut(slot);
        flow.port = port;
        flow.listener = listener;
        flow.app = app;
        flow.peer = None;
        flow.last_rx_us = now_us;
        flow.idle_timeout_us = l.idle_timeout_us;
        flow.seq_delta = 0;
        flow.half_open = false;
        let sock = flow.socket();
        sock.listen(key.local_port)
            .expect("a released slot's socket is closed");
        sock.set_nagle_enabled(false);
        // Resending unacknowledged data for longer than this is pointless.
        sock.set_timeout(Some(Duration::from_micros(l.idle_timeout_us)));
        Some(slot)
    }

    /// Under a SYN flood: answers a SYN with a SYN-ACK whose sequence number
    /// is a cookie, and keeps nothing.
    fn send_cookie(&mut self, port: usize, m: Mbuf, key: FlowKey, now_us: u64) {
        let Some(syn) = segment::parse(m.data()) else {
            return self.counters.add(Counter::DropMalformed, 1);
        };
        drop(m);
        let p = &mut self.ports[port];
        let our_mss = (p.caps.max_transmission_unit - 14 - 40) as u16;
        let client_mss = syn.mss.unwrap_or(536).min(our_mss);
        let reply = segment::Build {
            src_mac: p.mac,
            dst_mac: syn.src_mac,
            src: (key.local_ip, key.local_port),
            dst: (key.remote_ip, key.remote_port),
            syn: true,
            seq: self.cookies.make(&key, syn.seq, client_mss, now_us),
            ack: Some(syn.seq.wrapping_add(1)),
            window: self.cookie_window,
            mss: Some(our_mss),
        };
        send_frame(p, reply.frame_len(), |buf| reply.emit(buf));
        self.cookies_valid_until_us = now_us + CookieJar::lifetime_us();
        self.counters.add(Counter::SynCookiesSent, 1);
    }

    /// A FIN again in TIME-WAIT: our last ACK was lost, and the peer waits
    /// in LAST-ACK until one arrives (RFC 9293 3.10.7.4). The segment has
    /// all it takes: its ACK field is our next sequence number.
    fn ack_again_in_time_wait(&mut self, port: usize, m: Mbuf, key: FlowKey) {
        let Some(fin) =
            segment::parse(m.data()).filter(|s| s.fin && s.ack_flag && !s.syn && !s.rst)
        else {
            return;
        };
        drop(m);
        let p = &mut self.ports[port];
        let ack = segment::Build {
            src_mac: p.mac,
            dst_mac: fin.src_mac,
            src: (key.local_ip, key.local_port),
            dst: (key.remote_ip, key.remote_port),
            syn: false,
            seq: fin.ack,
            ack: Some(fin.seq.wrapping_add(fin.payload_len).wrapping_add(1)),
            window: self.cookie_window,
            mss: None,
        };
        send_frame(p, ack.frame_len(), |buf| ack.emit(buf));
        self.counters.add(Counter::TimeWaitAcks, 1);
    }

    /// An ACK for no flow: when it carries a cookie this worker sent, opens
    /// the connection it completes (replaying the handshake into a fresh
    /// socket); otherwise gives the frame back, to be answered with a RST.
    fn open_from_cookie(
        &mut self,
        port: usize,
        m: Mbuf,
        key: FlowKey,
        now_us: u64,
    ) -> Option<Mbuf> {
        if now_us >= self.cookies_valid_until_us {
            return Some(m);
        }
        let Some(seg) = segment::parse(m.data()).filter(|s| s.ack_flag && !s.syn && !s.rst) else {
            return Some(m);
        };
        let client_isn = seg.seq.wrapping_sub(1);
        let cookie = seg.ack.wrapping_sub(1);
        let Some(mss) = self.cookies.check(&key, client_isn, cookie, now_us) else {
            return Some(m);
        };
        let Some(listener) = self.listeners.iter().position(|l| {
            l.port_index == port && l.tcp_port == key.local_port && l.allows(key.remote_ip)
        }) else {
            return Some(m);
        };
        if self.draining {
            return Some(m);
        }
        let Some(slot) = self.accept(port, key, listener, now_us) else {
            return Some(m);
        };
        // The client proved its address: smoltcp may send to it straight away.
        self.glean_neighbour(port, key.remote_ip, seg.src_mac, now_us);
        let p = &self.ports[port];
        let syn = segment::Build {
            src_mac: seg.src_mac,
            dst_mac: p.mac,
            src: (key.remote_ip, key.remote_port),
            dst: (key.local_ip, key.local_port),
            syn: true,
            seq: client_isn,
            ack: None,
            window: seg.window,
            mss: Some(mss),
        };
        let established = self.ingress_built(slot, &syn, now_us).is_some()
            && self.capture_syn_ack(slot, now_us).is_some_and(|isn| {
                let ack = segment::Build {
                    syn: false,
                    seq: seg.seq,
                    ack: Some(isn.wrapping_add(1)),
                    mss: None,
                    ..syn
                };
                self.ingress_built(slot, &ack, now_us).is_some() && {
                    let flow = self.flows.get_mut(slot);
                    flow.seq_delta = cookie.wrapping_sub(isn);
                    flow.socket().state() == tcp::State::Established
                }
            });
        if !established {
            self.release(slot, tcp::State::Closed, now_us);
            return Some(m);
        }
        self.counters.add(Counter::SynCookiesAccepted, 1);
        self.ingress(slot, m, now_us); // the client's ACK, perhaps with its request
        self.after_activity(slot, now_us);
        None
    }

    /// Feeds a segment built here to `slot`'s socket.
    fn ingress_built(&mut self, slot: u32, segment: &segment::Build, now_us: u64) -> Option<()> {
        let mut m = self.pool.alloc()?;
        segment.emit(m.append(segment.frame_len())?);
        self.ingress(slot, m, now_us);
        Some(())
    }

    /// Lets `slot`'s socket send its SYN-ACK into the capture queue and
    /// returns the ISN it chose; nothing reaches the wire.
    fn capture_syn_ack(&mut self, slot: u32, now_us: u64) -> Option<u32> {
        let flow = self.flows.get_mut(slot);
        let p = &mut self.ports[flow.port];
        let mut dev = FrameDevice {
            rx: None,
            tx: &mut p.capture,
            caps: &p.caps,
            seq_delta: 0,
        };
        p.iface
            .poll_egress(instant(now_us), &mut dev, &mut flow.sockets);
        p.capture
            .take_pending()
            .filter_map(|m| segment::parse(m.data()))
            .find(|s| s.syn && s.ack_flag)
            .map(|s| s.seq)
    }

    /// Hands a frame to the flow's own socket set.
    fn ingress(&mut self, slot: u32, mut m: Mbuf, now_us: u64) {
        let flow = self.flows.get_mut(slot);
        flow.last_rx_us = now_us;
        if flow.seq_delta != 0 {
            segment::shift_ack(m.data_mut(), flow.seq_delta);
        }
        let p = &mut self.ports[flow.port];
        let mut dev = FrameDevice {
            rx: Some(m),
            tx: &mut p.tx,
            caps: &p.caps,
            seq_delta: flow.seq_delta,
        };
        p.iface
            .poll_ingress_single(instant(now_us), &mut dev, &mut flow.sockets);
    }

    /// The worker that owns `key`'s flow: the one polling the queue RSS
    /// puts it on. Upstream local ports are chosen so that replies come back
    /// to the worker that connected (`free_local_port`); where the device
    /// spreads frames otherwise (veth), they are handed over.
    fn owner(&self, port: usize, key: &FlowKey) -> usize {
        usize::from(self.ports[port].steering.queue(
            key.remote_ip,
            key.local_ip,
            key.remote_port,
            key.local_port,
        ))
    }

    fn hand_off(&mut self, owner: usize, port: usize, mbuf: Mbuf, arp_copy: bool) {
        match self.inboxes[owner].push(Handoff {
            port,
            mbuf,
            arp_copy,
        }) {
            Ok(()) => self.counters.add(Counter::HandoffsOut, 1),
            // Full: the frame is dropped (freed with the rejected Handoff); TCP resends.
            Err(_) => self.counters.add(Counter::HandoffDrops, 1),
        }
    }

    /// Every worker keeps its own neighbour cache: give each a copy of ARP.
    fn copy_to_other_workers(&mut self, port: usize, m: &Mbuf) {
        let me = self.index;
        for owner in (0..self.inboxes.len()).filter(|&w| w != me) {
            let Some(mut copy) = self.pool.alloc() else {
                return;
            };
            let Some(buf) = copy.append(m.data().len()) else {
                return;
            };
            buf.copy_from_slice(m.data());
            self.hand_off(owner, port, copy, true);
        }
    }

    /// Frames other workers passed to this one.
    fn take_handoffs(&mut self, now_us: u64) -> usize {
        let mut taken = 0;
        while taken < HANDOFFS_PER_ITERATION {
            let Some(h) = self.inboxes[self.index].pop() else {
                break;
            };
            taken += 1;
            self.counters.add(Counter::HandoffsIn, 1);
            self.on_frame(h.port, h.mbuf, true, now_us);
        }
        taken
    }

    /// Lets smoltcp answer a frame that belongs to no flow.
    fn answer_stateless(&mut self, port: usize, m: Mbuf, now_us: u64) {
        let p = &mut self.ports[port];
        let mut dev = FrameDevice {
            rx: Some(m),
            tx: &mut p.tx,
            caps: &p.caps,
            seq_delta: 0,
        };
        p.iface
            .poll_ingress_single(instant(now_us), &mut dev, &mut self.no_sockets);
    }

    /// After a frame or a timer on `slot`: run the application of the
    /// connection it belongs to, then transmit and re-arm or release.
    fn after_activity(&mut self, slot: u32, now_us: u64) {
        let flow = self.flows.get_mut(slot);
        let root = match flow.app {
            FlowApp::Upstream { .. } => flow.peer.unwrap_or(slot),
            _ => slot,
        };
        if self.idle_expired(slot, now_us) {
            self.counters.add(Counter::FlowsTimedOut, 1);
            self.flows.get_mut(slot).socket().abort();
        }
        let flow = self.flows.get_mut(root);
        match &mut flow.app {
            FlowApp::Static(state) => {
                let ListenerApp::Static(responder) = &self.listeners[flow.listener].app else {
                    unreachable!("static flows come from static listeners")
                };
                let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
                let served = if state.deadline_us().is_some_and(|d| now_us >= d) {
                    responder.timed_out(state, sock)
                } else {
                    responder.serve(state, sock, &mut self.scratch, now_us)
                };
                self.counters
                    .add(Counter::Requests, u64::from(served.requests));
                self.counters
                    .add(Counter::BadRequests, u64::from(served.bad_requests));
            }
            FlowApp::Client(_) => self.drive_session(root, now_us),
            FlowApp::Upstream { .. } => self.check_pooled(root, now_us),
            FlowApp::Probe { .. } => self.advance_probe(root, now_us),
        }
        let peer = self.flows.get_mut(root).peer;
        self.finish(root, now_us);
        if let Some(p) = peer {
            self.finish(p, now_us);
        }
        if slot != root && Some(slot) != peer {
            self.finish(slot, now_us); // detached from its client meanwhile
        }
    }

    fn idle_expired(&mut self, slot: u32, now_us: u64) -> bool {
        let flow = self.flows.get_mut(slot);
        let limit = flow.last_rx_us + flow.idle_timeout_us;
        now_us >= limit && flow.socket().is_open()
    }

    /// Runs a proxy session until it needs nothing more from the worker.
    fn drive_session(&mut self, c: u32, now_us: u64) {
        let step = self.session_step(c, now_us);
        self.apply_step(c, step, now_us);
    }

    /// Does what the session asked, and lets it go on, until it waits.
    fn apply_step(&mut self, c: u32, mut step: Step, now_us: u64) {
        // Each round changes the upstream attachment; a session needs few.
        for _ in 0..8 {
            match step {
                Step::Idle => return,
                Step::NeedUpstream { group } => {
                    if !self.attach_upstream(c, group, now_us) {
                        self.counters.add(Counter::NoUpstream, 1);
                        let flow = self.flows.get_mut(c);
                        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
                        let FlowApp::Client(session) = &mut flow.app else {
                            unreachable!()
                        };
                        session.no_upstream(sock);
                        let errors = session.take_errors();
                        self.counters.add(Counter::ProxyErrors, u64::from(errors));
                        return;
                    }
                }
                Step::ReleaseUpstream { reusable } => self.detach_upstream(c, reusable, now_us),
            }
            step = self.session_step(c, now_us);
        }
    }

    /// One call into the session with both sockets.
    fn session_step(&mut self, c: u32, now_us: u64) -> Step {
        let peer = self.flows.get_mut(c).peer;
        let (cf, mut uf) = match peer {
            Some(u) => {
                let (cf, uf) = self.flows.pair_mut(c, u);
                (cf, Some(uf))
            }
            None => (self.flows.get_mut(c), None),
        };
        let FlowApp::Client(session) = &mut cf.app else {
            unreachable!("sessions live on client flows")
        };
        let csock = cf.sockets.get_mut::<tcp::Socket>(cf.handle);
        let usock = uf
            .as_mut()
            .map(|f| f.sockets.get_mut::<tcp::Socket>(f.handle));
        let requests_before = session.requests;
        let step = if session.deadline_us().is_some_and(|d| now_us >= d) {
            session.timed_out(csock, usock)
        } else {
            let routes = match &self.listeners[cf.listener].app {
                ListenerApp::Http(routes) => Some(&**routes),
                _ => None,
            };
            session.drive(csock, usock, routes, &mut self.scratch, now_us)
        };
        self.counters
            .add(Counter::ProxyErrors, u64::from(session.take_errors()));
        self.counters.add(
            Counter::Requests,
            u64::from(session.requests - requests_before),
        );
        if let (Some(us), Some(uf)) = (session.take_response_time(), uf) {
            if let FlowApp::Upstream { group, server, .. } = uf.app {
                let s = &mut self.groups[group].spec.balancer.servers[server];
                s.response_us_sum += us;
                s.responses += 1;
            }
        }
        step
    }

    /// Gives client flow `c` an upstream connection of `group`: an idle one
    /// from the pool, or a new connect. False when none can be had.
    fn attach_upstream(&mut self, c: u32, group: usize, now_us: u64) -> bool {
        let FlowApp::Client(session) = &mut self.flows.get_mut(c).app else {
            unreachable!()
        };
        let (client_ip, tried) = (session.client_ip, session.tried);
        let Some(server) = self.groups[group]
            .spec
            .balancer
            .pick(client_ip, now_us, tried)
        else {
            return false;
        };
        // Reuse an idle connection when one is still good.
        let mut reused = None;
        while let Some(u) = self.groups[group].pools[server].pop() {
            let flow = self.flows.get_mut(u);
            let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
            if sock.state() == tcp::State::Established && sock.recv_queue() == 0 && sock.may_send()
            {
                reused = Some(u);
                self.counters.add(Counter::UpstreamReused, 1);
                break;
            }
            sock.abort();
            self.finish(u, now_us);
        }
        let connect_timeout_us = self.groups[group].spec.connect_timeout_us;
        // No local port or slot is this worker's shortage, not the server's
        // failure: the server stays untried (503, not 502).
        let Some(u) = reused.or_else(|| self.connect(group, server, connect_timeout_us, now_us))
        else {
            return false;
        };
        let FlowApp::Client(session) = &mut self.flows.get_mut(c).app else {
            unreachable!()
        };
        session.tried |= 1 << (server % 64);
        session.set_read_timeout_us(self.groups[group].spec.read_timeout_us);
        self.groups[group].spec.balancer.servers[server].requests += 1;
        self.link(c, u, group, server);
        true
    }

    /// Opens a connection to a server of `group` from a free local port;
    /// the new upstream flow, or `None` when no port or slot is free.
    fn connect(
        &mut self,
        group: usize,
        server: usize,
        timeout_us: u64,
        now_us: u64,
    ) -> Option<u32> {
        let g = &self.groups[group];
        let port_index = g.spec.port_index;
        let read_timeout_us = g.spec.read_timeout_us;
        let local_ip = self.ports[port_index].ip;
        let server_addr = g.spec.balancer.servers[server].address;
        let local_port =
            self.free_local_port(group, *server_addr.ip(), server_addr.port(), local_ip)?;
        let key = FlowKey {
            remote_ip: *server_addr.ip(),
            remote_port: server_addr.port(),
            local_ip,
            local_port,
        };
        let Some(u) = self.flows.insert(key) else {
            self.counters.add(Counter::FlowsRefused, 1);
            return None;
        };
        let p = &mut self.ports[port_index];
        let flow = self.flows.get_mut(u);
        flow.port = port_index;
        flow.app = FlowApp::Upstream {
            group,
            server,
            connecting: true,
        };
        flow.peer = None;
        flow.last_rx_us = now_us;
        flow.idle_timeout_us = read_timeout_us.max(timeout_us);
        flow.seq_delta = 0;
        flow.half_open = false;
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        sock.set_nagle_enabled(false);
        sock.set_timeout(Some(Duration::from_micros(timeout_us)));
        if let Err(e) = sock.connect(
            p.iface.context(),
            (*server_addr.ip(), server_addr.port()),
            local_port,
        ) {
            log::warn!("connect to {server_addr} from port {local_port}: {e}");
            self.flows.remove(u);
            return None;
        }
        self.counters.add(Counter::UpstreamConnects, 1);
        if self.connecting.len() == self.connecting.capacity() {
            let flows = &mut self.flows;
            self.connecting.retain(|&s| {
                flows.key(s).is_some()
                    && matches!(
                        flows.get_mut(s).app,
                        FlowApp::Upstream {
                            connecting: true,
                            ..
                        }
                    )
            });
        }
        self.connecting.push(u);
        Some(u)
    }

    fn link(&mut self, c: u32, u: u32, group: usize, server: usize) {
        self.flows.get_mut(c).peer = Some(u);
        self.flows.get_mut(u).peer = Some(c);
        self.linked += 1;
        self.groups[group].spec.balancer.servers[server].active += 1;
    }

    /// Cuts the link between a client flow and its upstream; returns the upstream.
    fn unlink(&mut self, c: u32) -> Option<u32> {
        let u = self.flows.get_mut(c).peer.take()?;
        self.linked -= 1;
        let flow = self.flows.get_mut(u);
        flow.peer = None;
        if let FlowApp::Upstream { group, server, .. } = flow.app {
            let s = &mut self.groups[group].spec.balancer.servers[server];
            s.active = s.active.saturating_sub(1);
        }
        Some(u)
    }

    /// The session is done with its upstream: pool it or close it.
    fn detach_upstream(&mut self, c: u32, reusable: bool, now_us: u64) {
        let Some(u) = self.unlink(c) else { return };
        // Its client is promised a slot again: when none is spare, this
        // connection gives its own back at once.
        let short = self.spare_slots() < 0;
        let flow = self.flows.get_mut(u);
        let FlowApp::Upstream { group, server, .. } = flow.app else {
            unreachable!("peers of clients are upstreams")
        };
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        let keepalive = self.groups[group].spec.keepalive;
        let retired = self.groups[group].spec.balancer.servers[server].retired;
        let pool = &mut self.groups[group].pools[server];
        if reusable
            && !retired
            && !short
            && sock.state() == tcp::State::Established
            && pool.len() < keepalive
        {
            flow.idle_timeout_us = POOL_IDLE_US;
            flow.last_rx_us = now_us;
            pool.push(u);
        } else if sock.state() == tcp::State::Established && !short {
            sock.close();
        } else {
            sock.abort();
        }
        self.finish(u, now_us);
    }

    /// An idle pooled upstream got a frame: anything but a quiet open
    /// connection (FIN, RST, unexpected bytes) means it cannot be reused.
    fn check_pooled(&mut self, u: u32, _now_us: u64) {
        let flow = self.flows.get_mut(u);
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        if sock.state() != tcp::State::Established || sock.recv_queue() > 0 {
            if sock.may_send() {
                sock.close();
            } else {
                sock.abort();
            }
            self.remove_from_pool(u);
        }
    }

    /// Closes one idle pooled upstream to free its slot; false when every pool is empty.
    fn evict_pooled(&mut self, now_us: u64) -> bool {
        let Some(u) = self
            .groups
            .iter_mut()
            .find_map(|g| g.pools.iter_mut().find_map(|p| p.pop()))
        else {
            return false;
        };
        self.flows.get_mut(u).socket().abort();
        self.finish(u, now_us);
        true
    }

    fn remove_from_pool(&mut self, u: u32) {
        if let FlowApp::Upstream { group, server, .. } = self.flows.get_mut(u).app {
            let pool = &mut self.groups[group].pools[server];
            if let Some(i) = pool.iter().position(|&s| s == u) {
                pool.swap_remove(i);
            }
        }
    }

    /// A local port for a new connection to server:port, whose 4-tuple is
    /// neither open nor in TIME-WAIT.
    fn free_local_port(
        &mut self,
        group: usize,
        server_ip: Ipv4Addr,
        server_port: u16,
        local_ip: Ipv4Addr,
    ) -> Option<u16> {
        let g = &mut self.groups[group];
        let (lo, hi) = g.spec.local_ports;
        let steering = &self.ports[g.spec.port_index].steering;
        for _ in 0..LOCAL_PORT_TRIES {
            // A port whose replies RSS puts on this worker's queue.
            let port = steering.steered_port(
                (server_ip, server_port),
                local_ip,
                (lo, hi),
                g.next_local_port,
                self.index as u16,
            )?;
            g.next_local_port = if port >= hi { lo } else { port + 1 };
            let key = FlowKey {
                remote_ip: server_ip,
                remote_port: server_port,
                local_ip,
                local_port: port,
            };
            if self.flows.lookup(&key).is_none() && !self.time_wait.contains(&key) {
                return Some(port);
            }
        }
        None
    }

    /// Transmits what `slot` has to send, then releases it or arms its timer.
    fn finish(&mut self, slot: u32, now_us: u64) {
        if self.flows.key(slot).is_none() {
            return; // released meanwhile
        }
        let flow = self.flows.get_mut(slot);
        let p = &mut self.ports[flow.port];
        let mut dev = FrameDevice {
            rx: None,
            tx: &mut p.tx,
            caps: &p.caps,
            seq_delta: flow.seq_delta,
        };
        for _ in 0..EGRESS_ROUNDS {
            if p.iface
                .poll_egress(instant(now_us), &mut dev, &mut flow.sockets)
                == PollResult::None
            {
                break;
            }
        }
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        let state = sock.state();
        if flow.half_open && !matches!(state, tcp::State::Listen | tcp::State::SynReceived) {
            flow.half_open = false;
            self.half_open -= 1;
        }
        if let FlowApp::Upstream {
            group,
            server,
            connecting: connecting @ true,
        } = &mut flow.app
        {
            if state == tcp::State::Established {
                *connecting = false;
                sock.set_timeout(Some(Duration::from_micros(
                    self.groups[*group].spec.read_timeout_us,
                )));
                self.groups[*group].spec.balancer.connected(*server);
            }
        }
        // A closed upstream keeps its slot while its client still has to relay what it received.
        let unread = flow.peer.is_some() && state == tcp::State::TimeWait && sock.recv_queue() > 0;
        match state {
            tcp::State::TimeWait | tcp::State::Closed | tcp::State::Listen if !unread => {
                self.release(slot, state, now_us)
            }
            _ => {
                let mut deadline = flow.last_rx_us + flow.idle_timeout_us;
                if let Some(at) = p.iface.poll_at(instant(now_us), &flow.sockets) {
                    deadline = deadline.min(at.total_micros().max(0) as u64);
                }
                let app_deadline = match &flow.app {
                    FlowApp::Client(session) => session.deadline_us(),
                    FlowApp::Static(state) => state.deadline_us(),
                    _ => None,
                };
                if let Some(d) = app_deadline {
                    deadline = deadline.min(d);
                }
                self.timers.set(slot, deadline);
            }
        }
    }

    /// Frees a closed flow's slot and tells its peer.
    fn release(&mut self, slot: u32, state: tcp::State, now_us: u64) {
        let key = self.flows.key(slot).expect("live slot has a key");
        let flow = self.flows.get_mut(slot);
        if flow.half_open {
            flow.half_open = false;
            self.half_open -= 1;
        }
        // A socket still listening (its SYN was refused, e.g. a bad checksum)
        // or mid-handshake must be closed before its slot serves again.
        let sock = flow.socket();
        if sock.is_open() {
            sock.abort();
        }
        // Back into its set afresh: the set also forgets a neighbour the last
        // connection was waiting for (which would hold the next one's SYN-ACK).
        let sock = flow.sockets.remove(flow.handle);
        flow.handle = flow.sockets.add(sock);
        let accepted = matches!(flow.app, FlowApp::Client(_) | FlowApp::Static(_));
        if accepted && self.listeners[flow.listener].max_per_source > 0 {
            if let Some(n) = self.per_source.get_mut(&key.remote_ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&key.remote_ip);
                }
            }
        }
        if state == tcp::State::TimeWait {
            self.time_wait.insert(key, now_us);
        }
        self.timers.remove(slot);
        self.counters.add(Counter::FlowsClosed, 1);
        match self.flows.get_mut(slot).app {
            FlowApp::Client(_) => {
                self.proxied_clients -= 1;
                if let Some(u) = self.unlink(slot) {
                    // The client is gone: its upstream exchange cannot finish
                    // (and an unfinished connect is not the server's failure).
                    let flow = self.flows.get_mut(u);
                    if let FlowApp::Upstream { connecting, .. } = &mut flow.app {
                        *connecting = false;
                    }
                    let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
                    if sock.may_send() || sock.may_recv() {
                        sock.abort();
                    }
                    self.flows.remove(slot);
                    self.finish(u, now_us);
                    return;
                }
            }
            FlowApp::Upstream {
                group,
                server,
                connecting,
            } => {
                if connecting {
                    self.counters.add(Counter::UpstreamConnectFailures, 1);
                    self.groups[group]
                        .spec
                        .balancer
                        .connect_failed(server, now_us);
                }
                self.remove_from_pool(slot);
                let peer = self.flows.get_mut(slot).peer;
                if let Some(c) = peer {
                    self.unlink(c);
                    self.flows.remove(slot);
                    let flow = self.flows.get_mut(c);
                    let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
                    let FlowApp::Client(session) = &mut flow.app else {
                        unreachable!()
                    };
                    let graceful = state == tcp::State::TimeWait && session.mode == Mode::Tcp;
                    if !graceful {
                        // A failed connect is retried on another server (the request was not sent).
                        let step = session.upstream_lost(sock, connecting);
                        let errors = session.take_errors();
                        self.counters.add(Counter::ProxyErrors, u64::from(errors));
                        self.apply_step(c, step, now_us);
                    }
                    self.finish(c, now_us);
                    return;
                }
            }
            FlowApp::Probe {
                group,
                server,
                decided: false,
                ..
            } => self.probe_result(group, server, false),
            FlowApp::Static(_) | FlowApp::Probe { .. } => {}
        }
        self.flows.remove(slot);
    }

    /// Starts the health probes that are due.
    fn launch_probes(&mut self, now_us: u64) {
        for g in 0..self.groups.len() {
            let Some(check) = self.groups[g].spec.health.clone() else {
                continue;
            };
            for s in 0..self.groups[g].health.len() {
                let h = &self.groups[g].health[s];
                if h.probing
                    || now_us < h.next_probe_us
                    || self.groups[g].spec.balancer.servers[s].retired
                {
                    continue;
                }
                self.groups[g].health[s].next_probe_us = now_us + check.interval_us;
                if self.spare_slots() < 1 {
                    continue; // clients' upstreams come first; probe next interval
                }
                if let Some(slot) = self.connect(g, s, check.timeout_us, now_us) {
                    let flow = self.flows.get_mut(slot);
                    flow.app = FlowApp::Probe {
                        group: g,
                        server: s,
                        sent: false,
                        decided: false,
                    };
                    flow.idle_timeout_us = check.timeout_us;
                    self.groups[g].health[s].probing = true;
                    self.finish(slot, now_us);
                }
            }
        }
    }

    fn advance_probe(&mut self, slot: u32, _now_us: u64) {
        let flow = self.flows.get_mut(slot);
        let FlowApp::Probe {
            group,
            server,
            sent,
            decided: decided @ false,
        } = &mut flow.app
        else {
            return;
        };
        let (g, s) = (*group, *server);
        let Some(check) = &self.groups[g].spec.health else {
            return;
        };
        let host = self.groups[g].spec.balancer.servers[s]
            .address
            .ip()
            .to_string();
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        if let Some(ok) = health::probe(check, sock, &host, sent, &mut self.scratch) {
            *decided = true;
            sock.abort(); // a probe needs no goodbye, and leaves no TIME-WAIT
            self.probe_result(g, s, ok);
        }
    }

    fn probe_result(&mut self, g: usize, s: usize, ok: bool) {
        let group = &mut self.groups[g];
        let Some(check) = &group.spec.health else {
            return;
        };
        let server = &mut group.spec.balancer.servers[s];
        if let Some(healthy) = group.health[s].record(ok, server.healthy, check) {
            server.healthy = healthy;
            if healthy {
                log::info!(
                    "upstream {}: health check passed {} times: back in rotation",
                    server.address,
                    check.rise
                );
            } else {
                log::warn!(
                    "upstream {}: health check failed {} times: out of rotation",
                    server.address,
                    check.fall
                );
            }
        }
    }

    /// Takes new groups and routes. Indices of existing groups and servers
    /// stay (open connections keep theirs); retired servers get no new
    /// requests and lose their idle pooled connections now.
    fn apply_reload(&mut self, reload: Reload, now_us: u64) {
        for (i, spec) in reload.groups.into_iter().enumerate() {
            match self.groups.get_mut(i) {
                Some(g) => {
                    g.spec.connect_timeout_us = spec.connect_timeout_us;
                    g.spec.read_timeout_us = spec.read_timeout_us;
                    g.spec.keepalive = spec.keepalive;
                    g.spec.local_ports = spec.local_ports;
                    g.spec.balancer.update(spec.balancer);
                    let n = g.spec.balancer.servers.len();
                    g.pools
                        .resize_with(n, || Vec::with_capacity(spec.keepalive));
                }
                None => self.groups.push(Group::new(spec)),
            }
        }
        for (listener, app) in self.listeners.iter_mut().zip(reload.listeners) {
            listener.app = app;
        }
        for g in 0..self.groups.len() {
            for s in 0..self.groups[g].pools.len() {
                if self.groups[g].spec.balancer.servers[s].retired {
                    for u in std::mem::take(&mut self.groups[g].pools[s]) {
                        self.flows.get_mut(u).socket().close();
                        self.finish(u, now_us);
                    }
                }
            }
        }
        log::info!(
            "worker: config reloaded ({} upstream groups)",
            self.groups.len()
        );
    }

    /// Closes what can be closed without cutting an exchange short.
    fn drain_sweep(&mut self, now_us: u64) {
        for slot in 0..self.flows.capacity() as u32 {
            if self.flows.key(slot).is_none() {
                continue;
            }
            let flow = self.flows.get_mut(slot);
            let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
            match &mut flow.app {
                FlowApp::Static(state) => {
                    let ListenerApp::Static(responder) = &self.listeners[flow.listener].app else {
                        unreachable!()
                    };
                    responder.drain(state, sock);
                }
                FlowApp::Client(session) => session.drain(sock),
                FlowApp::Upstream { .. } if flow.peer.is_none() => {
                    self.remove_from_pool(slot);
                    let flow = self.flows.get_mut(slot);
                    flow.sockets.get_mut::<tcp::Socket>(flow.handle).close();
                }
                FlowApp::Upstream { .. } | FlowApp::Probe { .. } => {}
            }
            self.finish(slot, now_us);
        }
    }

    /// An ARP answer arrived: upstream connects waiting for it can send their SYN now.
    fn wake_connecting(&mut self, now_us: u64) {
        let mut i = 0;
        while i < self.connecting.len() {
            let u = self.connecting[i];
            let still = self.flows.key(u).is_some()
                && matches!(
                    self.flows.get_mut(u).app,
                    FlowApp::Upstream {
                        connecting: true,
                        ..
                    }
                );
            if still {
                self.finish(u, now_us);
                i += 1;
            } else {
                self.connecting.swap_remove(i);
            }
        }
    }

    /// smoltcp learns neighbours only from ARP, so a SYN from a client it
    /// has not heard an ARP from would get its SYN-ACK a second late (after
    /// an ARP round and a retransmit). Hand it the MAC the SYN came from, as
    /// an ARP reply would, once per neighbour and `GLEAN_EVERY_US`.
    fn glean_neighbour(&mut self, port: usize, ip: Ipv4Addr, mac: EthernetAddress, now_us: u64) {
        let p = &mut self.ports[port];
        if !p.on_link(ip) || !mac.is_unicast() {
            return; // off-link clients come through the gateway, resolved by ARP
        }
        if p.gleaned
            .get(&ip)
            .is_some_and(|&at| now_us < at + GLEAN_EVERY_US)
        {
            return;
        }
        if p.gleaned.len() >= GLEANED_NEIGHBOURS {
            p.gleaned.clear();
        }
        p.gleaned.insert(ip, now_us);
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: p.mac,
            target_protocol_addr: p.ip,
        };
        let eth = EthernetRepr {
            src_addr: mac,
            dst_addr: p.mac,
            ethertype: EthernetProtocol::Arp,
        };
        let Some(mut m) = self.pool.alloc() else {
            return;
        };
        let Some(buf) = m.append(eth.buffer_len() + arp.buffer_len()) else {
            return;
        };
        let mut frame = EthernetFrame::new_unchecked(buf);
        eth.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        self.answer_stateless(port, m, now_us);
    }

    /// Asks for the MAC of every gateway and upstream server's next hop, so
    /// that connects and replies never wait on ARP (and entries never expire).
    fn resolve_upstream_next_hops(&mut self) {
        for p in &mut self.ports {
            if let Some(gw) = p.gateway {
                send_arp_request(p, gw);
            }
        }
        for g in 0..self.groups.len() {
            let port = self.groups[g].spec.port_index;
            for s in 0..self.groups[g].spec.balancer.servers.len() {
                let server = *self.groups[g].spec.balancer.servers[s].address.ip();
                let p = &mut self.ports[port];
                let Some(next_hop) = (if p.on_link(server) {
                    Some(server)
                } else {
                    p.gateway
                }) else {
                    continue;
                };
                send_arp_request(p, next_hop);
            }
        }
    }

    fn run_timers(&mut self, now_us: u64) -> usize {
        let mut done = 0;
        while done < TIMERS_PER_ITERATION {
            let Some(slot) = self.timers.pop_due(now_us) else {
                break;
            };
            self.after_activity(slot, now_us);
            done += 1;
        }
        done
    }

    /// Fuzzing hook (`fuzz/`; not used by the data path): `frame`, if any,
    /// is copied into an mbuf of the worker's pool and handled as if it had
    /// arrived on this worker's rx queue of `port` at `now_us`; then the
    /// timers due by `now_us` run, TIME-WAIT expires and every port's
    /// pending frames go to the driver, as one loop iteration would do.
    /// `now_us` must not go backwards. Returns how many flows are open.
    #[doc(hidden)]
    pub fn inject_frame(&mut self, port: usize, frame: Option<&[u8]>, now_us: u64) -> usize {
        if let Some(bytes) = frame {
            if let Some(mut m) = self.pool.alloc() {
                if let Some(buf) = m.append(bytes.len()) {
                    buf.copy_from_slice(bytes);
                    self.on_frame(port, m, false, now_us);
                }
            }
        }
        self.run_timers(now_us);
        self.time_wait.expire(now_us);
        for p in &mut self.ports {
            p.tx.flush();
        }
        self.flows.active()
    }
}

/// Broadcasts "who has `target`?" from this port.
fn send_arp_request(p: &mut PortState, target: Ipv4Addr) {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: p.mac,
        source_protocol_addr: p.ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let eth = EthernetRepr {
        src_addr: p.mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    send_frame(p, eth.buffer_len() + arp.buffer_len(), |buf| {
        let mut frame = EthernetFrame::new_unchecked(buf);
        eth.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    });
}

/// Sends a `len`-byte frame that `emit` writes, outside any flow.
fn send_frame(p: &mut PortState, len: usize, emit: impl FnOnce(&mut [u8])) {
    let mut dev = FrameDevice {
        rx: None,
        tx: &mut p.tx,
        caps: &p.caps,
        seq_delta: 0,
    };
    let token =
        smoltcp::phy::Device::transmit(&mut dev, Instant::from_micros(0)).expect("tx token");
    token.consume(len, emit);
}

fn instant(us: u64) -> Instant {
    Instant::from_micros(us as i64)
}

/// True when the NIC flagged the IP or L4 checksum bad.
fn checksum_bad(ol_flags: u64) -> bool {
    use zproxy_ffi::{
        RTE_MBUF_F_RX_IP_CKSUM_GOOD as IP_GOOD, RTE_MBUF_F_RX_IP_CKSUM_MASK as IP_MASK,
        RTE_MBUF_F_RX_L4_CKSUM_GOOD as L4_GOOD, RTE_MBUF_F_RX_L4_CKSUM_MASK as L4_MASK,
    };
    // "Unknown" (neither good nor bad) is left to smoltcp... which does not
    // verify when offload is on, so only GOOD passes.
    let ip = ol_flags & u64::from(IP_MASK);
    let l4 = ol_flags & u64::from(L4_MASK);
    ip != u64::from(IP_GOOD) || l4 != u64::from(L4_GOOD)
}

/// Decides what a frame is from its headers alone. After `new_checked`, no
/// accessor panics.
fn classify(data: &[u8], our_ip: Ipv4Addr) -> Frame {
    let Ok(eth) = EthernetFrame::new_checked(data) else {
        return Frame::Drop(Counter::DropMalformed);
    };
    match eth.ethertype() {
        EthernetProtocol::Ipv4 => {}
        EthernetProtocol::Arp => return Frame::Arp,
        _ => return Frame::Stateless,
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Frame::Drop(Counter::DropMalformed);
    };
    if ip.dst_addr() != our_ip {
        // Broadcast and multicast may still concern us; unicast to others does not.
        return if ip.dst_addr().is_broadcast() || ip.dst_addr().is_multicast() {
            Frame::Stateless
        } else {
            Frame::Drop(Counter::DropNotForUs)
        };
    }
    if ip.next_header() != IpProtocol::Tcp {
        return Frame::Stateless;
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Frame::Drop(Counter::DropMalformed);
    }
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
        return Frame::Drop(Counter::DropMalformed);
    };
    Frame::Tcp {
        key: FlowKey {
            remote_ip: ip.src_addr(),
            remote_port: tcp.src_port(),
            local_ip: ip.dst_addr(),
            local_port: tcp.dst_port(),
        },
        syn: tcp.syn(),
        ack: tcp.ack(),
        src_mac: eth.src_addr(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal Ethernet/IPv4/TCP frame from 10.0.0.1:40000 to `dst`:80.
    fn tcp_frame(dst: [u8; 4], flags: u8, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&dst);
        let tcp = &mut f[34..54];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        f
    }

    const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn classifies_syn_to_us() {
        match classify(&tcp_frame([10, 0, 0, 2], 0x02, 0), US) {
            Frame::Tcp { key, syn, ack, .. } => {
                assert!(syn && !ack);
                assert_eq!(key.remote_port, 40000);
                assert_eq!(key.local_port, 80);
                assert_eq!(key.remote_ip, Ipv4Addr::new(10, 0, 0, 1));
            }
            _ => panic!("not classified as TCP"),
        }
    }

    #[test]
    fn drops_what_is_not_ours_or_broken() {
        assert!(matches!(
            classify(&tcp_frame([10, 0, 0, 9], 0x02, 0), US),
            Frame::Drop(Counter::DropNotForUs)
        ));
        assert!(matches!(
            classify(&tcp_frame([10, 0, 0, 2], 0x02, 0x2000), US),
            Frame::Drop(Counter::DropMalformed)
        ));
        let full = tcp_frame([10, 0, 0, 2], 0x02, 0);
        for cut in [0, 10, 14, 20, 33, 40, 53] {
            assert!(
                matches!(
                    classify(&full[..cut], US),
                    Frame::Drop(Counter::DropMalformed)
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn arp_and_broadcast_go_to_the_stack() {
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(matches!(classify(&arp, US), Frame::Arp));
        assert!(matches!(
            classify(&tcp_frame([255, 255, 255, 255], 0x02, 0), US),
            Frame::Stateless
        ));
    }
}
