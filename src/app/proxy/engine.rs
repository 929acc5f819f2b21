//! The proxy on one core: client sessions, the upstream groups they go to,
//! idle connection pools, connects, health probes, reloads and per-server
//! figures. It works on flows of the core's [`Stack`] and learns what
//! happened to them only from the stack's events.

use super::ratelimit::RequestLimiter;
use std::net::SocketAddr;
use std::sync::Arc;

use super::balance::{self, Balancer};
use super::client_limits::{OpenPerClient, Refused};
use super::headers::RequestIds;
use super::health::{self, HealthCheck, ServerHealth};
use super::proxy_protocol::{AcceptProxy, Version};
use super::session::{Cause, Lent, Mode, Routes, Session, Step};
use super::tls::{Io, ServerTls, TlsFlows, UpstreamTls};

mod probes;
mod tls;
use crate::app::outcome::Outcomes;
use crate::net::counters::Counter;
use crate::net::stack::{Closed, Connect, FlowId, Stack};

/// Idle pooled upstream connections are closed after this long (below
/// nginx's default keepalive_timeout of 75 s, so we close first).
const POOL_IDLE_US: u64 = 30_000_000;
/// Upstream attachments a session may go through in one call (retries).
const ATTACH_ROUNDS: usize = 8;
/// Pump-and-drive rounds of a TLS client per event (records behind records).
const TLS_ROUNDS: usize = 4;

/// An upstream group as a core uses it.
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
    /// The PROXY protocol header sent first on each connection (no pooling then).
    pub proxy_protocol: Option<Version>,
    /// TLS to the servers.
    pub tls: Option<UpstreamTls>,
}

impl GroupSpec {
    /// How long an upstream connection in use may stay silent.
    fn upstream_idle_us(&self) -> u64 {
        self.read_timeout_us.max(self.connect_timeout_us)
    }
}

/// One upstream server's figures, as published for the management endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamStat {
    pub group: String,
    pub server: SocketAddr,
    pub requests: u64,
    pub connect_failures: u64,
    pub active: u32,
    pub healthy: bool,
    pub retired: bool,
    /// A backup server (takes traffic only while no primary is up).
    pub backup: bool,
    pub response_us_sum: u64,
    pub responses: u64,
}

struct Group {
    spec: GroupSpec,
    next_local_port: u16,
    /// Idle upstream flows per server, most recently used last.
    pools: Vec<Vec<FlowId>>,
    /// Active health check state per server.
    health: Vec<ServerHealth>,
}

impl Group {
    fn new(spec: GroupSpec, seed: u64) -> Group {
        let (lo, hi) = spec.local_ports;
        let span = u64::from(hi - lo) + 1;
        Group {
            // Start somewhere random, so that a restarted zproxy does not
            // reuse the tuples of the previous run first.
            next_local_port: lo + (seed % span) as u16,
            pools: vec![Vec::with_capacity(spec.keepalive); spec.balancer.servers.len()],
            health: vec![ServerHealth::default(); spec.balancer.servers.len()],
            spec,
        }
    }

    /// Takes a reload's spec: same servers at the same indices, maybe more.
    fn reload(&mut self, spec: GroupSpec) {
        let was_live: Vec<bool> = self
            .spec
            .balancer
            .servers
            .iter()
            .map(|s| !s.retired)
            .collect();
        let check_changed = self.spec.health != spec.health;
        self.spec.connect_timeout_us = spec.connect_timeout_us;
        self.spec.read_timeout_us = spec.read_timeout_us;
        self.spec.keepalive = spec.keepalive;
        self.spec.local_ports = spec.local_ports;
        self.spec.health = spec.health;
        self.spec.proxy_protocol = spec.proxy_protocol;
        self.spec.tls = spec.tls;
        self.spec.balancer.update(spec.balancer);
        let n = self.spec.balancer.servers.len();
        self.pools
            .resize_with(n, || Vec::with_capacity(spec.keepalive));
        self.health.resize_with(n, ServerHealth::default);
        if check_changed {
            for h in &mut self.health {
                h.restart();
            }
            if self.spec.health.is_none() {
                // Nothing would ever bring back a server the old check took out.
                for s in &mut self.spec.balancer.servers {
                    s.healthy = true;
                }
            }
        }
        for s in 0..n {
            // Added now, or back after a reload had retired it: its old
            // state says nothing about it.
            if !was_live.get(s).copied().unwrap_or(false) && !self.spec.balancer.servers[s].retired
            {
                self.admit(s);
            }
        }
    }

