//! A worker's TLS connections, by flow slot, and its handshake budget.
//!
//! # Handshake budget
//!
//! A full handshake is a burst of CPU on a polling core (RSA-2048: about a
//! millisecond), during which every other flow of the core waits. A worker
//! runs at most `runtime.tls_handshakes_per_poll` handshake steps (a step:
//! rustls processing the ciphertext of a connection still handshaking) per
//! poll-loop iteration; a connection over the budget keeps its ciphertext
//! in its receive ring and waits in `deferred` for the next iteration
//! (`Proxy::begin_poll`). Established connections are never deferred.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use super::conn::{Pumped, TlsConn, TlsFailure};
use crate::net::counters::{Counter, Counters};
use crate::net::stack::FlowId;

/// TLS of a listener, as a worker uses it.
pub struct ServerTls {
    /// `None` when the listener's certificates failed to load (on a reload
    /// that raced a file change): its connections are refused.
    pub config: Option<Arc<ServerConfig>>,
    pub handshake_timeout_us: u64,
}

/// TLS to an upstream group's servers.
#[derive(Clone)]
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    /// The name sent and verified; `None`: each server's address.
    pub sni: Option<ServerName<'static>>,
}

pub struct TlsFlows {
    conns: Vec<Option<Box<TlsConn>>>,
    /// Handshake steps left in this poll iteration.
    budget: u32,
    per_poll: u32,
    /// Connections that waited for the budget (each once: `waiting`).
    deferred: Vec<FlowId>,
    waiting: Vec<bool>,
    /// The flow's TLS failed (an upstream's then fails with cause `tls`).
    failed: Vec<bool>,
    counts: Counts,
}

/// What `pump` saw since the last `count`.
#[derive(Default)]
struct Counts {
    handshakes: u64,
    resumed: u64,
    protocol: u64,
    alerts: u64,
    timeouts: u64,
    deferred: u64,
}

impl TlsFlows {
    pub fn new(max_flows: usize, per_poll: u32) -> TlsFlows {
        TlsFlows {
            conns: (0..max_flows).map(|_| None).collect(),
            budget: per_poll,
            per_poll,
            deferred: Vec::with_capacity(max_flows),
            waiting: vec![false; max_flows],
            failed: vec![false; max_flows],
            counts: Counts::default(),
        }
    }

    /// The handshake steps each poll iteration may run.
    pub fn set_per_poll(&mut self, n: u32) {
        self.per_poll = n;
    }

    /// A client of a TLS listener arrived; false when it cannot be served.
    pub fn accept(&mut self, f: FlowId, tls: &ServerTls, plain_len: usize, now_us: u64) -> bool {
        let Some(cfg) = &tls.config else { return false };
        let Ok(conn) = ServerConnection::new(cfg.clone()) else {
            return false;
        };
        let deadline = now_us + tls.handshake_timeout_us;
        self.conns[f as usize] = Some(Box::new(TlsConn::new(
            Connection::Server(conn),
            plain_len,
            deadline,
        )));
        true
    }

    /// A new connection to an upstream server of a TLS group.
    pub fn connect(
        &mut self,
        u: FlowId,
        tls: &UpstreamTls,
        server: std::net::IpAddr,
        plain_len: usize,
        deadline_us: u64,
    ) -> bool {
        let name = tls
            .sni
            .clone()
            .unwrap_or(ServerName::IpAddress(server.into()));
        let Ok(conn) = ClientConnection::new(tls.config.clone(), name) else {
            return false;
        };
        self.conns[u as usize] = Some(Box::new(TlsConn::new(
            Connection::Client(conn),
            plain_len,
            deadline_us,
        )));
        true
    }

    pub fn is_tls(&self, f: FlowId) -> bool {
        self.conns[f as usize].is_some()
    }

    pub fn get(&mut self, f: FlowId) -> Option<&mut TlsConn> {
        self.conns[f as usize].as_deref_mut()
    }

