//! One polling core: the stack takes an rx burst from every port queue, the
//! applications (static responder, proxy) act on its events, the stack
//! transmits; timers, health probes, ARP refresh, reloads and counters run
//! between bursts (DPDK l3fwd's loop shape, with smoltcp per flow).

use super::proxy::ratelimit::RequestLimiter;
use crate::net::ratelimit::Rate;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use super::access_log::AccessLog;
use super::outcome::{Outcome, Outcomes, Sink};
use super::proxy::engine::{GroupSpec, Proxy, UpstreamStat};
use super::proxy::headers::RequestIds;
use super::proxy::proxy_protocol::AcceptProxy;
use super::proxy::session::{Mode, Routes};
use super::responder::{Responder, ResponderState};
use super::stats::RequestStats;
use crate::dpdk::{rdtsc, tsc_hz, MbufBurst, Mempool};
use crate::net::counters::{Counter, SharedCounters};
use crate::net::device::BURST;
use crate::net::handoff::Inboxes;
use crate::net::link::PortSpec;
use crate::net::stack::{Event, FlowId, Listen, ListenSettings, Stack, StackSpec, CLOCK_ORIGIN_US};

/// How often counters are published for the control thread.
const PUBLISH_US: u64 = 100_000;
/// How often next hops of gateways and upstream servers are re-resolved
/// (smoltcp forgets a neighbour after 60 s; a connect must not wait for ARP).
const ARP_REFRESH_US: u64 = 20_000_000;
/// How often the worker looks for health probes that are due.
const HEALTH_TICK_US: u64 = 10_000;
/// Empty polls before an idle worker starts sleeping (`idle_sleep_us`).
const IDLE_POLLS_BEFORE_SLEEP: u32 = 1_000;
/// How often a draining worker closes connections that became idle.
const DRAIN_SWEEP_US: u64 = 100_000;
/// Longest the worker waits at exit for the NIC to take and complete its last frames.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_millis(20);

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
    /// The stack takes it: the worker's own copy is empty once running.
    pub allow: Vec<(std::net::Ipv4Addr, u8)>,
    /// The allow-list for IPv6 clients, and their per-source prefix.
    pub allow6: crate::net::source6::Allow6,
    pub prefix6: u8,
    pub header_timeout_us: u64,
    /// Open connections per client address (0: no limit).
    pub max_per_source: u32,
    /// New connections per client address (the stack's SYN admission).
    pub conn_rate: Option<Rate>,
    /// `accept_proxy_protocol`: whose PROXY headers are read, and the allow-list for the real client.
    pub accept_proxy: Option<Arc<AcceptProxy>>,
    /// `https`/`tls` listeners: their certificates and settings.
    pub tls: Option<Arc<crate::app::proxy::tls::ServerTls>>,
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
    /// Reloads applied, summed over the workers (the control thread reports
    /// a reload done once every worker has it).
    pub reloaded: AtomicUsize,
}

impl Control {
    pub fn new(workers: usize) -> Self {
        Control {
            stop: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            reload: (0..workers).map(|_| ArrayQueue::new(1)).collect(),
            finished: AtomicUsize::new(0),
            reloaded: AtomicUsize::new(0),
        }
    }
}

/// The reloadable part of the config, in the indices the worker already uses
/// (see `plan::Layout`). Listeners are the same ones, in the same order
/// (`reload::TABLE` refuses a reload that adds, removes or moves one).
pub struct Reload {
    pub groups: Vec<GroupSpec>,
    pub listeners: Vec<ListenerSpec>,
    /// `[fleet] peers`, when the config has `[fleet]`.
    pub fleet_peers: Option<Vec<[u8; 6]>>,
}

