//! One core's TCP/IP stack: its ports, a flow table of single-socket smoltcp
//! sets, timers, TIME-WAIT, SYN cookies and frame handoff between cores.
//!
//! The stack knows no application. It accepts connections for the listeners
//! it was given and opens those it is asked to; it hands out flow ids and
//! [`Event`]s, and lends a flow's socket to whoever holds its id. It never
//! calls up: after a burst (`poll`) and after each `flush` the application
//! takes the events, reads and writes sockets, and the next `flush`
//! transmits what it wrote and releases what closed.
//!
//! - [`demux`]: what each received frame is, and which flow gets it
//!   (including SYN cookies, TIME-WAIT and handoff to the owning core);
//!   [`second_chance`]: what no flow here owns goes to the fleet's peers.

mod admit;
mod connect;
mod connect6;
mod cookie6;
mod demux;
mod demux6;
mod flows6;
mod ptb6;
mod reclaim;
mod rst;
mod rx_end;
mod second_chance;
mod slots;
mod tap;
pub use demux::ListenSettings;
pub use second_chance::{Fleet, FleetSpec};

use crate::net::ratelimit::{Limiter, Rate};
use smoltcp::iface::{PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::admission::{Admission, AdmitLimits};
use super::counters::{Counter, Counters};
use super::device::{FrameDevice, SentSeq, BURST};
use super::flow::{FlowKey, FlowTable, TimeWait};
use super::handoff::Inboxes;
use super::link::{in_network, Link, PortSpec};
use super::syncookie::CookieJar;
use super::timers::Timers;
use crate::dpdk::{tsc_hz, MbufBurst, Mempool};

/// A flow's index in the stack's table, valid until its `Closed` event.
pub type FlowId = u32;

/// smoltcp's TIME-WAIT length, kept here as compact state instead.
const TIME_WAIT_US: u64 = 10_000_000;
/// Most due timers handled per poll, so rx is never starved.
const TIMERS_PER_POLL: usize = 256;
/// `poll_egress` sends one segment per socket per call; bound the loop.
const EGRESS_ROUNDS: usize = 64;
/// Attempts to find a free local port for a new connection.
const LOCAL_PORT_TRIES: u32 = 64;
/// smoltcp treats instant 0 specially ("send now"); start the clock later.
pub const CLOCK_ORIGIN_US: u64 = 1_000_000;

/// A TCP listener the stack accepts connections for.
pub struct Listen {
    pub port_index: usize,
    pub tcp_port: u16,
    pub idle_timeout_us: u64,
    /// Client networks allowed in (address, prefix length); any when empty.
    pub allow: Vec<(Ipv4Addr, u8)>,
    /// Open connections per client address (0: no limit).
    pub max_per_source: u32,
    /// New connections per client address, decided at the SYN.
    pub conn_rate: Option<Rate>,
    /// Peers neither limit counts: balancers whose clients the application
    /// limits itself once it knows them (the PROXY protocol).
    pub exempt: Vec<(Ipv4Addr, u8)>,
    /// The same for peers on IPv6.
    pub exempt6: Vec<(std::net::Ipv6Addr, u8)>,
    /// Each accepted flow is promised a second slot (for its upstream) until
    /// the application takes it with [`Stack::unreserve`].
    pub reserve_peer: bool,
    /// The allow-list as IPv6 clients see it.
    pub allow6: crate::net::source6::Allow6,
    /// An IPv6 client's per-source key: its first this many bits.
    pub prefix6: u8,
}

impl Listen {
    fn allows(&self, client: Ipv4Addr) -> bool {
        self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|&(net, len)| in_network(client, net, len))
    }

    fn exempts(&self, peer: Ipv4Addr) -> bool {
        self.exempt
            .iter()
            .any(|&(net, len)| in_network(peer, net, len))
    }

    fn exempts6(&self, peer: std::net::Ipv6Addr) -> bool {
        self.exempt6
            .iter()
            .any(|&(net, len)| crate::net::ipv6::in_network6(peer, net, len))
    }
}