    /// A server a reload brought in: with a health check it takes no
    /// traffic until its first probe (due at once) passes; without one it
    /// takes traffic now (connect failures still mark it down).
    fn admit(&mut self, s: usize) {
        let checked = self.spec.health.is_some();
        self.spec.balancer.servers[s].healthy = !checked;
        self.health[s] = if checked {
            ServerHealth::undecided()
        } else {
            ServerHealth::default()
        };
    }
}

/// What the proxy uses a flow for.
// One per flow slot, made once: boxing the session (with its record) would
// allocate per connection.
#[allow(clippy::large_enum_variant)]
enum Conn {
    None,
    /// An accepted connection proxied to upstreams.
    Client {
        session: Session,
        listener: usize,
        upstream: Option<FlowId>,
    },
    /// A connection to an upstream server, attached to a client or pooled.
    Upstream {
        group: usize,
        server: usize,
        client: Option<FlowId>,
        /// Not yet established (a failure now is the server's).
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

pub struct Proxy {
    groups: Vec<Group>,
    conns: crate::app::slot_vec::SlotVec<Conn>,
    /// Per listener: its routes (HTTP listeners only), by listener index.
    routes: Vec<Option<Arc<Routes>>>,
    scratch: Box<[u8]>,
    seed: u64,
    /// Request rate-limit buckets (routes' and listeners' `rate_limit`).
    limiter: RequestLimiter,
    /// Connections per real client behind trusted proxies (see `client_limits`).
    pub open: OpenPerClient,
    /// Exchanges that ended, for the worker to take after each event.
    pub outcomes: Outcomes,
    /// This worker's request ids (the worker numbers what the proxy does not).
    pub ids: RequestIds,
    /// TLS state of the flows that have it, and the handshake budget.
    pub tls: TlsFlows,
    /// Flows whose handshake waited for the budget, driven next iteration.
    deferred: Vec<FlowId>,
}

impl Proxy {
    pub fn new(
        groups: Vec<GroupSpec>,
        routes: Vec<Option<Arc<Routes>>>,
        max_flows: usize,
        scratch_len: usize,
        seed: u64,
        limiter: RequestLimiter,
    ) -> Proxy {
        Proxy {
            groups: groups
                .into_iter()
                .enumerate()
                .map(|(i, g)| Group::new(g, spread(seed, i)))
                .collect(),
            conns: crate::app::slot_vec::SlotVec::new(max_flows, || Conn::None),
            routes,
            scratch: vec![0u8; scratch_len].into_boxed_slice(),
            seed,
            limiter,
            open: OpenPerClient::default(),
            outcomes: Outcomes::new(),
            ids: RequestIds::default(),
            tls: TlsFlows::new(max_flows, crate::config::DEFAULT_HANDSHAKES_PER_POLL),
            deferred: Vec::with_capacity(max_flows),
        }
    }

    /// Request rate-limit buckets in use; buckets evicted before they were full.
    pub fn rate_limit_state(&self) -> (usize, u64) {
        (self.limiter.used(), self.limiter.evictions())
    }

    /// A client of a proxying listener arrived (`group`: a TCP listener's).
    #[allow(clippy::too_many_arguments)]
    pub fn accept(
        &mut self,
        stack: &mut Stack,
        f: FlowId,
        listener: usize,
        mode: Mode,
        group: usize,
        header_timeout_us: u64,
        accept_proxy: Option<&Arc<AcceptProxy>>,
        tls: Option<&ServerTls>,
        now_us: u64,
    ) {
        let (Some(client), Some(local)) = (stack.remote(f), stack.local(f)) else {
            return; // closed before it was taken (the stack skips such events)
        };
        if let Some(tls) = tls {
            let plain_len = stack.socket(f).recv_capacity();
            if !self.tls.accept(f, tls, plain_len, now_us) {
                stack.socket(f).abort();
                return;
            }
        }
        let client_ip = client.ip();
        let read_timeout_us = match mode {
            Mode::Tcp => self.groups[group].spec.read_timeout_us,
            Mode::Http => 0,
        };
        let mut session = Session::new(mode, client_ip, group, read_timeout_us, header_timeout_us);
        session.set_origin(listener, (client_ip, client.port()), now_us);
        let trusted = accept_proxy.filter(|a| a.trusts(client_ip)).cloned();
        session.set_proxying(local, trusted);
        self.conns[f as usize] = Conn::Client {
            session,
            listener,
            upstream: None,
        };
        self.drive(stack, f, now_us);
    }

    /// Frames arrived or a timer fired on `f`.
    pub fn ready(&mut self, stack: &mut Stack, f: FlowId, now_us: u64) {
        match self.conns[f as usize] {
            Conn::Client { .. } => self.drive(stack, f, now_us),
            Conn::Upstream {
                client: Some(c), ..
            } => self.drive(stack, c, now_us),
            Conn::Upstream { client: None, .. } => self.check_pooled(stack, f),
            Conn::Probe { .. } => self.advance_probe(stack, f),
            Conn::None => {}
        }
    }

    /// A connection to an upstream reached ESTABLISHED.
    pub fn connected(&mut self, f: FlowId) {
        if let Conn::Upstream {
            group,
            server,
            connecting,
            ..
        } = &mut self.conns[f as usize]
        {
            if *connecting {
                *connecting = false;
                self.groups[*group].spec.balancer.connected(*server);
            }
        }
    }

    /// `f` is gone. Only a refused or timed-out connect counts against the
    /// server: one that we abandoned (its client left) says nothing about it.
    pub fn closed(&mut self, stack: &mut Stack, f: FlowId, why: Closed, now_us: u64) {
        let tls_failed = self.tls.closed(f);
        match std::mem::replace(&mut self.conns[f as usize], Conn::None) {
            Conn::None => {}
            Conn::Client {
                mut session,
                upstream,
                ..
            } => {
                session.client_gone(now_us);
                collect(&mut self.outcomes, &mut session);
                if let Some(client) = session.take_counted() {
                    self.open.release(client);
                }
                if let Some(u) = upstream {
                    // The client is gone: its upstream exchange cannot finish.
                    self.unlink_upstream(stack, u);
                    let sock = stack.socket(u);
                    if sock.may_send() || sock.may_recv() {
                        sock.abort();
                    }
                }
            }
            Conn::Upstream {
                group,
                server,
                client,
                connecting,
            } => {
                if connecting && matches!(why, Closed::Refused | Closed::TimedOut) {
                    stack.counters.add(Counter::UpstreamConnectFailures, 1);
                    let g = &mut self.groups[group].spec;
                    let since = now_us.saturating_sub(g.connect_timeout_us);
                    let local = stack.lost_locally_since(since);
                    if balance::failure_is_the_servers(why == Closed::TimedOut, local) {
                        g.balancer.connect_failed(server, now_us);
                    } else {
                        stack.counters.add(Counter::UpstreamTimeoutsExcused, 1);
                    }
                }
                remove_from_pool(&mut self.groups[group].pools[server], f);
                if let Some(c) = client {
                    self.servers_active_dec(group, server);
                    stack.reserve(c);
                    let Conn::Client {
                        session, upstream, ..
                    } = &mut self.conns[c as usize]
                    else {
                        unreachable!("upstreams are linked to clients")
                    };
                    *upstream = None;
                    let graceful =
                        why == Closed::Ended && (session.mode == Mode::Tcp || session.relays());
                    if !graceful {
                        // A failed connect is retried on another server (the request was not sent).
                        let cause = match why {
                            _ if tls_failed => Cause::Tls,
                            Closed::Refused => Cause::Refused,
                            Closed::TimedOut => Cause::Timeout,
                            Closed::Reset | Closed::Ended => Cause::Reset,
                        };
                        session.set_now(now_us);
                        let step = session.upstream_lost(
                            &mut Io::new(stack.socket(c), self.tls.get(c)),
                            connecting,
                            cause,
                        );
                        count_failure(stack, c, session);
                        collect(&mut self.outcomes, session);
                        self.apply_step(stack, c, step, now_us);
                    }
                    self.sync_deadline(stack, c);
                }
            }
            Conn::Probe {
                group,
                server,
                decided,
                ..
            } => {
                if !decided {
                    self.probe_result(group, server, false);
                }
            }
        }
    }

    /// Runs a client's session until it needs nothing more, then sets its wake-up.
    fn drive(&mut self, stack: &mut Stack, c: FlowId, now_us: u64) {
        // TLS: more plaintext may wait behind what the session took.
        for _ in 0..TLS_ROUNDS {
            let step = self.session_step(stack, c, now_us);
            self.apply_step(stack, c, step, now_us);
            if !self.tls.is_tls(c) || !self.tls.more(c, stack.socket(c)) {
                break;
            }
        }
        self.sync_deadline(stack, c);
    }

    /// The stack wakes a client when its session's deadline passes.
    fn sync_deadline(&self, stack: &mut Stack, c: FlowId) {
        if let Conn::Client { session, .. } = &self.conns[c as usize] {
            let tls = self.tls.deadline(c);
            let d = match (session.deadline_us(), tls) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            stack.set_deadline(c, d);
        }
    }

    /// Does what the session asked, and lets it go on, until it waits.
    fn apply_step(&mut self, stack: &mut Stack, c: FlowId, mut step: Step, now_us: u64) {
        for _ in 0..ATTACH_ROUNDS {
            match step {
                Step::Idle => return,
                Step::NeedUpstream { group } => {
                    if let Err(cause) = self.attach_upstream(stack, c, group, now_us) {
                        stack.counters.add(Counter::NoUpstream, 1);
                        let Conn::Client { session, .. } = &mut self.conns[c as usize] else {
                            unreachable!()
                        };
                        session.set_now(now_us);
                        session.no_upstream(&mut Io::new(stack.socket(c), self.tls.get(c)), cause);
                        count_failure(stack, c, session);
                        collect(&mut self.outcomes, session);
                        return;
                    }
                }
                Step::ReleaseUpstream { reusable } => {
                    self.detach_upstream(stack, c, reusable, now_us)
                }
                Step::Tunnel { idle_us } => self.tunnel_idle(stack, c, idle_us, now_us),
            }
            step = self.session_step(stack, c, now_us);
        }
    }

    /// An upgraded connection: both flows (and their sockets' own timeouts,
    /// set from the listener's idle or the group's read timeout) get the
    /// tunnel's idle timeout.
    fn tunnel_idle(&mut self, stack: &mut Stack, c: FlowId, idle_us: u64, now_us: u64) {
        if let Conn::Client { upstream, .. } = &self.conns[c as usize] {
            for f in upstream.iter().copied().chain([c]) {
                stack.set_idle_timeout(f, idle_us, now_us);
                let idle = smoltcp::time::Duration::from_micros(idle_us);
                stack.socket(f).set_timeout(Some(idle));
            }
        }
    }

    /// One call into the session with both sockets.
    fn session_step(&mut self, stack: &mut Stack, c: FlowId, now_us: u64) -> Step {
        let Conn::Client {
            session,
            listener,
            upstream,
        } = &mut self.conns[c as usize]
        else {
            return Step::Idle; // closed meanwhile
        };
        if self.tls.pump(c, stack.socket(c), now_us) {
            session.set_tls(self.tls.get(c).and_then(|t| t.params()));
        }
        if let Some(u) = *upstream {
            self.tls.pump(u, stack.socket(u), now_us);
        }
        self.tls.count(&mut stack.counters);
        let (ctls, utls) = self.tls.pair(c, *upstream);
        let (csock, usock) = match *upstream {
            Some(u) => {
                let (cs, us) = stack.pair(c, u);
                (cs, Some(us))
            }
            None => (stack.socket(c), None),
        };
        let csock = &mut Io::new(csock, ctls);
        let mut usock = usock.map(|u| Io::new(u, utls));
        let usock = usock.as_mut();
        let requests_before = session.requests;
        let step = if session.deadline_us().is_some_and(|d| now_us >= d) {
            session.set_now(now_us);
            session.timed_out(csock, usock)
        } else {
            let routes = self.routes[*listener].as_deref();
            session.drive(
                csock,
                usock,
                Lent {
                    routes,
                    limiter: &mut self.limiter,
                    open: &mut self.open,
                    ids: &mut self.ids,
                    scratch: &mut self.scratch,
                },
                now_us,
            )
        };
        self.tls.seal(c, stack.socket(c));
        if let Some(u) = *upstream {
            self.tls.seal(u, stack.socket(u));
        }
        count_failure(stack, c, session);
        collect(&mut self.outcomes, session);
        stack.counters.add(
            Counter::Requests,
            u64::from(session.requests - requests_before),
        );
        if let (Some(us), Some(u)) = (session.take_response_time(), *upstream) {
            if let Conn::Upstream { group, server, .. } = self.conns[u as usize] {
                let s = &mut self.groups[group].spec.balancer.servers[server];
                s.response_us_sum += us;
                s.responses += 1;
            }
        }
        step
    }

    /// Gives client `c` an upstream connection of `group`: an idle one from
    /// the pool, or a new connect; why not when none can be had.
    fn attach_upstream(
        &mut self,
        stack: &mut Stack,
        c: FlowId,
        group: usize,
        now_us: u64,
    ) -> Result<(), Cause> {
        let Conn::Client { session, .. } = &self.conns[c as usize] else {
            unreachable!()
        };
        let (client_ip, tried): (std::net::IpAddr, u64) = (session.client_ip, session.tried);
        let fresh = session.wants_fresh(); // a replay: not on a pooled connection again
        let g = &mut self.groups[group];
        let key = session.request_key();
        let Some(server) = g.spec.balancer.pick_for(client_ip, key, now_us, tried) else {
            return Err(Cause::NoServer);
        };
        // Reuse an idle connection when one is still good.
        let mut reused = None;
        while let Some(u) = if fresh { None } else { g.pools[server].pop() } {
            if !stack.take_evictable(u) {
                continue; // evicted for a slot meanwhile: no longer ours
            }
            let sock = stack.socket(u);
            if sock.state() == smoltcp::socket::tcp::State::Established
                && sock.recv_queue() == 0
                && sock.may_send()
            {
                reused = Some(u);
                stack.counters.add(Counter::UpstreamReused, 1);
                stack.set_idle_timeout(u, g.spec.upstream_idle_us(), now_us);
                break;
            }
            sock.abort();
        }
        let u = match reused {
            Some(u) => u,
            None => {
                let addr = g.spec.balancer.servers[server].address;
                let opened = stack.connect(
                    Connect {
                        port_index: g.spec.port_index,
                        server: addr,
                        local_ports: g.spec.local_ports,
                        next_local_port: &mut g.next_local_port,
                        connect_timeout_us: g.spec.connect_timeout_us,
                        idle_timeout_us: g.spec.upstream_idle_us(),
                    },
                    now_us,
                );
                match opened {
                    Ok(u) => {
                        stack.counters.add(Counter::UpstreamConnects, 1);
                        self.conns[u as usize] = Conn::Upstream {
                            group,
                            server,
                            client: None,
                            connecting: true,
                        };
                        u
                    }
                    // This core's shortage, not the server's failure: the
                    // server stays untried (503, not 502).
                    Err(e) => {
                        log::debug!("connect to {addr}: {e}");
                        return Err(Cause::NoSlot);
                    }
                }
            }
        };
        let ip = self.groups[group].spec.balancer.servers[server]
            .address
            .ip();
        if reused.is_none() && !self.start_upstream_tls(stack, u, group, ip) {
            stack.socket(u).abort();
            return Err(Cause::Tls);
        }
        let read_timeout_us = self.groups[group].spec.read_timeout_us;
        let addr = self.groups[group].spec.balancer.servers[server].address;
        let proxy_header = self.groups[group].spec.proxy_protocol;
        let Conn::Client {
            session, upstream, ..
        } = &mut self.conns[c as usize]
        else {
            unreachable!()
        };
        session.tried |= 1 << (server % 64);
        session.attached(group, server, addr, reused.is_some());
        session.send_proxy_header(proxy_header.filter(|_| reused.is_none()));
        session.set_read_timeout_us(read_timeout_us);
        *upstream = Some(u);
        let Conn::Upstream { client, .. } = &mut self.conns[u as usize] else {
            unreachable!("pools and connects hold upstreams")
        };
        *client = Some(c);
        let s = &mut self.groups[group].spec.balancer.servers[server];
        s.requests += 1;
        s.active += 1;
        stack.unreserve(c);
        stack.set_hold_unread(u, true);
        Ok(())
    }

    /// Cuts upstream `u` from its client (the client's side is the caller's).
    fn unlink_upstream(&mut self, stack: &mut Stack, u: FlowId) {
        if let Conn::Upstream {
            group,
            server,
            client,
            ..
        } = &mut self.conns[u as usize]
        {
            if client.take().is_some() {
                let (g, s) = (*group, *server);
                self.servers_active_dec(g, s);
            }
        }
        stack.set_hold_unread(u, false);
    }

    fn servers_active_dec(&mut self, group: usize, server: usize) {
        let s = &mut self.groups[group].spec.balancer.servers[server];
        s.active = s.active.saturating_sub(1);
    }

    /// The session is done with its upstream: pool it or close it.
    fn detach_upstream(&mut self, stack: &mut Stack, c: FlowId, reusable: bool, now_us: u64) {
        let Conn::Client { upstream, .. } = &mut self.conns[c as usize] else {
            return;
        };
        let Some(u) = upstream.take() else { return };
        self.unlink_upstream(stack, u);
        // Its client is promised a slot again: when none is spare, this
        // connection gives its own back at once.
        stack.reserve(c);
        let short = stack.spare_slots() < 0;
        let Conn::Upstream { group, server, .. } = self.conns[u as usize] else {
            unreachable!("peers of clients are upstreams")
        };
        let g = &mut self.groups[group];
        let retired = g.spec.balancer.servers[server].retired;
        let pool = &mut g.pools[server];
        let sock = stack.socket(u);
        let established = sock.state() == smoltcp::socket::tcp::State::Established;
        if reusable && !retired && !short && established && pool.len() < g.spec.keepalive {
            pool.push(u);
            stack.set_evictable(u);
            stack.set_idle_timeout(u, POOL_IDLE_US, now_us);
        } else if established && !short {
            sock.close();
        } else {
            sock.abort();
        }
    }

    /// An idle pooled upstream got a frame: anything but a quiet open
    /// connection (FIN, RST, unexpected bytes) means it cannot be reused.
    fn check_pooled(&mut self, stack: &mut Stack, u: FlowId) {
        let sock = stack.socket(u);
        if sock.state() != smoltcp::socket::tcp::State::Established || sock.recv_queue() > 0 {
            if sock.may_send() {
                sock.close();
            } else {
                sock.abort();
            }
            if let Conn::Upstream { group, server, .. } = self.conns[u as usize] {
                if stack.take_evictable(u) {
                    remove_from_pool(&mut self.groups[group].pools[server], u);
                }
            }
        }
    }

    /// Takes new groups and routes. Indices of existing groups and servers
    /// stay (open connections keep theirs); retired servers get no new
    /// requests and lose their idle pooled connections now.
    pub fn reload(
        &mut self,
        stack: &mut Stack,
        groups: Vec<GroupSpec>,
        routes: Vec<Option<Arc<Routes>>>,
    ) {
        for (i, spec) in groups.into_iter().enumerate() {
            match self.groups.get_mut(i) {
                Some(g) => g.reload(spec),
                None => {
                    let mut g = Group::new(spec, spread(self.seed, i));
                    for s in 0..g.health.len() {
                        g.admit(s);
                    }
                    self.groups.push(g);
                }
            }
        }
        self.routes = routes;
        for g in &mut self.groups {
            for (s, pool) in g.pools.iter_mut().enumerate() {
                if g.spec.balancer.servers[s].retired {
                    for u in pool.drain(..) {
                        if stack.take_evictable(u) {
                            stack.socket(u).close();
                        }
                    }
                }
            }
        }
        // Added servers' MACs now, so that their first probe (due at once)
        // does not wait for ARP.
        self.resolve_servers(stack);
        log::info!(
            "worker: config reloaded ({} upstream groups)",
            self.groups.len()
        );
    }

    /// Shutting down: idle clients and pooled upstreams close now; an
    /// exchange in flight finishes with `Connection: close`.
    pub fn drain(&mut self, stack: &mut Stack) {
        for f in 0..self.conns.built() as FlowId {
            match &mut self.conns[f as usize] {
                Conn::Client { session, .. } => {
                    session.drain(&mut Io::new(stack.socket(f), self.tls.get(f)))
                }
                Conn::Upstream {
                    group,
                    server,
                    client: None,
                    ..
                } if stack.take_evictable(f) => {
                    remove_from_pool(&mut self.groups[*group].pools[*server], f);
                    stack.socket(f).close();
                }
                _ => {}
            }
        }
    }

    /// Every upstream server's next hop is kept resolved.
    pub fn resolve_servers(&self, stack: &mut Stack) {
        for g in &self.groups {
            for s in &g.spec.balancer.servers {
                stack.resolve(g.spec.port_index, s.address.ip());
            }
        }
    }

    /// Idle pooled connections.
    pub fn pooled(&self) -> u64 {
        self.groups
            .iter()
            .flat_map(|g| &g.pools)
            .map(|p| p.len() as u64)
            .sum()
    }

    /// Per-server figures, for the management endpoint.
    pub fn stats(&self, out: &mut Vec<UpstreamStat>) {
        out.clear();
        for g in &self.groups {
            for s in &g.spec.balancer.servers {
                out.push(UpstreamStat {
                    group: g.spec.name.clone(),
                    server: s.address,
                    requests: s.requests,
                    connect_failures: s.failures,
                    active: s.active,
                    healthy: s.healthy,
                    retired: s.retired,
                    backup: s.backup,
                    response_us_sum: s.response_us_sum,
                    responses: s.responses,
                });
            }
        }
    }
}

/// Takes the exchange the session ended, if any, for the worker.
fn collect(outcomes: &mut Outcomes, session: &mut Session) {
    if let Some(o) = session.take_outcome() {
        outcomes.push(o);
    }
}

/// Counts the session's failure, if it had one, by cause (and says why at debug level).
fn count_failure(stack: &mut Stack, c: FlowId, session: &mut Session) {
    if session.take_retry() {
        stack.counters.add(Counter::UpstreamReuseRetries, 1);
    }
    if let Some(why) = session.take_refusal() {
        let counter = match why {
            Refused::Acl => Counter::RefusedAcl,
            Refused::PerSource => Counter::RefusedPerSource,
            Refused::Rate => Counter::RefusedRateLimit,
        };
        stack.counters.add(counter, 1);
    }
    let Some(failure) = session.take_error() else {
        return;
    };
    stack.counters.add(Counter::ProxyErrors, 1);
    stack.counters.add(cause_counter(failure.cause), 1);
    if log::log_enabled!(log::Level::Debug) {
        let client = stack.remote(c).map(|a| a.ip());
        match failure.status {
            Some(status) => log::debug!("client {client:?}: {status} ({})", failure.cause.label()),
            None => log::debug!("client {client:?}: cut ({})", failure.cause.label()),
        }
    }
}

/// The counter of each failure cause (`zproxy_proxy_failures_total{cause}`).
fn cause_counter(cause: Cause) -> Counter {
    match cause {
        Cause::Refused => Counter::FailRefused,
        Cause::Reset => Counter::FailReset,
        Cause::Timeout => Counter::FailTimeout,
        Cause::NoServer => Counter::FailNoServer,
        Cause::NoSlot => Counter::FailNoSlot,
        Cause::BadResponse => Counter::FailBadResponse,
        Cause::BadRequest => Counter::FailBadRequest,
        Cause::ClientAbort => Counter::FailClientAbort,
        Cause::RateLimited => Counter::FailRateLimited,
        Cause::Tls => Counter::FailTls,
    }
}

fn remove_from_pool(pool: &mut Vec<FlowId>, f: FlowId) {
    if let Some(i) = pool.iter().position(|&s| s == f) {
        pool.swap_remove(i);
    }
}

/// A group's own start from the worker's seed (Fibonacci hashing's multiplier).
fn spread(seed: u64, group: usize) -> u64 {
    (seed ^ group as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16
}