pub struct WorkerSpec {
    /// `runtime.tls_handshakes_per_poll`.
    pub tls_handshakes_per_poll: u32,
    pub ports: Vec<PortSpec>,
    pub listeners: Vec<ListenerSpec>,
    pub groups: Vec<GroupSpec>,
    pub max_flows: usize,
    pub socket_rx_buffer: usize,
    pub socket_tx_buffer: usize,
    /// `runtime.buffer_release_idle_ms`, in µs.
    pub buffer_release_idle_us: u64,
    pub tx_drain_us: u64,
    /// Buckets of each rate-limit table (requests, connections).
    pub rate_limit_entries: usize,
    pub pool: Arc<Mempool>,
    /// Where the worker publishes per-server figures.
    pub upstream_stats: Arc<Mutex<Vec<UpstreamStat>>>,
    /// Where the worker counts its finished exchanges (`on_outcome`).
    pub request_stats: Arc<RequestStats>,
    /// This worker's number: it polls queue `worker_index` of every port and
    /// owns the flows RSS puts on that queue (see `rss::Steering`).
    pub worker_index: usize,
    /// Every worker's inbox (their count is the number of workers).
    pub inboxes: Inboxes,
    pub idle_sleep_us: u64,
    /// Half-open client connections (SYN received, no ACK yet) beyond which
    /// SYNs are answered with SYN cookies instead of state; 0: always cookies.
    pub syn_backlog: usize,
    /// `runtime.admit_flows_percent` of `max_flows`, and `runtime.admit_backlog_ms`.
    pub admit_flow_limit: usize,
    pub admit_backlog_us: u64,
    /// Hash keys and the seed for smoltcp's ISNs and ports (`Secrets::for_worker`).
    pub secrets: crate::secrets::Secrets,
    /// This worker's access log ring, when the log is on.
    pub access_log: Option<AccessLog>,
    /// Where `zproxy capture` sessions are posted.
    pub capture: Arc<crate::capture::Board>,
}

/// Which application a flow belongs to.
enum FlowApp {
    None,
    Static {
        listener: usize,
        state: ResponderState,
    },
    Proxy,
}

pub struct Worker {
    stack: Stack,
    proxy: Proxy,
    listeners: Vec<ListenerSpec>,
    apps: crate::app::slot_vec::SlotVec<FlowApp>,
    scratch: Box<[u8]>,
    shared: Arc<SharedCounters>,
    /// Per-server figures for the management endpoint, refreshed with the counters.
    upstream_stats: Arc<Mutex<Vec<UpstreamStat>>>,
    request_stats: Arc<RequestStats>,
    index: usize,
    idle_sleep_us: u64,
    /// The monotonic clock: the CPU's invariant TSC (as DPDK's timers use),
    /// read once per loop iteration instead of a clock_gettime call.
    tsc_origin: u64,
    tsc_per_us: u64,
    draining: bool,
    /// Requests the static responder answered, taken after each event.
    outcomes: Outcomes,
    access_log: Option<AccessLog>,
    capture: Arc<crate::capture::Board>,
    /// The capture board's generation last looked at.
    capture_seen: u64,
}