pub struct StackSpec {
    pub ports: Vec<PortSpec>,
    pub listeners: Vec<Listen>,
    pub max_flows: usize,
    pub socket_rx_buffer: usize,
    pub socket_tx_buffer: usize,
    pub tx_drain_us: u64,
    pub pool: Arc<Mempool>,
    /// This core's number: it polls queue `worker_index` of every port.
    pub worker_index: usize,
    /// Every core's inbox (their count is the number of cores).
    pub inboxes: Inboxes,
    /// Half-open accepted connections beyond which SYNs get cookies.
    pub syn_backlog: usize,
    /// Slots in use past which SYNs are dropped (at most `max_flows`).
    pub admit_flow_limit: usize,
    /// How long a backlog lasts before SYNs are dropped (0: never).
    pub admit_backlog_us: u64,
    /// Buckets of the connection rate limiter (fixed at start).
    pub rate_limit_entries: usize,
    /// Keys of the flow table and SYN cookies, seed of smoltcp's ISNs.
    pub secrets: crate::secrets::Secrets,
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Closed by FIN exchange, or ended by this side (abort, smoltcp's
    /// retransmission limit).
    Ended,
    /// The peer reset an established connection.
    Reset,
    /// The peer answered our SYN with a RST.
    Refused,
    /// No answer in time: a connect past its deadline, or idle too long.
    TimedOut,
}

/// What happened, for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A SYN for `listener` made this flow (its socket is in SYN-RECEIVED).
    Accepted { flow: FlowId, listener: usize },
    /// Frames arrived or a timer fired: the socket may be readable,
    /// writable or closing.
    Ready(FlowId),
    /// A connection this side opened reached ESTABLISHED.
    Connected(FlowId),
    /// The flow is gone; its id may be reused after the next `poll`.
    Closed { flow: FlowId, why: Closed },
}

/// Why a connection could not be opened (this side's shortage, not the peer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("no free local port in the range for this server")]
    NoLocalPort,
    #[error("no free flow slot (max_flows reached)")]
    NoSlot,
    #[error("the port has no IPv6 address past duplicate address detection to reach an IPv6 server from")]
    NoIpv6Address,
    #[error("smoltcp refused the connect: {0}")]
    Socket(#[from] tcp::ConnectError),
}

/// A connection to open.
pub struct Connect<'a> {
    pub port_index: usize,
    /// IPv4, or IPv6 (`connect6`: the port needs an IPv6 address past DAD).
    pub server: SocketAddr,
    pub local_ports: (u16, u16),
    /// Where the search for a free local port starts; moved past the one taken.
    pub next_local_port: &'a mut u16,
    /// Abort (`Closed::TimedOut`) if not established by then.
    pub connect_timeout_us: u64,
    pub idle_timeout_us: u64,
}

struct Flow {
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    port: usize,
    /// The listener that accepted it, if any.
    listener: Option<usize>,
    /// Last time the flow received a frame (for the idle timeout).
    last_rx_us: u64,
    idle_timeout_us: u64,
    /// An extra wake-up the application asked for (0: none).
    app_deadline_us: u64,
    /// Until when an opening connection may take (0: not opening).
    connect_deadline_us: u64,
    /// Our ISN as the client knows it minus smoltcp's (opened from a SYN
    /// cookie; see `syncookie`), else 0.
    seq_delta: u32,
    /// Accepted from a SYN and not yet past SYN-RECEIVED (counted in `half_open`).
    half_open: bool,
    /// Holds a promised slot for a peer (see `Listen::reserve_peer`).
    reserve: bool,
    /// Counted in `per_source` (its listener had a limit when it was accepted).
    per_source: bool,
    /// Not released while closed with bytes unread (its peer still relays them).
    hold_unread: bool,
    /// May be closed to free its slot (an idle pooled connection).
    evictable: bool,
    /// Facts for the `Closed` cause.
    established: bool,
    rst_seen: bool,
    timed_out: bool,
    /// A `Ready` event is queued; the flow is in the `dirty` list.
    ready_queued: bool,
    dirty: bool,
    sent: SentSeq,
    /// The furthest segment end received (may the sweep drop its pages?).
    rx_end: rx_end::RxEnd,
    /// An IPv6 path MTU an ICMPv6 Packet Too Big lowered (0: the port's; see `pmtu6`).
    path_mtu: u16,
}

