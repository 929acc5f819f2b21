//! The load engine: one `mio` event loop per worker thread, each keeping its
//! share of `--concurrency` requests in flight at all times.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::http::ResponseParser;
use crate::stats::{FailureKind, ThreadStats};

/// How often in-flight requests are checked against their deadline.
const TIMEOUT_SCAN: Duration = Duration::from_millis(10);
/// Longest a worker sleeps in `poll` without a reason to wake.
const MAX_POLL_WAIT: Duration = Duration::from_millis(20);
/// How far a rate-limited worker may catch up after falling behind schedule.
const RATE_SLACK: Duration = Duration::from_millis(50);
/// Receive buffer shared by all connections of a worker.
const SCRATCH: usize = 64 * 1024;

/// Everything the workers share (read-only, except the request tickets).
#[derive(Debug)]
pub struct Plan {
    pub target: SocketAddr,
    /// Complete request bytes (head and body), sent for every request.
    pub request: Vec<u8>,
    pub keep_alive: bool,
    pub nodelay: bool,
    pub timeout: Duration,
    pub expect_size: Option<u64>,
    /// Start of the measured window (run start + warm-up).
    pub window_start: Instant,
    /// End of the run; `None` when bounded by `--requests` only.
    pub end: Option<Instant>,
    /// Measured requests still allowed to start (`--requests`).
    pub tickets: Option<AtomicU64>,
}

impl Plan {
    /// Time since the window start when `now` lies inside the measured window.
    fn window_offset(&self, now: Instant) -> Option<Duration> {
        if now < self.window_start || self.end.is_some_and(|end| now >= end) {
            return None;
        }
        Some(now - self.window_start)
    }

    fn take_ticket(&self) -> bool {
        match &self.tickets {
            None => true,
            Some(t) => t
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No request in flight (a kept-alive stream may still be open).
    Idle,
    Connecting,
    Writing,
    Reading,
}

struct Conn {
    stream: Option<TcpStream>,
    phase: Phase,
    /// Latency reference: connect() start for a new connection, send start for a reused one.
    req_start: Instant,
    deadline: Instant,
    written: usize,
    parser: ResponseParser,
    /// Raw bytes received for the current request.
    received: u64,
    /// Started inside the measured window.
    measured: bool,
    /// First request on this connection.
    fresh: bool,
    /// The socket may have unread data or a pending EOF/error: set by readable
    /// events (edge-triggered), cleared when a read would block.
    readable: bool,
}

/// Result of driving one connection as far as it goes without blocking.
enum Step {
    Pending,
    Complete,
    Fail(FailureKind),
    /// A reused keep-alive connection was closed by the server before any byte of
    /// the response: resend the same request on a new connection.
    Retry,
}

/// One worker thread's event loop.
pub struct Worker<'a> {
    plan: &'a Plan,
    poll: Poll,
    conns: Vec<Conn>,
    /// Slots waiting to start their next request.
    queue: VecDeque<usize>,
    in_flight: usize,
    /// `--requests` budget used up: slots stop being refilled.
    exhausted: bool,
    rate_interval: Option<Duration>,
    next_send: Instant,
    scratch: Box<[u8]>,
    pub stats: ThreadStats,
}

impl<'a> Worker<'a> {
    /// A worker keeping `concurrency` requests in flight, limited to `rate`
    /// requests started per second if given.
    pub fn new(plan: &'a Plan, concurrency: usize, rate: Option<f64>) -> io::Result<Self> {
        let now = Instant::now();
        let conns = (0..concurrency)
            .map(|_| Conn {
                stream: None,
                phase: Phase::Idle,
                req_start: now,
                deadline: now,
                written: 0,
                parser: ResponseParser::new(),
                received: 0,
                measured: false,
                fresh: true,
                readable: false,
            })
            .collect();
        Ok(Worker {
            plan,
            poll: Poll::new()?,
            conns,
            queue: (0..concurrency).collect(),
            in_flight: 0,
            exhausted: false,
            rate_interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next_send: now,
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
            stats: ThreadStats::new(),
        })
    }