impl Worker {
    /// Builds every flow slot (sockets and buffers) up front; run this on the
    /// worker's own core so the memory is local to it.
    pub fn new(mut spec: WorkerSpec, shared: Arc<SharedCounters>) -> Worker {
        let listen = spec
            .listeners
            .iter_mut()
            .map(|l| Listen {
                port_index: l.port_index,
                tcp_port: l.tcp_port,
                idle_timeout_us: l.idle_timeout_us,
                // The stack enforces it (and takes a reload's); no copy stays here.
                allow: std::mem::take(&mut l.allow),
                allow6: l.allow6.clone(),
                prefix6: l.prefix6,
                max_per_source: l.max_per_source,
                conn_rate: l.conn_rate,
                exempt: exempt(&l.accept_proxy),
                exempt6: exempt6(&l.accept_proxy),
                reserve_peer: !matches!(l.app, ListenerApp::Static(_)),
            })
            .collect();
        let scratch_len = spec.socket_rx_buffer.max(spec.socket_tx_buffer);
        let mut stack = Stack::new(StackSpec {
            ports: spec.ports,
            listeners: listen,
            max_flows: spec.max_flows,
            socket_rx_buffer: spec.socket_rx_buffer,
            socket_tx_buffer: spec.socket_tx_buffer,
            tx_drain_us: spec.tx_drain_us,
            pool: spec.pool,
            worker_index: spec.worker_index,
            inboxes: spec.inboxes,
            syn_backlog: spec.syn_backlog,
            admit_flow_limit: spec.admit_flow_limit,
            admit_backlog_us: spec.admit_backlog_us,
            rate_limit_entries: spec.rate_limit_entries,
            secrets: spec.secrets.clone(),
        });
        stack.set_buffer_release_idle(spec.buffer_release_idle_us);
        let mut proxy = Proxy::new(
            spec.groups,
            routes_of(spec.listeners.iter().map(|l| &l.app)),
            spec.max_flows,
            scratch_len,
            spec.secrets.iss_seed,
            RequestLimiter::new(spec.rate_limit_entries, spec.secrets.flow_key),
        );
        proxy.ids = RequestIds::new(spec.worker_index);
        if spec.listeners.iter().any(|l| l.accept_proxy.is_some()) {
            proxy.open.reserve(spec.max_flows);
        }
        proxy.tls.set_per_poll(spec.tls_handshakes_per_poll);
        let mut w = Worker {
            stack,
            proxy,
            listeners: spec.listeners,
            apps: crate::app::slot_vec::SlotVec::new(spec.max_flows, || FlowApp::None),
            scratch: vec![0u8; scratch_len].into_boxed_slice(),
            shared,
            upstream_stats: spec.upstream_stats,
            request_stats: spec.request_stats,
            index: spec.worker_index,
            idle_sleep_us: spec.idle_sleep_us,
            tsc_origin: rdtsc(),
            tsc_per_us: (tsc_hz() / 1_000_000).max(1),
            draining: false,
            outcomes: Outcomes::new(),
            access_log: spec.access_log,
            capture: spec.capture,
            capture_seen: 0,
        };
        let now_us = w.now_us();
        if let Some(log) = &mut w.access_log {
            log.set_clock(now_us);
        }
        w
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
                if !self.draining {
                    self.draining = true;
                    self.stack.set_draining();
                }
                next_drain_sweep_us = now_us + DRAIN_SWEEP_US;
                // The control thread stops every worker once none has a
                // connection left; until then this one keeps polling (its
                // queues may carry frames of other workers' flows).
                self.drain_sweep();
            }
            let work = self.stack.poll(&mut rx, now_us);
            self.stack.tick_ipv6(now_us);
            self.proxy.begin_poll(&mut self.stack, now_us);
            if now_us >= next_health_us && !self.draining {
                next_health_us = now_us + HEALTH_TICK_US;
                self.proxy.launch_probes(&mut self.stack, now_us);
            }
            if now_us >= next_arp_us {
                next_arp_us = now_us + ARP_REFRESH_US;
                self.stack.resolve_gateways();
                self.proxy.resolve_servers(&mut self.stack);
            }
            self.settle(now_us);
            let tsc = rdtsc();
            self.stack.flush_tx_if_due(tsc, work == 0);
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
            self.stack.counters.add(Counter::TotalCycles, cycles);
            if work > 0 {
                self.stack.counters.add(Counter::BusyCycles, cycles);
            }
            if now_us - last_publish_us >= PUBLISH_US {
                last_publish_us = now_us;
                self.publish();
                if let Some(session) = self.capture.changed(&mut self.capture_seen) {
                    self.stack.set_capture(session);
                }
                if let Some(reload) = control.reload[self.index].pop() {
                    self.apply_reload(reload);
                    control.reloaded.fetch_add(1, Ordering::Release);
                }
            }
        }
        self.stack.shut_down(self.now_us(), SHUTDOWN_DRAIN);
        self.publish();
    }

    fn now_us(&self) -> u64 {
        CLOCK_ORIGIN_US + rdtsc().wrapping_sub(self.tsc_origin) / self.tsc_per_us
    }

    /// Lets the applications answer every event, and the stack transmit
    /// what they wrote, until nothing more happens.
    fn settle(&mut self, now_us: u64) {
        loop {
            while let Some(event) = self.stack.next_event() {
                self.on_event(event, now_us);
            }
            if !self.stack.flush(now_us) {
                break;
            }
        }
    }

    fn on_event(&mut self, event: Event, now_us: u64) {
        match event {
            Event::Accepted { flow, listener } => self.accept(flow, listener, now_us),
            Event::Ready(f) => match self.apps[f as usize] {
                FlowApp::Static { .. } => self.serve_static(f, now_us),
                // Clients, and the upstreams and probes the proxy opened.
                FlowApp::Proxy | FlowApp::None => self.proxy.ready(&mut self.stack, f, now_us),
            },
            Event::Connected(f) => self.proxy.connected(f),
            Event::Closed { flow, why } => {
                self.apps[flow as usize] = FlowApp::None;
                self.proxy.closed(&mut self.stack, flow, why, now_us);
            }
        }
        self.take_outcomes();
    }

    /// Hands the exchanges the last event finished to `on_outcome`, each
    /// with its request id (`RequestIds`: the proxy numbers an HTTP request
    /// when it is routed, the rest are numbered here).
    fn take_outcomes(&mut self) {
        for i in 0..self.proxy.outcomes.len() {
            let o = self.proxy.outcomes.get(i);
            self.number(o);
        }
        self.proxy.outcomes.clear();
        for i in 0..self.outcomes.len() {
            let o = self.outcomes.get(i);
            self.number(o);
        }
        self.outcomes.clear();
        let lost = self.proxy.outcomes.take_lost() + self.outcomes.take_lost();
        if lost > 0 && self.access_log.is_some() {
            self.stack.counters.add(Counter::AccessLogDropped, lost);
        }
    }

    fn number(&mut self, mut o: Outcome) {
        if o.request_id == 0 {
            o.request_id = self.proxy.ids.take();
        }
        self.on_outcome(&o);
    }

    /// Every finished exchange (HTTP request, `tcp` connection) comes here once.
    fn on_outcome(&mut self, o: &Outcome) {
        if let Some(log) = &mut self.access_log {
            if !log.record(o) {
                self.stack.counters.add(Counter::AccessLogDropped, 1);
            }
        }
        self.request_stats.record(o);
    }

    fn accept(&mut self, f: FlowId, listener: usize, now_us: u64) {
        let l = &self.listeners[listener];
        let (mode, group) = match &l.app {
            ListenerApp::Static(_) => {
                self.apps[f as usize] = FlowApp::Static {
                    listener,
                    state: ResponderState::new(l.header_timeout_us),
                };
                return self.serve_static(f, now_us);
            }
            ListenerApp::Tcp { group } => (Mode::Tcp, *group),
            ListenerApp::Http(_) => (Mode::Http, 0),
        };
        self.apps[f as usize] = FlowApp::Proxy;
        let header_timeout_us = l.header_timeout_us;
        self.proxy.accept(
            &mut self.stack,
            f,
            listener,
            mode,
            group,
            header_timeout_us,
            l.accept_proxy.as_ref(),
            l.tls.as_deref(),
            now_us,
        );
    }

    fn serve_static(&mut self, f: FlowId, now_us: u64) {
        let FlowApp::Static { listener, state } = &mut self.apps[f as usize] else {
            return;
        };
        let ListenerApp::Static(responder) = &self.listeners[*listener].app else {
            return; // reloaded into another mode: the next connection gets it
        };
        let mut log = Sink {
            rec: Outcome {
                listener: *listener as u16,
                client: self.stack.remote(f).map(|a| (a.ip(), a.port())),
                ..Outcome::default()
            },
            out: &mut self.outcomes,
        };
        let sock = self.stack.socket(f);
        let served = if state.deadline_us().is_some_and(|d| now_us >= d) {
            responder.timed_out(state, sock, now_us, &mut log)
        } else {
            responder.serve(state, sock, &mut self.scratch, now_us, &mut log)
        };
        self.stack.set_deadline(f, state.deadline_us());
        let c = &mut self.stack.counters;
        c.add(Counter::Requests, u64::from(served.requests));
        c.add(Counter::BadRequests, u64::from(served.bad_requests));
    }

    /// Closes what can be closed without cutting an exchange short.
    fn drain_sweep(&mut self) {
        for f in 0..self.apps.built() as FlowId {
            if let FlowApp::Static { listener, state } = &mut self.apps[f as usize] {
                if let ListenerApp::Static(responder) = &self.listeners[*listener].app {
                    responder.drain(state, self.stack.socket(f));
                }
            }
        }
        self.proxy.drain(&mut self.stack);
    }

    /// Takes a reloaded config between bursts; open connections keep the
    /// settings they were accepted with.
    fn apply_reload(&mut self, reload: Reload) {
        let routes = routes_of(reload.listeners.iter().map(|l| &l.app));
        for (i, (mine, next)) in self.listeners.iter_mut().zip(reload.listeners).enumerate() {
            let ListenerSpec {
                app,
                idle_timeout_us,
                allow,
                allow6,
                prefix6,
                header_timeout_us,
                max_per_source,
                conn_rate,
                accept_proxy,
                tls,
                ..
            } = next;
            // The stack enforces these (see `Worker::new`).
            let settings = ListenSettings {
                idle_timeout_us,
                allow,
                allow6,
                prefix6,
                max_per_source,
                conn_rate,
                exempt: exempt(&accept_proxy),
                exempt6: exempt6(&accept_proxy),
            };
            self.stack.retune_listener(i, settings);
            mine.app = app;
            mine.idle_timeout_us = idle_timeout_us;
            mine.header_timeout_us = header_timeout_us;
            mine.max_per_source = max_per_source;
            mine.conn_rate = conn_rate;
            mine.accept_proxy = accept_proxy;
            mine.tls = tls;
        }
        if self.listeners.iter().any(|l| l.accept_proxy.is_some()) {
            self.proxy.open.reserve(self.apps.slots()); // between bursts: may allocate
        }
        self.proxy.reload(&mut self.stack, reload.groups, routes);
        if let Some(peers) = reload.fleet_peers {
            self.stack.retune_fleet_peers(peers);
        }
    }

    fn publish(&mut self) {
        self.stack.update_gauges();
        self.stack
            .counters
            .set(Counter::UpstreamPooled, self.proxy.pooled());
        // The stack set its own (connection) evictions; the requests' add to them.
        let (used, evicted) = self.proxy.rate_limit_state();
        let c = &mut self.stack.counters;
        c.set(Counter::RateLimitEntries, used as u64);
        c.add(Counter::RateLimitEvictions, evicted);
        self.shared.publish(&self.stack.counters);
        // Never wait on the control thread: skip this round if it is reading.
        if let Ok(mut stats) = self.upstream_stats.try_lock() {
            self.proxy.stats(&mut stats);
        }
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
            self.stack.inject(port, bytes, now_us);
        }
        self.stack.run_due(now_us);
        self.stack.tick_ipv6(now_us);
        self.proxy.begin_poll(&mut self.stack, now_us);
        self.settle(now_us);
        self.stack.flush_tx();
        self.stack.active()
    }
}

/// Each listener's routes (HTTP listeners only), by listener index.
/// The stack leaves trusted proxies' connections to the session's limits
/// (`proxy::client_limits`), which see the real client.
fn exempt(accept: &Option<Arc<AcceptProxy>>) -> Vec<(std::net::Ipv4Addr, u8)> {
    accept.as_ref().map_or_else(Vec::new, |a| a.trusted.clone())
}

fn exempt6(accept: &Option<Arc<AcceptProxy>>) -> Vec<(std::net::Ipv6Addr, u8)> {
    accept
        .as_ref()
        .map_or_else(Vec::new, |a| a.trusted6.clone())
}

fn routes_of<'a>(apps: impl Iterator<Item = &'a ListenerApp>) -> Vec<Option<Arc<Routes>>> {
    apps.map(|a| match a {
        ListenerApp::Http(routes) => Some(routes.clone()),
        _ => None,
    })
    .collect()
}
