//! A test network without root or DPDK: one smoltcp interface on the
//! in-memory `Loopback` device carrying real TCP between a test client, the
//! session's client socket, the session's upstream sockets and a test
//! upstream server. The harness plays the worker: it polls, drives the
//! session, attaches an upstream on `NeedUpstream` (from its pool when one
//! is idle and good, else a new connect), detaches on `ReleaseUpstream` and
//! reports a closed upstream with `upstream_lost`.

use super::ratelimit::RequestLimiter;
use crate::app::proxy::tls::Io;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp::{Socket, SocketBuffer, State as TcpState};
use smoltcp::socket::AnySocket;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use super::session::{Cause, Failure, Lent, Mode, Routes, Session, Step};

const IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const FRONT: u16 = 80;
const BACK: u16 = 8080;
/// What `$upstream_addr` names in these tests.
const SERVER: std::net::SocketAddrV4 =
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 0, 1), BACK);
pub const READ_TIMEOUT_US: u64 = 5_000_000;
pub const HEADER_TIMEOUT_US: u64 = 10_000_000;

/// One end the test writes to and reads from.
pub struct End {
    pub h: SocketHandle,
    /// Everything received.
    pub rx: Vec<u8>,
    /// To send (from `sent` on).
    pub tx: Vec<u8>,
    sent: usize,
    /// Close (FIN) once all of `tx` is queued.
    pub fin: bool,
    /// Bytes handed to the socket per step (0: as many as fit).
    pub chunk: usize,
}

impl End {
    fn new(h: SocketHandle) -> End {
        End {
            h,
            rx: Vec::new(),
            tx: Vec::new(),
            sent: 0,
            fin: false,
            chunk: 0,
        }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.tx.extend_from_slice(b);
    }

    /// All of `tx` went into the socket.
    pub fn flushed(&self) -> bool {
        self.sent == self.tx.len()
    }
}

pub struct Net {
    iface: Interface,
    dev: Loopback,
    pub set: SocketSet<'static>,
    pub now_us: u64,
    pub client: End,
    front: SocketHandle,
    pub session: Session,
    up: Option<SocketHandle>,
    up_established: bool,
    pool: Vec<SocketHandle>,
    listen: SocketHandle,
    /// Upstream connections the server accepted, in order.
    pub servers: Vec<End>,
    scratch: Vec<u8>,
    ids: crate::app::proxy::headers::RequestIds,
    pub routes: Routes,
    pub limiter: RequestLimiter,
    pub open: crate::app::proxy::client_limits::OpenPerClient,
    next_port: u16,
    buf: usize,
    /// Upstream connects made (not pool reuses).
    pub connects: usize,
    /// Failures the session reported.
    pub failures: Vec<Failure>,
    /// Exchanges the session finished.
    pub outcomes: Vec<crate::app::outcome::Outcome>,
    /// Every step the session asked for (but `Idle`).
    pub steps: Vec<Step>,
    /// Bytes each new server connection sends per step (0: all that fit).
    pub server_chunk: usize,
    /// The port upstream connects go to (the server listens on `BACK`).
    pub back_port: u16,
    /// After this many connects the "balancer" has no server left: the
    /// session gets `no_upstream(NoServer)`.
    pub max_connects: usize,
    /// Requests the session replayed after a reused upstream failed.
    pub retries: usize,
}

fn socket(buf: usize) -> Socket<'static> {
    let mut s = Socket::new(
        SocketBuffer::new(vec![0; buf]),
        SocketBuffer::new(vec![0; buf]),
    );
    s.set_ack_delay(None);
    s.set_nagle_enabled(false);
    s
}

/// Two distinct sockets of a set at once.
fn two<'s>(
    set: &'s mut SocketSet<'static>,
    a: SocketHandle,
    b: Option<SocketHandle>,
) -> (&'s mut Socket<'static>, Option<&'s mut Socket<'static>>) {
    let (mut sa, mut sb) = (None, None);
    for (h, s) in set.iter_mut() {
        if h == a {
            sa = Socket::downcast_mut(s);
        } else if Some(h) == b {
            sb = Socket::downcast_mut(s);
        }
    }
    (sa.expect("socket a"), sb)
}

impl Net {
    /// A session in HTTP mode with socket buffers of `buf` bytes everywhere.
    pub fn http(buf: usize) -> Net {
        Net::new(Mode::Http, buf)
    }

