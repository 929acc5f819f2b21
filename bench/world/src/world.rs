//! The world's poll loop: one stack, the generator's flows on one port and
//! the origin's on the other. Each flow's role is found by its id; the
//! per-connection state (a response or request reader) comes from pools
//! that grow to the peak in flight and are reused, so a request allocates
//! nothing.

use std::net::SocketAddrV4;
use std::time::Duration;

use zproxy::dpdk::{rdtsc, tsc_hz, MbufBurst};
use zproxy::net::counters::Counter;
use zproxy::net::device::BURST;
use zproxy::net::stack::{Closed, Connect, Event, FlowId, Stack, CLOCK_ORIGIN_US};
use zproxy_bench::{FailureKind, ThreadStats};

use crate::client::{Client, Plan};
use crate::http::Response;
use crate::origin::{Next, Reply, Served};
use crate::setup::CLIENT_PORT;

/// New connections opened per loop iteration at most, so received frames
/// are never starved by a burst of SYNs.
const STARTS_PER_POLL: usize = 64;
/// Handshakes in flight at most: more SYNs at once overflow the memif ring
/// (and the proxy's SYN backlog), and a lost SYN waits a second for its
/// retransmission, so a burst of N connects took many seconds to open.
const OPENING_MAX: usize = 256;
/// Local ports the generator connects from.
const LOCAL_PORTS: (u16, u16) = (1024, 65535);

/// What a flow of the world's stack is.
#[derive(Clone, Copy)]
enum Role {
    None,
    /// A generator connection with a request in flight (index into `clients`).
    Gen {
        client: u32,
        established: bool,
    },
    /// A kept generator connection waiting for the rate to allow its next request.
    GenIdle {
        client: u32,
    },
    /// A generator connection whose exchange is over, closing.
    GenDone,
    /// An origin connection (index into `served`).
    Origin {
        served: u32,
    },
}

/// How the run is timed, in the stack's microseconds.
pub struct Schedule {
    pub window_start_us: u64,
    pub end_us: u64,
    /// Requests (or connections) started per second at most.
    pub rate: Option<f64>,
    pub concurrency: usize,
}

/// The world's own figures, besides the requests' results.
#[derive(Debug, Default, Clone)]
pub struct WorldFigures {
    /// Share of loop time that did work (as ZProxy counts its busy cycles).
    pub busy: f64,
    pub origin_requests: u64,
    pub origin_aborts: u64,
    /// Connects the world's own stack could not make (no slot or local port).
    pub connect_shortages: u64,
    /// Connections held open and idle when the run ended (`--hold-open`).
    pub held_open: u64,
    pub counters: Vec<(&'static str, u64)>,
}

pub struct World {
    stack: Stack,
    plan: Plan,
    reply: Reply,
    target: SocketAddrV4,
    roles: Vec<Role>,
    clients: Vec<Client>,
    free_clients: Vec<u32>,
    served: Vec<Served>,
    free_served: Vec<u32>,
    next_local_port: u16,
    /// Generator connections open and not closing (with a request in flight or parked).
    in_flight: usize,
    /// Generator connections whose handshake is not done yet.
    opening: usize,
    /// Kept connections waiting for a token (rate-limited keep-alive), oldest first.
    parked: std::collections::VecDeque<(FlowId, u32)>,
    tsc_origin: u64,
    tsc_per_us: u64,
    pub stats: ThreadStats,
    pub figures: WorldFigures,
}

impl World {
    pub fn new(
        stack: Stack,
        plan: Plan,
        reply: Reply,
        target: SocketAddrV4,
        max_flows: usize,
    ) -> World {
        World {
            stack,
            plan,
            reply,
            target,
            roles: vec![Role::None; max_flows],
            clients: Vec::new(),
            free_clients: Vec::new(),
            served: Vec::new(),
            free_served: Vec::new(),
            next_local_port: LOCAL_PORTS.0,
            in_flight: 0,
            opening: 0,
            parked: std::collections::VecDeque::with_capacity(max_flows),
            tsc_origin: rdtsc(),
            tsc_per_us: (tsc_hz() / 1_000_000).max(1),
            stats: ThreadStats::new(),
            figures: WorldFigures::default(),
        }
    }

    pub fn now_us(&self) -> u64 {
        CLOCK_ORIGIN_US + rdtsc().wrapping_sub(self.tsc_origin) / self.tsc_per_us
    }

    /// Asks for the target's MAC, so the first connects do not wait on ARP.
    pub fn resolve_target(&mut self) {
        self.stack.resolve(CLIENT_PORT, (*self.target.ip()).into());
    }