impl Flow {
    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }
}

pub struct Stack {
    ports: Vec<Link>,
    listeners: Vec<Listen>,
    flows: FlowTable<Flow>,
    /// Gives idle flows' and cold slots' buffer pages back.
    reclaim: reclaim::Reclaim,
    /// IPv6 flows' keys, TIME-WAIT and sources (their slots are in `flows`).
    v6: flows6::Flows6,
    timers: Timers,
    time_wait: TimeWait,
    /// Open accepted connections per client address, for listeners with a
    /// per-source limit.
    per_source: HashMap<Ipv4Addr, u32>,
    /// Opening flows whose SYN may be waiting for ARP.
    connecting: Vec<FlowId>,
    /// Slots promised to flows (`Flow::reserve`).
    reserved: usize,
    /// Flows that may be closed to make room, oldest first.
    evictable: Vec<FlowId>,
    events: VecDeque<Event>,
    /// Flows the application or the network touched since the last flush.
    dirty: Vec<FlowId>,
    /// Released flows whose slots return to the free list at the next poll.
    retired: Vec<FlowId>,
    /// A socket set with no sockets: frames without a flow get smoltcp's
    /// stateless answers (ARP reply, echo reply, RST).
    no_sockets: SocketSet<'static>,
    /// For frames the stack makes itself (ARP, cookies).
    pool: Arc<Mempool>,
    pub counters: Counters,
    index: usize,
    inboxes: Inboxes,
    /// SYN flood defence: cookies once `half_open` reaches `syn_backlog`.
    cookies: CookieJar,
    /// Per-source connection rates (`Listen::conn_rate`).
    syn_limiter: Limiter,
    half_open: usize,
    syn_backlog: usize,
    /// Which SYNs are taken under load (see `net::admission`).
    admission: Admission,
    /// Until when an ACK for no flow may carry a cookie we sent.
    cookies_valid_until_us: u64,
    /// The receive window our own segments offer (no window scaling).
    own_window: u16,
    /// Challenge ACKs (RFC 5961) left in this second, and when it ends.
    challenge_acks_left: u32,
    challenge_window_end_us: u64,
    draining: bool,
    /// A running `zproxy capture` of one of this core's ports.
    capture: Option<Arc<crate::capture::Session>>,
}