    /// Runs until the end of the run (or until the request budget is used up
    /// and every started request ended).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_scan = Instant::now() + TIMEOUT_SCAN;
        loop {
            let now = Instant::now();
            if self.plan.end.is_some_and(|end| now >= end) {
                break;
            }
            if now >= next_scan {
                self.expire(now);
                next_scan = now + TIMEOUT_SCAN;
            }
            self.start_queued(now);
            if self.exhausted && self.in_flight == 0 {
                break;
            }
            let mut wait = MAX_POLL_WAIT.min(next_scan.saturating_duration_since(now));
            if !self.queue.is_empty() && !self.exhausted {
                wait = match self.rate_interval {
                    Some(_) => wait.min(self.next_send.saturating_duration_since(now)),
                    None => Duration::ZERO,
                };
            }
            if let Some(end) = self.plan.end {
                wait = wait.min(end.saturating_duration_since(now));
            }
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                let idx = ev.token().0;
                // Events for idle slots (e.g. a kept-alive connection closed by the
                // server) are handled when the slot next sends.
                let conn = &mut self.conns[idx];
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    conn.readable = true;
                }
                if conn.phase != Phase::Idle {
                    self.drive(idx);
                }
            }
        }
        Ok(())
    }

    /// Starts requests on queued slots, honouring `--rate` and `--requests`.
    fn start_queued(&mut self, now: Instant) {
        let n = self.queue.len();
        for _ in 0..n {
            let Some(&idx) = self.queue.front() else {
                break;
            };
            if self.exhausted {
                self.queue.pop_front();
                self.conns[idx].stream = None;
                continue;
            }
            if let Some(interval) = self.rate_interval {
                if now < self.next_send {
                    break;
                }
                let floor = now.checked_sub(RATE_SLACK).unwrap_or(now);
                self.next_send = self.next_send.max(floor) + interval;
            }
            self.queue.pop_front();
            self.start_request(idx, now);
        }
    }

    /// Begins a new request on slot `idx`.
    fn start_request(&mut self, idx: usize, now: Instant) {
        let measured = now >= self.plan.window_start;
        if measured && !self.plan.take_ticket() {
            self.exhausted = true;
            self.conns[idx].stream = None;
            return;
        }
        self.in_flight += 1;
        let conn = &mut self.conns[idx];
        conn.measured = measured;
        conn.req_start = now;
        conn.deadline = now + self.plan.timeout;
        conn.parser.reset();
        conn.received = 0;
        conn.written = 0;
        if self.plan.keep_alive && conn.stream.is_some() {
            conn.fresh = false;
            // Events are ignored while idle: the server may have closed meanwhile.
            conn.readable = true;
            conn.phase = Phase::Writing;
            self.drive(idx);
        } else {
            self.connect(idx);
        }
    }

    /// Opens a new connection for the request of slot `idx`.
    fn connect(&mut self, idx: usize) {
        self.stats.connections += 1;
        let conn = &mut self.conns[idx];
        conn.stream = None;
        conn.fresh = true;
        conn.readable = false;
        conn.written = 0;
        conn.received = 0;
        conn.parser.reset();
        let result = TcpStream::connect(self.plan.target).and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        match result {
            Ok(s) => {
                conn.stream = Some(s);
                conn.phase = Phase::Connecting;
            }
            Err(e) => self.finish(idx, Step::Fail(classify_connect(&e))),
        }
    }

    /// Makes as much progress as possible on slot `idx`.
    fn drive(&mut self, idx: usize) {
        let step = step(
            &mut self.conns[idx],
            &mut self.scratch,
            self.plan,
            &mut self.stats,
        );
        if !matches!(step, Step::Pending) {
            self.finish(idx, step);
        }
    }

    /// Ends the current request of slot `idx` (or retries it) and queues the slot.
    fn finish(&mut self, idx: usize, step: Step) {
        let now = Instant::now();
        let at = now.saturating_duration_since(self.plan.window_start);
        let keep_alive = self.plan.keep_alive;
        let expect = self.plan.expect_size;
        // Requests ending after the end of the run are outside the measured window.
        let past_end = self.plan.end.is_some_and(|end| now >= end);
        if matches!(step, Step::Complete | Step::Fail(_)) {
            self.stats.ended_all += 1;
        }
        let conn = &mut self.conns[idx];
        if past_end {
            conn.measured = false;
        }
        let mut reusable = false;
        match step {
            Step::Pending => return,
            Step::Retry => {
                // Same request, same latency reference and deadline.
                self.connect(idx);
                return;
            }
            Step::Complete => {
                let status = conn.parser.status();
                reusable = keep_alive && !conn.parser.must_close();
                if conn.measured {
                    let s = &mut self.stats;
                    s.status(status);
                    s.bytes_received += conn.received;
                    s.bytes_sent += self.plan.request.len() as u64;
                    if !(200..300).contains(&status) {
                        s.failure(FailureKind::Status, at);
                    } else if expect.is_some_and(|want| want != conn.parser.body_len()) {
                        s.failure(FailureKind::SizeMismatch, at);
                    } else {
                        s.success(now - conn.req_start, at);
                    }
                }
            }
            Step::Fail(kind) => {
                if conn.measured {
                    self.stats.bytes_received += conn.received;
                    self.stats.bytes_sent += conn.written as u64;
                    self.stats.failure(kind, at);
                }
            }
        }
        if !reusable {
            // Dropping the stream closes the socket, which also removes it from epoll.
            conn.stream = None;
        }
        conn.phase = Phase::Idle;
        self.in_flight -= 1;
        self.queue.push_back(idx);
    }

    /// Fails requests whose deadline passed.
    fn expire(&mut self, now: Instant) {
        for idx in 0..self.conns.len() {
            let c = &self.conns[idx];
            if c.phase != Phase::Idle && c.deadline <= now {
                let kind = if c.phase == Phase::Connecting {
                    FailureKind::ConnectTimeout
                } else {
                    FailureKind::Timeout
                };
                self.finish(idx, Step::Fail(kind));
            }
        }
    }
}