    /// Runs until `s.end_us`: keeps `s.concurrency` requests in flight
    /// (at `s.rate` at most) and serves the origin's side.
    pub fn run(&mut self, s: &Schedule) {
        let mut rx = MbufBurst::<BURST>::default();
        let (mut busy, mut total) = (0u64, 0u64);
        let mut last_tsc = rdtsc();
        let mut tokens = 0.0f64;
        let mut last_refill_us = self.now_us();
        let mut next_arp_us = 0;
        loop {
            let now_us = self.now_us();
            if now_us >= s.end_us {
                break;
            }
            if now_us >= next_arp_us {
                // smoltcp forgets a neighbour after 60 s; a connect must not wait for ARP.
                next_arp_us = now_us + 20_000_000;
                self.resolve_target();
            }
            let mut work = self.stack.poll(&mut rx, now_us);
            self.settle(s, now_us);
            if let Some(rate) = s.rate {
                // At most a millisecond's worth (or one round's) saved up.
                let burst = (rate / 1000.0).max(STARTS_PER_POLL as f64);
                tokens = (tokens + rate * (now_us - last_refill_us) as f64 / 1e6).min(burst);
                last_refill_us = now_us;
            }
            work += self.start_requests(s, &mut tokens, now_us);
            self.settle(s, now_us);
            let tsc = rdtsc();
            self.stack.flush_tx_if_due(tsc, work == 0);
            let cycles = tsc.wrapping_sub(last_tsc);
            last_tsc = tsc;
            total += cycles;
            if work > 0 {
                busy += cycles;
            }
        }
        self.figures.busy = busy as f64 / total.max(1) as f64;
        self.figures.held_open = self
            .roles
            .iter()
            .filter(|r| matches!(r, Role::GenIdle { .. }))
            .count() as u64;
        let now_us = self.now_us();
        self.stack.shut_down(now_us, Duration::from_millis(20));
        self.stack.update_gauges();
        self.figures.counters = [
            Counter::RxFrames,
            Counter::TxFrames,
            Counter::TxDropped,
            Counter::FlowsAccepted,
            Counter::FlowsRefused,
            Counter::FlowsTimedOut,
            Counter::DropChecksum,
            Counter::DropMalformed,
        ]
        .iter()
        .map(|&c| (c.name(), self.stack.counters.get(c)))
        .collect();
    }

    /// Opens connections (or, on kept ones, nothing: they go on by themselves)
    /// up to the concurrency and the rate; how many it opened.
    fn start_requests(&mut self, s: &Schedule, tokens: &mut f64, now_us: u64) -> usize {
        let mut started = 0;
        while started < STARTS_PER_POLL && *tokens >= 1.0 {
            let Some((f, client)) = self.parked.pop_front() else {
                break;
            };
            if !matches!(self.roles[f as usize], Role::GenIdle { client: c } if c == client) {
                continue; // closed while parked
            }
            *tokens -= 1.0;
            started += 1;
            self.next_request(f, client, s, now_us);
        }
        while self.in_flight < s.concurrency
            && started < STARTS_PER_POLL
            && self.opening < OPENING_MAX
        {
            if s.rate.is_some() {
                if *tokens < 1.0 {
                    break;
                }
                *tokens -= 1.0;
            }
            let c = Connect {
                port_index: CLIENT_PORT,
                server: self.target.into(),
                local_ports: LOCAL_PORTS,
                next_local_port: &mut self.next_local_port,
                connect_timeout_us: self.plan.timeout_us,
                idle_timeout_us: self.plan.timeout_us.max(1_000_000),
            };
            let measured = now_us >= s.window_start_us;
            match self.stack.connect(c, now_us) {
                Ok(f) => {
                    let client = self.take_client();
                    self.clients[client as usize].begin(now_us, measured);
                    self.roles[f as usize] = Role::Gen {
                        client,
                        established: false,
                    };
                    self.stack
                        .set_deadline(f, Some(now_us + self.plan.timeout_us));
                    self.stats.connections += 1;
                    self.in_flight += 1;
                    self.opening += 1;
                    started += 1;
                }
                Err(_) => {
                    // The world's own shortage (slots, local ports): counted
                    // apart, tried again next round.
                    self.figures.connect_shortages += 1;
                    break;
                }
            }
        }
        started
    }

    fn settle(&mut self, s: &Schedule, now_us: u64) {
        loop {
            while let Some(e) = self.stack.next_event() {
                self.on_event(e, s, now_us);
            }
            if !self.stack.flush(now_us) {
                break;
            }
        }
    }