    /// Both of a session's connections (`u` differs from `c`).
    pub fn pair(
        &mut self,
        c: FlowId,
        u: Option<FlowId>,
    ) -> (Option<&mut TlsConn>, Option<&mut TlsConn>) {
        let Some(u) = u else {
            return (self.conns[c as usize].as_deref_mut(), None);
        };
        let (c, u) = (c as usize, u as usize);
        if c < u {
            let (a, b) = self.conns.split_at_mut(u);
            (a[c].as_deref_mut(), b[0].as_deref_mut())
        } else {
            let (a, b) = self.conns.split_at_mut(c);
            (b[0].as_deref_mut(), a[u].as_deref_mut())
        }
    }

    /// The flow is gone; whether its TLS had failed.
    pub fn closed(&mut self, f: FlowId) -> bool {
        self.conns[f as usize] = None;
        std::mem::take(&mut self.failed[f as usize])
    }

    /// When the flow's handshake must have finished.
    pub fn deadline(&self, f: FlowId) -> Option<u64> {
        let t = self.conns[f as usize].as_deref()?;
        (t.deadline_us != 0 && t.is_handshaking()).then_some(t.deadline_us)
    }

    /// Pumps `f`'s TLS with the socket (nothing for a plain flow) and
    /// notes what happened for `count`. True when the handshake has just
    /// finished (the session learns the version and suite then).
    pub fn pump(
        &mut self,
        f: FlowId,
        sock: &mut smoltcp::socket::tcp::Socket<'static>,
        now_us: u64,
    ) -> bool {
        let Some(t) = self.conns[f as usize].as_deref_mut() else {
            return false;
        };
        if t.expire(now_us) {
            sock.abort();
        } else if t.pump(sock, &mut self.budget) == Pumped::Deferred && !self.waiting[f as usize] {
            self.waiting[f as usize] = true;
            self.deferred.push(f);
            self.counts.deferred += 1;
        }
        let established = t.take_established();
        if let Some(resumed) = established {
            self.counts.handshakes += 1;
            self.counts.resumed += u64::from(resumed);
        }
        if let Some(failure) = t.take_failure() {
            self.failed[f as usize] = true;
            match failure {
                TlsFailure::Protocol | TlsFailure::Certificate => self.counts.protocol += 1,
                TlsFailure::Alert => self.counts.alerts += 1,
                TlsFailure::HandshakeTimeout => self.counts.timeouts += 1,
            }
        }
        established.is_some()
    }

    /// The session's writes to `f` in this call go out as records.
    pub fn seal(&mut self, f: FlowId, sock: &mut smoltcp::socket::tcp::Socket<'static>) {
        if let Some(t) = self.conns[f as usize].as_deref_mut() {
            t.seal(sock);
        }
    }

    /// Adds what `pump` noted to the worker's counters.
    pub fn count(&mut self, counters: &mut Counters) {
        let c = std::mem::take(&mut self.counts);
        counters.add(Counter::TlsHandshakes, c.handshakes);
        counters.add(Counter::TlsResumed, c.resumed);
        counters.add(Counter::TlsProtocolErrors, c.protocol);
        counters.add(Counter::TlsAlertsReceived, c.alerts);
        counters.add(Counter::TlsHandshakeTimeouts, c.timeouts);
        counters.add(Counter::TlsDeferred, c.deferred);
    }

    /// A new poll iteration: the budget is full again; the connections
    /// that waited for it, to be driven now (taken into `out`).
    pub fn begin_poll(&mut self, out: &mut Vec<FlowId>) {
        self.budget = self.per_poll;
        out.clear();
        out.append(&mut self.deferred);
        for &f in out.iter() {
            self.waiting[f as usize] = false;
        }
    }

    /// Plaintext may be behind ciphertext still in the ring (the session
    /// took all it had, the ring holds more): pump and drive again.
    pub fn more(&self, f: FlowId, sock: &smoltcp::socket::tcp::Socket<'static>) -> bool {
        self.conns[f as usize].as_deref().is_some_and(|t| {
            t.recv_queue() == 0
                && t.may_recv()
                && sock.recv_queue() > 0
                && !self.waiting[f as usize]
        })
    }
}