/// Advances one connection until it would block, completes or fails; counts
/// the bytes it receives inside the measured window into `stats`.
fn step(conn: &mut Conn, scratch: &mut [u8], plan: &Plan, stats: &mut ThreadStats) -> Step {
    let (request, nodelay) = (&plan.request[..], plan.nodelay);
    let Some(stream) = conn.stream.as_mut() else {
        return Step::Fail(FailureKind::Io);
    };
    loop {
        match conn.phase {
            Phase::Idle => return Step::Pending,
            // Writing doubles as the connect check: on Linux, send() on a socket
            // still connecting fails with EAGAIN, and on a failed connect with the
            // connect error (e.g. ECONNREFUSED). This saves getsockopt(SO_ERROR)
            // and getpeername() per connection.
            Phase::Connecting => match stream.write(&request[conn.written..]) {
                Ok(0) => return Step::Fail(FailureKind::ConnectError),
                Ok(n) => {
                    if nodelay {
                        let _ = stream.set_nodelay(true);
                    }
                    conn.written += n;
                    conn.phase = if conn.written == request.len() {
                        Phase::Reading
                    } else {
                        Phase::Writing
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Step::Fail(classify_connect(&e)),
            },
            Phase::Writing => match stream.write(&request[conn.written..]) {
                Ok(0) => return Step::Fail(FailureKind::Io),
                Ok(n) => {
                    conn.written += n;
                    if conn.written == request.len() {
                        conn.phase = Phase::Reading;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = classify_io(&e);
                    return retry_or(conn, kind);
                }
            },
            // Only read when an event (or a reuse) says there may be something:
            // saves a read() that would just return EAGAIN right after the send.
            Phase::Reading if !conn.readable => return Step::Pending,
            Phase::Reading => match stream.read(scratch) {
                Ok(0) => {
                    if conn.parser.eof() {
                        return Step::Complete;
                    }
                    return retry_or(conn, FailureKind::Truncated);
                }
                Ok(n) => {
                    conn.received += n as u64;
                    stats.received(n as u64, plan.window_offset(Instant::now()));
                    match conn.parser.feed(&scratch[..n]) {
                        Ok(true) => return Step::Complete,
                        Ok(false) => {}
                        Err(_) => return Step::Fail(FailureKind::Malformed),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return Step::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = classify_io(&e);
                    return retry_or(conn, kind);
                }
            },
        }
    }
}

/// On a reused keep-alive connection that the server closed before sending any
/// byte of the response, the request is retried on a new connection (the usual
/// keep-alive close race); anywhere else the failure stands.
fn retry_or(conn: &Conn, kind: FailureKind) -> Step {
    if !conn.fresh
        && conn.received == 0
        && matches!(kind, FailureKind::Reset | FailureKind::Truncated)
    {
        Step::Retry
    } else {
        Step::Fail(kind)
    }
}

fn classify_connect(e: &io::Error) -> FailureKind {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => FailureKind::ConnectRefused,
        io::ErrorKind::TimedOut => FailureKind::ConnectTimeout,
        io::ErrorKind::ConnectionReset => FailureKind::Reset,
        _ => FailureKind::ConnectError,
    }
}

fn classify_io(e: &io::Error) -> FailureKind {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => FailureKind::Reset,
        io::ErrorKind::TimedOut => FailureKind::Timeout,
        _ => FailureKind::Io,
    }
}