    fn on_event(&mut self, e: Event, s: &Schedule, now_us: u64) {
        match e {
            Event::Accepted { flow, .. } => {
                let served = self.take_served();
                self.roles[flow as usize] = Role::Origin { served };
                self.serve(flow, served);
            }
            Event::Connected(f) => {
                if let Role::Gen {
                    client,
                    established: false,
                } = self.roles[f as usize]
                {
                    self.opening -= 1;
                    self.roles[f as usize] = Role::Gen {
                        client,
                        established: true,
                    };
                    self.exchange(f, client, s, now_us);
                }
            }
            Event::Ready(f) => match self.roles[f as usize] {
                Role::Gen {
                    client,
                    established: true,
                } => self.exchange(f, client, s, now_us),
                Role::Gen { client, .. } => {
                    if now_us >= self.clients[client as usize].started_us + self.plan.timeout_us {
                        self.stack.socket(f).abort();
                        self.record(
                            client,
                            Response::Failed(FailureKind::ConnectTimeout),
                            s,
                            now_us,
                        );
                        self.release(f, client);
                    }
                }
                Role::Origin { served } => self.serve(f, served),
                Role::GenIdle { .. } | Role::GenDone | Role::None => {}
            },
            Event::Closed { flow, why } => {
                match self.roles[flow as usize] {
                    Role::Gen {
                        client,
                        established,
                    } => {
                        let kind = match (why, established) {
                            (Closed::Refused, _) => FailureKind::ConnectRefused,
                            (Closed::TimedOut, false) => FailureKind::ConnectTimeout,
                            (Closed::TimedOut, true) => FailureKind::Timeout,
                            (Closed::Reset, _) => FailureKind::Reset,
                            (Closed::Ended, false) => FailureKind::ConnectError,
                            (Closed::Ended, true) => FailureKind::Truncated,
                        };
                        self.record(client, Response::Failed(kind), s, now_us);
                        self.release(flow, client);
                    }
                    Role::Origin { served } => self.free_served.push(served),
                    Role::GenIdle { client } => {
                        // The server closed a kept connection between requests.
                        self.free_clients.push(client);
                        self.in_flight -= 1;
                    }
                    Role::GenDone | Role::None => {}
                }
                self.roles[flow as usize] = Role::None;
            }
        }
    }

    /// Moves a generator connection's request on.
    fn exchange(&mut self, f: FlowId, client: u32, s: &Schedule, now_us: u64) {
        let sock = self.stack.socket(f);
        let Some(out) = self.clients[client as usize].step(sock, &self.plan, now_us) else {
            return;
        };
        self.record(client, out, s, now_us);
        if matches!(out, Response::Ok { close: false }) && self.plan.keep_alive && now_us < s.end_us
        {
            if self.plan.hold_open {
                // Answered once; now it only stays open (no timer of ours).
                self.roles[f as usize] = Role::GenIdle { client };
                self.stack.set_deadline(f, None);
                self.stack.set_idle_timeout(f, u64::MAX / 4, now_us);
                return;
            }
            if s.rate.is_some() {
                // Its next request waits for the rate (`start_requests`).
                self.roles[f as usize] = Role::GenIdle { client };
                self.stack.set_deadline(f, None);
                self.parked.push_back((f, client));
                return;
            }
            return self.next_request(f, client, s, now_us);
        }
        self.release(f, client);
        let sock = self.stack.socket(f);
        if matches!(out, Response::Ok { .. }) {
            sock.close();
        } else {
            sock.abort();
        }
        self.stack.set_deadline(f, None);
    }

    /// The next request on a kept connection.
    fn next_request(&mut self, f: FlowId, client: u32, s: &Schedule, now_us: u64) {
        self.clients[client as usize].begin(now_us, now_us >= s.window_start_us);
        self.roles[f as usize] = Role::Gen {
            client,
            established: true,
        };
        self.stack
            .set_deadline(f, Some(now_us + self.plan.timeout_us));
        self.exchange(f, client, s, now_us);
    }

    /// Counts a request's outcome.
    fn record(&mut self, client: u32, out: Response, s: &Schedule, now_us: u64) {
        let c = &self.clients[client as usize];
        let at = Duration::from_micros(now_us.saturating_sub(s.window_start_us));
        let measured = c.measured && now_us < s.end_us;
        self.stats.ended_all += 1;
        self.stats.received(c.received(), measured.then_some(at));
        if !measured {
            return;
        }
        self.stats.bytes_received += c.received();
        self.stats.bytes_sent += c.sent() as u64;
        match out {
            Response::Ok { .. } => {
                self.stats.status(200);
                self.stats
                    .success(Duration::from_micros(now_us - c.started_us), at);
            }
            Response::Failed(kind) => self.stats.failure(kind, at),
        }
    }

    /// The connection's request is over: its client state goes back to the pool.
    fn release(&mut self, f: FlowId, client: u32) {
        if matches!(
            self.roles[f as usize],
            Role::Gen {
                established: false,
                ..
            }
        ) {
            self.opening -= 1;
        }
        self.roles[f as usize] = Role::GenDone;
        self.free_clients.push(client);
        self.in_flight -= 1;
    }

    /// Moves an origin connection on.
    fn serve(&mut self, f: FlowId, served: u32) {
        let sock = self.stack.socket(f);
        let s = &mut self.served[served as usize];
        let before = s.answered;
        let next = s.step(sock, &self.reply);
        self.figures.origin_requests += s.answered - before;
        match next {
            Next::Wait => {}
            Next::Close => sock.close(),
            Next::Abort => {
                self.figures.origin_aborts += 1;
                sock.abort();
            }
        }
    }

    fn take_client(&mut self) -> u32 {
        self.free_clients.pop().unwrap_or_else(|| {
            self.clients.push(Client::new(&self.plan));
            self.clients.len() as u32 - 1
        })
    }

    fn take_served(&mut self) -> u32 {
        match self.free_served.pop() {
            Some(i) => {
                self.served[i as usize].reset();
                i
            }
            None => {
                self.served.push(Served::default());
                self.served.len() as u32 - 1
            }
        }
    }
}