    pub fn new(mode: Mode, buf: usize) -> Net {
        let mut dev = Loopback::new(Medium::Ethernet);
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress([
            0x02, 0, 0, 0, 0, 1,
        ])));
        let mut iface = Interface::new(config, &mut dev, Instant::from_micros(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(IP), 24)).unwrap();
        });
        let mut set = SocketSet::new(Vec::new());
        let mut front = socket(buf);
        front.listen(FRONT).unwrap();
        let front = set.add(front);
        let mut listen = socket(buf);
        listen.listen(BACK).unwrap();
        let listen = set.add(listen);
        let mut client = socket(buf);
        client
            .connect(iface.context(), (IpAddress::Ipv4(IP), FRONT), 40000)
            .unwrap();
        let client = End::new(set.add(client));
        let mut session = Session::new(
            mode,
            std::net::Ipv4Addr::new(10, 0, 0, 1).into(),
            0,
            READ_TIMEOUT_US,
            HEADER_TIMEOUT_US,
        );
        session.set_origin(0, (std::net::Ipv4Addr::new(10, 0, 0, 1).into(), 40000), 0);
        Net {
            iface,
            dev,
            set,
            now_us: 0,
            client,
            front,
            session,
            up: None,
            up_established: false,
            pool: Vec::new(),
            listen,
            servers: Vec::new(),
            scratch: vec![0; buf],
            ids: Default::default(),
            routes: Routes {
                routes: Vec::new(),
                default: Some(0),
                limits: Vec::new(),
                headers: Default::default(),
                upgrade: Default::default(),
                hash_keys: Vec::new(),
            },
            limiter: RequestLimiter::new(64, [0; 16]),
            open: Default::default(),
            next_port: 50000,
            buf,
            connects: 0,
            failures: Vec::new(),
            outcomes: Vec::new(),
            steps: Vec::new(),
            server_chunk: 0,
            back_port: BACK,
            max_connects: usize::MAX,
            retries: 0,
        }
    }

    pub fn sock(&mut self, h: SocketHandle) -> &mut Socket<'static> {
        self.set.get_mut::<Socket>(h)
    }

    pub fn client_sock(&mut self) -> &mut Socket<'static> {
        self.set.get_mut::<Socket>(self.client.h)
    }

    /// The last server connection.
    pub fn server(&mut self) -> &mut End {
        self.servers.last_mut().expect("a server connection")
    }

    fn pump(set: &mut SocketSet<'static>, end: &mut End) {
        let s = set.get_mut::<Socket>(end.h);
        if s.may_send() && end.sent < end.tx.len() {
            let mut n = end.tx.len() - end.sent;
            if end.chunk != 0 {
                n = n.min(end.chunk);
            }
            end.sent += s.send_slice(&end.tx[end.sent..end.sent + n]).unwrap_or(0);
        }
        if end.fin && end.flushed() && s.may_send() {
            s.close();
        }
        let mut tmp = [0u8; 4096];
        while s.can_recv() {
            match s.recv_slice(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => end.rx.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// One round: the ends send and read, the interface polls, the session is driven.
    pub fn step(&mut self) {
        Self::pump(&mut self.set, &mut self.client);
        for s in &mut self.servers {
            Self::pump(&mut self.set, s);
        }
        let now = Instant::from_micros(self.now_us as i64);
        self.iface.poll(now, &mut self.dev, &mut self.set);
        if self.set.get_mut::<Socket>(self.listen).state() != TcpState::Listen {
            let mut end = End::new(self.listen);
            end.chunk = self.server_chunk;
            self.servers.push(end);
            let mut l = socket(self.buf);
            l.listen(BACK).unwrap();
            self.listen = self.set.add(l);
        }
        self.drive();
        Self::pump(&mut self.set, &mut self.client);
        for s in &mut self.servers {
            Self::pump(&mut self.set, s);
        }
        self.now_us += 1000;
    }

    /// Runs (up to `steps`) until the last server connection holds a
    /// complete request head after its first `from` bytes; that head.
    pub fn server_head(&mut self, from: usize, steps: usize) -> String {
        assert!(
            self.run_until(steps, |n| {
                n.servers
                    .last()
                    .is_some_and(|s| s.rx.len() > from && head_len(&s.rx[from..]).is_some())
            }),
            "no request head reached the server"
        );
        let rx = &self.servers.last().unwrap().rx[from..];
        String::from_utf8_lossy(&rx[..head_len(rx).unwrap()]).into_owned()
    }

    /// Steps until `done` holds (true) or `max` steps went by (false).
    pub fn run_until(&mut self, max: usize, mut done: impl FnMut(&mut Net) -> bool) -> bool {
        for _ in 0..max {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Steps `n` times.
    pub fn run(&mut self, n: usize) {
        for _ in 0..n {
            self.step();
        }
    }

    fn call(&mut self) -> Step {
        let (c, u) = two(&mut self.set, self.front, self.up);
        let c = &mut Io::plain(c);
        let mut u = u.map(Io::plain);
        let u = u.as_mut();
        self.session.set_now(self.now_us);
        let step = if self.session.deadline_us().is_some_and(|d| self.now_us >= d) {
            self.session.timed_out(c, u)
        } else {
            self.session.drive(
                c,
                u,
                Lent {
                    routes: Some(&self.routes),
                    limiter: &mut self.limiter,
                    open: &mut self.open,
                    ids: &mut self.ids,
                    scratch: &mut self.scratch,
                },
                self.now_us,
            )
        };
        self.note(step)
    }

    fn note(&mut self, step: Step) -> Step {
        if self.session.take_retry() {
            self.retries += 1;
        }
        if let Some(f) = self.session.take_error() {
            self.failures.push(f);
        }
        if let Some(o) = self.session.take_outcome() {
            self.outcomes.push(o);
        }
        if step != Step::Idle {
            self.steps.push(step);
        }
        step
    }

    /// What the worker's `session_step` + `apply_step` + `release` do.
    fn drive(&mut self) {
        // An upstream that closed completely (or never connected) is released.
        if let Some(u) = self.up {
            let s = self.set.get_mut::<Socket>(u);
            if s.state() == TcpState::Established {
                self.up_established = true;
            }
            let gone = s.state() == TcpState::Closed
                || (s.state() == TcpState::TimeWait && s.recv_queue() == 0);
            // A TCP relay's upstream that closed cleanly is just gone (the
            // session then closes the client); anything else was lost.
            let graceful = s.state() == TcpState::TimeWait
                && (self.session.mode == Mode::Tcp || self.session.relays());
            if gone && graceful {
                self.up = None;
            } else if gone {
                self.up = None;
                let connecting = !self.up_established;
                let c = self.set.get_mut::<Socket>(self.front);
                self.session.set_now(self.now_us);
                let cause = if connecting {
                    Cause::Refused
                } else {
                    Cause::Reset
                };
                let step = self
                    .session
                    .upstream_lost(&mut Io::plain(c), connecting, cause);
                let step = self.note(step);
                self.apply(step);
            }
        }
        let step = self.call();
        self.apply(step);
    }

    fn apply(&mut self, mut step: Step) {
        for _ in 0..8 {
            match step {
                Step::Idle => return,
                Step::NeedUpstream { .. } if self.connects >= self.max_connects => {
                    let c = self.set.get_mut::<Socket>(self.front);
                    self.session.set_now(self.now_us);
                    self.session.no_upstream(&mut Io::plain(c), Cause::NoServer);
                    self.note(Step::Idle);
                    return;
                }
                Step::NeedUpstream { .. } => self.attach(),
                Step::Tunnel { .. } => {}
                Step::ReleaseUpstream { reusable } => {
                    if let Some(u) = self.up.take() {
                        let s = self.set.get_mut::<Socket>(u);
                        if reusable && s.state() == TcpState::Established {
                            self.pool.push(u);
                        } else {
                            s.close();
                        }
                    }
                }
            }
            step = self.call();
        }
    }

    fn attach(&mut self) {
        let fresh = self.session.wants_fresh();
        while let Some(u) = if fresh { None } else { self.pool.pop() } {
            let s = self.set.get_mut::<Socket>(u);
            if s.state() == TcpState::Established && s.recv_queue() == 0 && s.may_send() {
                self.up = Some(u);
                self.up_established = true;
                self.session.attached(0, 0, SERVER.into(), true);
                return;
            }
            s.abort();
        }
        let mut s = socket(self.buf);
        s.connect(
            self.iface.context(),
            (IpAddress::Ipv4(IP), self.back_port),
            self.next_port,
        )
        .unwrap();
        self.next_port += 1;
        self.connects += 1;
        self.up = Some(self.set.add(s));
        self.up_established = false;
        self.session.tried |= 1;
        self.session.attached(0, 0, SERVER.into(), false);
    }

    pub fn pooled(&self) -> usize {
        self.pool.len()
    }
}

/// `n` bytes of a pseudo-random pattern (xorshift), the same for a seed.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `body` in chunks of varying sizes, with a trailer.
pub fn chunked(body: &[u8], seed: u64) -> Vec<u8> {
    let sizes = pattern(body.len() / 64 + 16, seed);
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < body.len() {
        let n = (usize::from(sizes[i % sizes.len()]) * 37 + 1).min(body.len() - at);
        i += 1;
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&body[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
    }
    out.extend_from_slice(b"0\r\nX-Sum: 1\r\n\r\n");
    out
}

/// Where the head in `buf` ends (after its empty line).
pub fn head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}