impl Stack {
    /// Builds the stack (flow slots come as first used: `slots`); run this
    /// on the worker's own core so the memory is local to it.
    pub fn new(spec: StackSpec) -> Stack {
        let drain_cycles = spec.tx_drain_us * tsc_hz() / 1_000_000;
        let workers = spec.inboxes.len() as u16;
        let ports = spec
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let seed = spec.secrets.iss_seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                Link::new(
                    p,
                    &spec.pool,
                    drain_cycles,
                    seed,
                    workers,
                    instant(CLOCK_ORIGIN_US),
                )
            })
            .collect();
        let (rx_len, tx_len) = (spec.socket_rx_buffer, spec.socket_tx_buffer);
        let ipv6_flows = if spec.ports.iter().any(|p| p.ipv6.is_some()) {
            spec.max_flows
        } else {
            0
        };
        slots::log_breakdown(spec.worker_index, spec.max_flows, rx_len, tx_len);
        let (flows, reclaim) = slots::build(
            spec.max_flows,
            rx_len,
            tx_len,
            spec.secrets.flow_key,
            crate::dpdk::lcore::current_node(),
        );
        Stack {
            ports,
            listeners: spec.listeners,
            timers: Timers::new(spec.max_flows),
            time_wait: TimeWait::new(spec.max_flows * 8, TIME_WAIT_US, spec.secrets.flow_key),
            connecting: Vec::with_capacity(spec.max_flows),
            reserved: 0,
            evictable: Vec::with_capacity(spec.max_flows),
            events: VecDeque::with_capacity(4 * spec.max_flows),
            dirty: Vec::with_capacity(spec.max_flows),
            retired: Vec::with_capacity(spec.max_flows),
            per_source: HashMap::with_capacity(spec.max_flows),
            // Sized only when a port has IPv6 (no memory for it otherwise).
            v6: flows6::Flows6::new(
                ipv6_flows,
                ipv6_flows * 2,
                TIME_WAIT_US,
                spec.secrets.flow_key,
            ),
            flows,
            reclaim,
            no_sockets: SocketSet::new(Vec::new()),
            pool: spec.pool,
            counters: Counters::new(),
            index: spec.worker_index,
            inboxes: spec.inboxes,
            cookies: CookieJar::new(spec.secrets.cookie_key),
            syn_limiter: Limiter::new(spec.rate_limit_entries, spec.secrets.flow_key),
            half_open: 0,
            syn_backlog: spec.syn_backlog,
            admission: Admission::new(AdmitLimits {
                flow_limit: spec.admit_flow_limit.min(spec.max_flows),
                backlog_us: spec.admit_backlog_us,
                syn_backlog: spec.syn_backlog,
            }),
            cookies_valid_until_us: 0,
            own_window: spec.socket_rx_buffer.min(usize::from(u16::MAX)) as u16,
            challenge_acks_left: 0,
            challenge_window_end_us: 0,
            draining: false,
            capture: None,
        }
    }

    /// One round of input: an rx burst from every port, frames handed over
    /// by other cores, due timers and TIME-WAIT expiry. Returns how much
    /// work it found; the outcome is in [`next_event`](Self::next_event).
    pub fn poll(&mut self, rx: &mut MbufBurst<BURST>, now_us: u64) -> usize {
        self.reuse_retired();
        let released = self.reclaim.sweep(&mut self.flows, now_us);
        self.counters.add(Counter::BuffersReleased, released);
        let mut work = 0;
        let mut burst_full = false;
        for p in 0..self.ports.len() {
            let n = self.ports[p].rx.rx_burst(rx);
            burst_full |= n == BURST;
            self.capture_rx(p, rx);
            work += n;
            self.counters.add(Counter::RxFrames, n as u64);
            for m in rx.drain() {
                self.counters.add(Counter::RxBytes, m.data().len() as u64);
                self.on_frame(p, m, false, now_us);
            }
        }
        work += self.take_handoffs(now_us);
        work += self.take_from_kernel();
        work += self.run_timers(now_us);
        self.time_wait.expire(now_us);
        self.v6.time_wait.expire(now_us);
        self.note_backlog(burst_full, now_us);
        work
    }

    /// The next thing that happened, oldest first. A flow that closed
    /// before its `Accepted` or `Ready` was taken (a SYN cookie handshake
    /// that failed, say) skips them: only its `Closed` follows.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let event = self.events.pop_front()?;
            let f = match event {
                Event::Ready(f) => {
                    self.flows.get_mut(f).ready_queued = false;
                    f
                }
                Event::Accepted { flow, .. } => flow,
                _ => return Some(event),
            };
            if self.flows.key(f).is_some() {
                return Some(event);
            }
        }
    }

    /// Transmits what every touched flow has to send, then releases those
    /// that closed (their `Closed` events) or arms their timers. True when
    /// new events wait.
    pub fn flush(&mut self, now_us: u64) -> bool {
        while let Some(f) = self.dirty.pop() {
            self.flows.get_mut(f).dirty = false;
            self.finish(f, now_us);
        }
        !self.events.is_empty()
    }

    /// Lends a live flow's socket (the flow is transmitted at the next flush).
    pub fn socket(&mut self, f: FlowId) -> &mut tcp::Socket<'static> {
        self.mark_dirty(f);
        self.flows.get_mut(f).socket()
    }

    /// Two flows' sockets at once (a client and its upstream).
    pub fn pair(
        &mut self,
        a: FlowId,
        b: FlowId,
    ) -> (&mut tcp::Socket<'static>, &mut tcp::Socket<'static>) {
        self.mark_dirty(a);
        self.mark_dirty(b);
        let (fa, fb) = self.flows.pair_mut(a, b);
        (
            fa.sockets.get_mut::<tcp::Socket>(fa.handle),
            fb.sockets.get_mut::<tcp::Socket>(fb.handle),
        )
    }

    /// The flow's 4-tuple, while it lives.
    pub fn key(&self, f: FlowId) -> Option<FlowKey> {
        self.flows.key(f)
    }

    /// How long a quiet flow or free slot keeps its buffer pages (`reclaim`).
    pub fn set_buffer_release_idle(&mut self, us: u64) {
        self.reclaim.idle_us = us;
    }

    /// Wakes the flow at `deadline_us` (besides its own timers); `None` clears.
    pub fn set_deadline(&mut self, f: FlowId, deadline_us: Option<u64>) {
        if self.flows.key(f).is_some() {
            self.flows.get_mut(f).app_deadline_us = deadline_us.unwrap_or(0);
            self.mark_dirty(f);
        }
    }

    /// Restarts the flow's idle timer with a new length.
    pub fn set_idle_timeout(&mut self, f: FlowId, us: u64, now_us: u64) {
        let flow = self.flows.get_mut(f);
        flow.idle_timeout_us = us;
        flow.last_rx_us = now_us;
        self.mark_dirty(f);
    }

    /// Keeps the flow after it closed while bytes are unread (see `Flow::hold_unread`).
    pub fn set_hold_unread(&mut self, f: FlowId, hold: bool) {
        if self.flows.key(f).is_some() {
            self.flows.get_mut(f).hold_unread = hold;
            self.mark_dirty(f);
        }
    }

    /// Marks an idle flow that may be closed when slots run short.
    pub fn set_evictable(&mut self, f: FlowId) {
        if self.flows.key(f).is_none() {
            return;
        }
        let flow = self.flows.get_mut(f);
        if !flow.evictable {
            flow.evictable = true;
            self.evictable.push(f);
        }
    }

    /// Takes an evictable flow back; false when it was evicted meanwhile
    /// (its id may already name another flow).
    pub fn take_evictable(&mut self, f: FlowId) -> bool {
        let flow = self.flows.get_mut(f);
        if !flow.evictable {
            return false;
        }
        flow.evictable = false;
        if let Some(i) = self.evictable.iter().position(|&e| e == f) {
            self.evictable.remove(i);
        }
        true
    }

    /// The application took the slot promised to `f` (see `Listen::reserve_peer`).
    pub fn unreserve(&mut self, f: FlowId) {
        let flow = self.flows.get_mut(f);
        if flow.reserve {
            flow.reserve = false;
            self.reserved -= 1;
        }
    }

    /// Promises `f` a slot again (its peer went away; it may need another).
    pub fn reserve(&mut self, f: FlowId) {
        if self.flows.key(f).is_none() {
            return;
        }
        let flow = self.flows.get_mut(f);
        if !flow.reserve {
            flow.reserve = true;
            self.reserved += 1;
        }
    }

    /// Free slots beyond those promised; negative when a promise cannot be
    /// kept right now (a peer went back to a pool while slots were short).
    pub fn spare_slots(&self) -> isize {
        self.flows.free() as isize - self.reserved as isize
    }

    /// Refuse new connections from now on.
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    /// Hands pending frames to the drivers when due (or at once when `idle`).
    pub fn flush_tx_if_due(&mut self, tsc: u64, idle: bool) {
        for port in &mut self.ports {
            port.tx.flush_if_due(tsc, idle);
        }
    }

    /// Hands every pending frame to the drivers now.
    pub fn flush_tx(&mut self) {
        for port in &mut self.ports {
            port.tx.flush();
        }
    }

    /// At exit: a RST for every open connection, as the kernel sends when a
    /// process dies, so no peer keeps a connection we forgot (an upstream's
    /// idle keep-alive connection would otherwise meet our next SYN); then
    /// the last frames go out.
    pub fn shut_down(&mut self, now_us: u64, wait: std::time::Duration) {
        for f in 0..self.flows.capacity() as u32 {
            if self.flows.key(f).is_some() {
                self.flows.get_mut(f).socket().abort();
                self.finish(f, now_us);
            }
        }
        for port in &mut self.ports {
            port.tx.drain(wait);
        }
    }

    /// Open flows.
    pub fn active(&self) -> usize {
        self.flows.active()
    }

    /// Fuzzing hook: `frame` as if it arrived on this core's rx queue of `port`.
    #[doc(hidden)]
    pub fn inject(&mut self, port: usize, frame: &[u8], now_us: u64) {
        self.reuse_retired();
        let Some(mut m) = self.pool.alloc() else {
            return;
        };
        if let Some(buf) = m.append(frame.len()) {
            buf.copy_from_slice(frame);
            self.on_frame(port, m, false, now_us);
        }
    }

    /// Fuzzing hook: due timers and TIME-WAIT expiry, as `poll` runs them.
    #[doc(hidden)]
    pub fn run_due(&mut self, now_us: u64) {
        self.reuse_retired();
        self.run_timers(now_us);
        self.time_wait.expire(now_us);
        self.v6.time_wait.expire(now_us);
    }

    /// Slots released since the last round go back on the free list (their
    /// `Closed` events have been taken by now).
    fn reuse_retired(&mut self) {
        for slot in self.retired.drain(..) {
            self.flows.reuse(slot);
        }
    }

    fn mark_dirty(&mut self, f: FlowId) {
        let flow = self.flows.get_mut(f);
        if !flow.dirty {
            flow.dirty = true;
            self.dirty.push(f);
        }
    }

    /// Something happened on `f`: the application hears of it.
    fn mark_ready(&mut self, f: FlowId) {
        let flow = self.flows.get_mut(f);
        if !flow.ready_queued {
            flow.ready_queued = true;
            self.events.push_back(Event::Ready(f));
        }
        self.mark_dirty(f);
    }

    /// A fresh flow's state, its socket closed and ready for `listen` or `connect`.
    fn reset_flow(
        &mut self,
        f: FlowId,
        port: usize,
        listener: Option<usize>,
        idle_timeout_us: u64,
        now_us: u64,
    ) {
        let flow = self.flows.get_mut(f);
        flow.port = port;
        flow.listener = listener;
        flow.last_rx_us = now_us;
        flow.idle_timeout_us = idle_timeout_us;
        flow.app_deadline_us = 0;
        flow.connect_deadline_us = 0;
        flow.seq_delta = 0;
        flow.half_open = false;
        flow.reserve = false;
        flow.per_source = false;
        flow.hold_unread = false;
        flow.evictable = false;
        flow.established = false;
        flow.rst_seen = false;
        flow.timed_out = false;
        flow.ready_queued = false;
        flow.dirty = false;
        flow.sent = SentSeq::default();
        flow.rx_end = Default::default();
        flow.path_mtu = 0;
        flow.socket().set_nagle_enabled(false);
    }

    /// A timer of `f` fired: enforce its deadlines, then let the application look.
    fn wake(&mut self, f: FlowId, now_us: u64) {
        let flow = self.flows.get_mut(f);
        let opening = flow.connect_deadline_us != 0;
        let expired = if opening {
            now_us >= flow.connect_deadline_us
        } else {
            now_us >= flow.last_rx_us + flow.idle_timeout_us
        };
        if expired && flow.socket().is_open() {
            flow.timed_out = true;
            flow.socket().abort();
            self.counters.add(Counter::FlowsTimedOut, 1);
        }
        self.mark_ready(f);
    }

    fn run_timers(&mut self, now_us: u64) -> usize {
        let mut done = 0;
        while done < TIMERS_PER_POLL {
            let Some(f) = self.timers.pop_due(now_us) else {
                break;
            };
            self.wake(f, now_us);
            done += 1;
        }
        done
    }

    /// Transmits what `f` has to send, then releases it or arms its timer.
    fn finish(&mut self, f: FlowId, now_us: u64) {
        if self.flows.key(f).is_none() {
            return; // released meanwhile
        }
        let flow = self.flows.get_mut(f);
        let p = &mut self.ports[flow.port];
        let mut dev = FrameDevice {
            rx: None,
            tx: &mut p.tx,
            caps: &p.caps,
            seq_delta: flow.seq_delta,
            sent: Some(&mut flow.sent),
            path_mtu: flow.path_mtu,
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
        let unread = sock.recv_queue() > 0;
        if flow.half_open && !matches!(state, tcp::State::Listen | tcp::State::SynReceived) {
            flow.half_open = false;
            self.half_open -= 1;
        }
        if !matches!(
            state,
            tcp::State::Closed | tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived
        ) {
            flow.established = true;
        }
        if flow.connect_deadline_us != 0 && flow.established {
            flow.connect_deadline_us = 0;
            sock.set_timeout(Some(Duration::from_micros(flow.idle_timeout_us)));
            self.events.push_back(Event::Connected(f));
        }
        // A closed flow keeps its slot while its peer still relays what it received.
        let held = flow.hold_unread && state == tcp::State::TimeWait && unread;
        let closed = matches!(
            state,
            tcp::State::TimeWait | tcp::State::Closed | tcp::State::Listen
        );
        if closed && !held {
            return self.release(f, state, now_us);
        }
        let mut deadline = flow.last_rx_us + flow.idle_timeout_us;
        if flow.connect_deadline_us != 0 {
            deadline = deadline.min(flow.connect_deadline_us);
        }
        if flow.app_deadline_us != 0 {
            deadline = deadline.min(flow.app_deadline_us);
        }
        if let Some(at) = p.iface.poll_at(instant(now_us), &flow.sockets) {
            deadline = deadline.min(at.total_micros().max(0) as u64);
        }
        self.timers.set(f, deadline);
    }

    /// Frees a closed flow: its slot leaves the table, and the application
    /// hears why (the slot is reused only after the next poll).
    fn release(&mut self, f: FlowId, state: tcp::State, now_us: u64) {
        let key = self.flows.key(f).expect("live slot has a key");
        let flow = self.flows.get_mut(f);
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
        let why = if flow.timed_out {
            Closed::TimedOut
        } else if flow.rst_seen && flow.established {
            Closed::Reset
        } else if flow.rst_seen && flow.listener.is_none() {
            Closed::Refused
        } else {
            Closed::Ended
        };
        // By what it was counted under: a reload may have changed the limit since.
        let v4 = !self.release6(f, state, now_us);
        let flow = self.flows.get_mut(f);
        if std::mem::take(&mut flow.per_source) {
            if let Some(n) = self.per_source.get_mut(&key.remote_ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&key.remote_ip);
                }
            }
        }
        self.unreserve(f);
        self.take_evictable(f);
        if v4 && state == tcp::State::TimeWait {
            self.time_wait.insert(key, now_us);
        }
        self.timers.remove(f);
        self.counters.add(Counter::FlowsClosed, 1);
        self.flows.retire(f);
        self.retired.push(f);
        self.events.push_back(Event::Closed { flow: f, why });
    }

    /// Closes the oldest evictable flow and frees its slot at once; false
    /// when none is. Its owner hears `Closed` before any event of the slot's
    /// next flow, and checks `take_evictable` before using what it pooled.
    fn evict_one(&mut self, now_us: u64) -> bool {
        if self.evictable.is_empty() {
            return false;
        }
        let f = self.evictable[0];
        self.flows.get_mut(f).socket().abort();
        self.finish(f, now_us);
        if let Some(i) = self.retired.iter().rposition(|&r| r == f) {
            self.retired.swap_remove(i);
            // A `Ready` queued for the evicted flow must not reach the
            // slot's next flow (rare: only a full table evicts).
            self.events.retain(|e| *e != Event::Ready(f));
            self.flows.reuse(f);
        }
        true
    }
}

fn instant(us: u64) -> Instant {
    Instant::from_micros(us as i64)
}
