//! One proxied client connection: the state machine that moves a request
//! from the client socket to an upstream socket and the response back.
//!
//! # Copies
//!
//! Body bytes go straight from one smoltcp socket's receive buffer into the
//! other socket's send buffer (`recv` closure + `send_slice`): a forwarded
//! body byte is copied three times - frame into the receive ring (smoltcp
//! ingress), ring to ring (the relay), send ring into a frame (smoltcp
//! egress). smoltcp owns its rings, so the first and last copies cannot be
//! avoided, and two sockets cannot share one ring, so neither can the middle
//! one. That is unchanged: 1 relay copy per body byte, before and after.
//!
//! Heads, besides smoltcp's own ingress/egress copies:
//!
//! - Before: the request head was copied from the ring into the worker's
//!   scratch buffer (`peek_slice`, up to 16 KiB) and parsed on *every*
//!   segment of a partial head, then copied and parsed twice more once
//!   complete (once to route it, once more in `send_request_head`), then
//!   rewritten into the upstream's send ring. The response head likewise:
//!   copied and parsed on every segment, then rewritten into the client's
//!   send ring.
//! - Now: a partial head is not copied at all: only the bytes that arrived
//!   since the last look are searched for the empty line that ends the head,
//!   in place in the ring (`Socket::peek`; `scanned` remembers how far).
//!   A complete head is parsed once, in place, and the request's rewrite is
//!   kept as offsets (`Plan`), so it is written to the upstream's send ring
//!   once without a second parse: 1 copy per head byte (the rewrite into the
//!   other socket's send ring), the response head the same. Only a head
//!   that wraps the ring's end is copied into scratch (for each search of
//!   new bytes, and once to parse and once to send it); the ring restarts
//!   at 0 whenever it empties, so that takes pipelined requests behind
//!   others.

use std::io::Write as _;
use std::net::Ipv4Addr;

use smoltcp::socket::tcp::{Socket, State as TcpState};

use super::http::{self, Body, Refusal, MAX_HEADERS};
use crate::app::{dequeue, send_room};

/// Which protocol a listener proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Http,
}

/// What the worker must do for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Idle,
    /// Attach an upstream connection of this group (pooled or new).
    NeedUpstream {
        group: usize,
    },
    /// Detach the upstream: back to the idle pool when `reusable`, else close it.
    ReleaseUpstream {
        reusable: bool,
    },
}

/// Why an exchange failed (for the worker's per-cause error counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The upstream refused the connection (or the connect failed).
    Refused,
    /// The upstream connection was reset or lost while attached.
    Reset,
    /// An upstream (or the client's head) took too long.
    Timeout,
    /// No server of the group was up.
    NoServer,
    /// No local port or flow slot was free for an upstream connection.
    NoSlot,
    /// The upstream sent something the proxy cannot frame or relay.
    BadResponse,
    /// The client's request was refused (any 4xx/501 we answered).
    BadRequest,
    /// The client went away mid-request.
    ClientAbort,
}

impl Cause {
    pub const ALL: [Cause; 8] = [
        Cause::Refused,
        Cause::Reset,
        Cause::Timeout,
        Cause::NoServer,
        Cause::NoSlot,
        Cause::BadResponse,
        Cause::BadRequest,
        Cause::ClientAbort,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Cause::Refused => "refused",
            Cause::Reset => "reset",
            Cause::Timeout => "timeout",
            Cause::NoServer => "no_server",
            Cause::NoSlot => "no_slot",
            Cause::BadResponse => "bad_response",
            Cause::BadRequest => "bad_request",
            Cause::ClientAbort => "client_abort",
        }
    }
}

/// One failed exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The 4xx/5xx answered to the client; `None` when the connection was cut.
    pub status: Option<u16>,
    pub cause: Cause,
}

/// Routing of one HTTP listener.
pub struct Routes {
    /// (lower-case host or any, path prefix, group)
    pub routes: Vec<(Option<String>, String, usize)>,
    pub default: Option<usize>,
}

impl Routes {
    pub fn find(&self, host: Option<&[u8]>, path: &str) -> Option<usize> {
        let host = host.map(|h| {
            // Drop the port; compare case-insensitively.
            let h = std::str::from_utf8(h).unwrap_or("").trim();
            h.rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(h, _)| h)
        });
        self.routes
            .iter()
            .find(|(rh, prefix, _)| {
                rh.as_deref()
                    .is_none_or(|rh| host.is_some_and(|h| h.eq_ignore_ascii_case(rh)))
                    && path.starts_with(prefix.as_str())
            })
            .map(|r| r.2)
            .or(self.default)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ReadHead,
    WaitUpstream,
    RequestBody,
    ResponseHead,
    ResponseBody,
    /// TCP mode: bytes both ways.
    Relay,
    /// The client's side is closed for sending (after an error response or
    /// a response the client must not wait behind): what it still sends is
    /// read and dropped, so that its window stays open and it sees our
    /// response and FIN instead of a stalled connection (nginx's lingering
    /// close). Bounded by `LINGER_BYTES` and `LINGER_US`.
    Linger,
    Done,
}

/// At most this many interim (1xx) responses per request.
const MAX_INTERIM: u8 = 8;
/// A lingering close reads and drops at most this much client input...
const LINGER_BYTES: usize = 64 * 1024;
/// ...for at most this long, then aborts.
const LINGER_US: u64 = 3_000_000;

/// How the request head goes upstream, found when it was parsed: the head
/// stays in the client's receive buffer and is rewritten from there into
/// the upstream's send buffer, without a second parse. Offsets are into the
/// head (u32: a head fits a socket buffer); header lines are numbered from
/// 0 after the request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Plan {
    head_len: u32,
    /// The method is `[0, method_end)`.
    method_end: u32,
    /// The origin-form target (path and query) is `[rest.0, rest.1)`...
    rest: (u32, u32),
    /// ...after a `/` when the absolute-form target had no path.
    slash: bool,
    /// Header lines not forwarded (hop-by-hop, X-Forwarded-*, a repeated
    /// Content-Length); bit i for line i (at most `MAX_HEADERS` = 64 lines).
    drop: u64,
    /// The last X-Forwarded-For value, `[start, end)`.
    forwarded_for: Option<(u32, u32)>,
}

/// Per-request facts carried between states.
#[derive(Debug, Clone, Copy)]
struct Exchange {
    http11: bool,
    client_keep_alive: bool,
    is_head: bool,
    req_body: Body,
    resp_body: Body,
    upstream_reusable: bool,
    /// Response bytes already sent to the client (no error page after that).
    responded: bool,
    /// Interim (1xx) responses received for this request.
    interim: u8,
    /// The final response came before the request body was all sent.
    early: bool,
    plan: Plan,
}

impl Exchange {
    fn new() -> Exchange {
        Exchange {
            http11: true,
            client_keep_alive: true,
            is_head: false,
            req_body: Body::None,
            resp_body: Body::None,
            upstream_reusable: false,
            responded: false,
            interim: 0,
            early: false,
            plan: Plan::default(),
        }
    }
}

/// Where reading a response head got to.
enum HeadStep {
    /// More bytes (or send room) needed.
    Wait,
    /// An interim response went to the client (or was dropped): the final one follows.
    Interim,
    /// The final response head went to the client; its body follows.
    Final,
    /// The exchange failed; return this step.
    Failed(Step),
}

pub struct Session {
    pub mode: Mode,
    state: State,
    pub client_ip: Ipv4Addr,
    pub group: usize,
    /// Servers already tried for this request (bit per server index % 64).
    pub tried: u64,
    x: Exchange,
    /// When the upstream must have answered (µs), 0 when not waiting.
    deadline_us: u64,
    read_timeout_us: u64,
    pub requests: u32,
    /// The first failure since the worker last took it.
    failure: Option<Failure>,
    /// The cause of the last upstream failure of this request (for the 502
    /// when no server is left to try).
    last_upstream: Option<Cause>,
    /// When the current request head went to the upstream (µs), 0 if not.
    sent_at_us: u64,
    /// Longest a request head may take to arrive (µs; 0: no limit).
    header_timeout_us: u64,
    /// The appliance is shutting down: no more keep-alive.
    draining: bool,
    /// Time from request sent to response head received, for the worker to
    /// attribute to the upstream server (taken with `take_response_time`).
    response_us: Option<u64>,
    /// Bytes of the head being received (request or response) already
    /// searched for its end: a partial head is not searched (nor copied)
    /// again when its next segment arrives.
    scanned: usize,
    /// Client bytes dropped by the lingering close.
    lingered: usize,
    /// The time of the last call that had one (for deadlines set by calls without).
    now_us: u64,
}

impl Session {
    pub fn new(
        mode: Mode,
        client_ip: Ipv4Addr,
        group: usize,
        read_timeout_us: u64,
        header_timeout_us: u64,
    ) -> Session {
        Session {
            mode,
            state: if mode == Mode::Tcp {
                State::WaitUpstream
            } else {
                State::ReadHead
            },
            client_ip,
            group,
            tried: 0,
            x: Exchange::new(),
            deadline_us: 0,
            read_timeout_us,
            requests: 0,
            failure: None,
            last_upstream: None,
            sent_at_us: 0,
            response_us: None,
            header_timeout_us,
            draining: false,
            scanned: 0,
            lingered: 0,
            now_us: 0,
        }
    }

    /// The upstream's response time for the last response head, once.
    pub fn take_response_time(&mut self) -> Option<u64> {
        self.response_us.take()
    }

    /// The session's own deadline (read timeout), if it is waiting on one.
    pub fn deadline_us(&self) -> Option<u64> {
        (self.deadline_us != 0).then_some(self.deadline_us)
    }

    /// The read timeout of the group the current request goes to.
    pub fn set_read_timeout_us(&mut self, us: u64) {
        self.read_timeout_us = us;
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True once a request went to the upstream (so it must not be retried elsewhere).
    pub fn request_sent(&self) -> bool {
        matches!(
            self.state,
            State::RequestBody | State::ResponseHead | State::ResponseBody | State::Relay
        )
    }

    /// The failure since the last call, if any (the first one when several).
    pub fn take_error(&mut self) -> Option<Failure> {
        self.failure.take()
    }

    fn fail(&mut self, status: Option<u16>, cause: Cause) {
        if self.failure.is_none() {
            self.failure = Some(Failure { status, cause });
        }
    }

    /// Advances as far as the sockets allow.
    pub fn drive(
        &mut self,
        c: &mut Socket,
        mut u: Option<&mut Socket>,
        routes: Option<&Routes>,
        scratch: &mut [u8],
        now_us: u64,
    ) -> Step {
        self.now_us = now_us;
        loop {
            match self.state {
                State::Done => return Step::Idle,
                State::Linger => {
                    self.linger(c);
                    return Step::Idle;
                }
                State::ReadHead => {
                    if at_eof(c) {
                        c.close();
                        self.state = State::Done;
                        self.deadline_us = 0;
                        return Step::Idle;
                    }
                    if self.scanned == 0 {
                        // Empty lines before a request line are ignored (RFC 9112 2.2).
                        while matches!(c.peek(1), Ok([b'\r' | b'\n'])) {
                            dequeue(c, 1);
                        }
                    }
                    let Some(head_len) = scan_head(c, scratch, &mut self.scanned) else {
                        let queued = c.recv_queue();
                        if queued > 0 && peer_closed(c) {
                            // FIN after part of a head: no request, nothing owed.
                            c.close();
                            self.state = State::Done;
                            self.deadline_us = 0;
                            return Step::Idle;
                        }
                        if queued >= c.recv_capacity() {
                            return self.refuse(c, Refusal::HeadTooLarge.status());
                        }
                        // Slowloris: the whole head must arrive within the header timeout.
                        if queued > 0 && self.deadline_us == 0 && self.header_timeout_us != 0 {
                            self.deadline_us = now_us + self.header_timeout_us;
                        }
                        return Step::Idle;
                    };
                    self.scanned = 0;
                    self.deadline_us = 0;
                    let parsed = {
                        let raw = head_bytes(c, scratch, head_len);
                        parse_request(raw, head_len, routes, self.draining)
                    };
                    let (x, group) = match parsed {
                        Ok(r) => r,
                        Err(status) => return self.refuse(c, status),
                    };
                    self.x = x;
                    self.group = group;
                    self.tried = 0;
                    self.last_upstream = None;
                    self.state = State::WaitUpstream;
                    if u.is_none() {
                        return Step::NeedUpstream { group };
                    }
                }
                State::WaitUpstream => {
                    let Some(up) = u.as_deref_mut() else {
                        // TCP mode connects as soon as the client's SYN is in.
                        return if self.mode == Mode::Tcp && self.tried == 0 {
                            Step::NeedUpstream { group: self.group }
                        } else {
                            Step::Idle
                        };
                    };
                    if up.state() != TcpState::Established {
                        return Step::Idle; // connecting; failures come through `upstream_lost`
                    }
                    if self.mode == Mode::Tcp {
                        self.state = State::Relay;
                        continue;
                    }
                    match self.send_request_head(c, up, scratch) {
                        Ok(true) => {}
                        Ok(false) => return Step::Idle, // no room yet
                        Err(HeadTooLarge) => {
                            self.respond_error(c, 431, Cause::BadRequest);
                            return Step::ReleaseUpstream { reusable: true };
                        }
                    }
                    self.deadline_us = now_us + self.read_timeout_us;
                    self.sent_at_us = now_us;
                    self.scanned = 0;
                    self.state = State::RequestBody;
                }
                State::RequestBody => {
                    let Some(up) = u.as_deref_mut() else {
                        return self.upstream_gone(c);
                    };
                    let mut body = self.x.req_body;
                    let (moved, done) = match relay_body(c, up, &mut body) {
                        Ok(r) => r,
                        Err(http::BadChunk) => {
                            // Refused before the bad bytes were forwarded.
                            up.abort();
                            self.respond_error(c, 400, Cause::BadRequest);
                            return Step::ReleaseUpstream { reusable: false };
                        }
                    };
                    self.x.req_body = body;
                    if moved > 0 {
                        self.deadline_us = now_us + self.read_timeout_us;
                    }
                    if done {
                        self.state = State::ResponseHead;
                        continue;
                    }
                    if up.recv_queue() > 0 {
                        // The upstream answers before the body is all sent:
                        // 100 Continue, or an early final response.
                        match self.response_head(c, up, scratch, now_us) {
                            HeadStep::Wait => {}
                            HeadStep::Interim => continue,
                            HeadStep::Final => {
                                self.state = State::ResponseBody;
                                continue;
                            }
                            HeadStep::Failed(step) => return step,
                        }
                    }
                    if at_eof(c) {
                        // client gave up mid-body
                        return self.abort_both(c, Some(up), Cause::ClientAbort);
                    }
                    return Step::Idle;
                }
                State::ResponseHead => {
                    let Some(up) = u.as_deref_mut() else {
                        return self.upstream_gone(c);
                    };
                    match self.response_head(c, up, scratch, now_us) {
                        HeadStep::Wait => return Step::Idle,
                        HeadStep::Interim => continue,
                        HeadStep::Final => self.state = State::ResponseBody,
                        HeadStep::Failed(step) => return step,
                    }
                }
                State::ResponseBody => {
                    let Some(up) = u.as_deref_mut() else {
                        return self.upstream_gone(c);
                    };
                    let mut body = self.x.resp_body;
                    let relayed = relay_body(up, c, &mut body);
                    self.x.resp_body = body;
                    let done = match relayed {
                        Ok((moved, done)) => {
                            if moved > 0 {
                                self.deadline_us = now_us + self.read_timeout_us;
                            }
                            done || (matches!(body, Body::UntilClose) && at_eof(up))
                        }
                        Err(http::BadChunk) => {
                            return self.abort_both(c, Some(up), Cause::BadResponse)
                        }
                    };
                    if !done {
                        if at_eof(up) {
                            // truncated by the upstream
                            return self.abort_both(c, Some(up), Cause::BadResponse);
                        }
                        return Step::Idle;
                    }
                    self.requests += 1;
                    self.deadline_us = 0;
                    let reusable = self.x.upstream_reusable
                        && !self.x.early
                        && !matches!(body, Body::UntilClose);
                    if self.x.client_keep_alive && !self.x.early {
                        self.state = State::ReadHead;
                    } else {
                        self.close_client(c);
                    }
                    return Step::ReleaseUpstream { reusable };
                }
                State::Relay => {
                    let Some(up) = u.as_deref_mut() else {
                        return self.upstream_gone(c);
                    };
                    relay_stream(c, up);
                    relay_stream(up, c);
                    // Half-close travels: EOF read on one side closes our send side on the other.
                    if at_eof(c) && up.may_send() && up.send_queue() == 0 {
                        up.close();
                    }
                    if at_eof(up) && c.may_send() && c.send_queue() == 0 {
                        c.close();
                    }
                    return Step::Idle;
                }
            }
        }
    }

    /// Reads a response head off the upstream and writes it, rewritten, to
    /// the client: parsed once, in place in the upstream's receive buffer
    /// (copied into `scratch` only when it wraps the ring's end).
    fn response_head(
        &mut self,
        c: &mut Socket,
        up: &mut Socket,
        scratch: &mut [u8],
        now_us: u64,
    ) -> HeadStep {
        let Some(head_len) = scan_head(up, scratch, &mut self.scanned) else {
            if up.recv_queue() >= up.recv_capacity() || peer_closed(up) {
                // Too large to ever complete, or the upstream closed before one did.
                return HeadStep::Failed(self.fail_upstream(c, 502));
            }
            return HeadStep::Wait;
        };
        let http11 = self.x.http11;
        let raw = head_bytes(up, scratch, head_len);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let info = match resp.parse(raw) {
            Ok(httparse::Status::Complete(n)) if n == head_len => {
                http::response_info(&resp, head_len, self.x.is_head)
            }
            _ => Err(http::BadResponse),
        };
        let info = match info {
            // 101 Switching Protocols is not supported (Upgrade is not forwarded).
            Ok(info) if info.status != 101 => info,
            _ => return HeadStep::Failed(self.fail_upstream(c, 502)),
        };
        let interim = (100..200).contains(&info.status);
        if interim {
            self.x.interim += 1;
            if self.x.interim > MAX_INTERIM {
                return HeadStep::Failed(self.fail_upstream(c, 502));
            }
            if !http11 {
                // An HTTP/1.0 client does not know interim responses: dropped.
                dequeue(up, head_len);
                self.scanned = 0;
                return HeadStep::Interim;
            }
        } else if self.state == State::RequestBody {
            // An early final response: the rest of the request body is not
            // read, so neither connection can go on.
            self.x.early = true;
            self.x.client_keep_alive = false;
        }
        if !interim && matches!(info.body, Body::UntilClose) {
            // The body ends when the upstream closes: so must the client connection.
            self.x.client_keep_alive = false;
        }
        let keep_alive = self.x.client_keep_alive || interim;
        let mut len = 0;
        write_response_head(&resp, http11, keep_alive, info.drop_length, &mut |b| {
            len += b.len()
        });
        if len > c.send_capacity() {
            return HeadStep::Failed(self.fail_upstream(c, 502)); // can never fit: the head is too large
        }
        if send_room(c) < len {
            // No room yet: next time the search starts just before the end.
            self.scanned = head_len.saturating_sub(1);
            return HeadStep::Wait;
        }
        write_response_head(&resp, http11, keep_alive, info.drop_length, &mut |b| {
            let _ = c.send_slice(b);
        });
        dequeue(up, head_len);
        self.scanned = 0;
        self.x.responded = true;
        if self.sent_at_us != 0 {
            self.response_us = Some(now_us - self.sent_at_us);
            self.sent_at_us = 0;
        }
        if interim {
            // The response head's read timeout still runs from when the
            // request was sent: interim responses do not extend it.
            return HeadStep::Interim;
        }
        self.deadline_us = now_us + self.read_timeout_us;
        self.x.resp_body = info.body;
        self.x.upstream_reusable = info.reusable && !self.x.early;
        HeadStep::Final
    }

    /// The upstream connection died (reset, refused, timed out) while attached.
    /// `cause` says how: `Refused`, `Reset` or `Timeout`.
    pub fn upstream_lost(&mut self, c: &mut Socket, can_retry: bool, cause: Cause) -> Step {
        self.last_upstream = Some(cause);
        match self.state {
            State::WaitUpstream if can_retry => Step::NeedUpstream { group: self.group },
            State::WaitUpstream if self.mode == Mode::Tcp => {
                c.abort();
                self.fail(None, cause);
                self.state = State::Done;
                Step::Idle
            }
            State::WaitUpstream | State::RequestBody | State::ResponseHead if !self.x.responded => {
                self.respond_error(c, 502, cause);
                Step::Idle
            }
            State::Relay => {
                // The upstream reset: so does the client.
                c.abort();
                self.fail(None, cause);
                self.state = State::Done;
                Step::Idle
            }
            State::Done | State::ReadHead | State::Linger => Step::Idle,
            _ => {
                c.abort();
                self.fail(None, cause);
                self.state = State::Done;
                self.deadline_us = 0;
                Step::Idle
            }
        }
    }

    /// Graceful shutdown: an idle keep-alive client is closed now; a request
    /// in flight gets its response with `Connection: close`.
    ///
    /// A connection that has not sent its first request yet is not idle: its
    /// request may be on the wire. It gets that request answered (with
    /// `Connection: close`), like every exchange already started.
    pub fn drain(&mut self, c: &mut Socket) {
        self.draining = true;
        match self.state {
            State::ReadHead if c.recv_queue() == 0 && self.requests > 0 => {
                c.close();
                self.state = State::Done;
                self.deadline_us = 0;
            }
            State::Done | State::Relay | State::Linger => {}
            _ => self.x.client_keep_alive = false,
        }
    }

    /// Driven without an upstream in a state that needs one (it closed and
    /// was released): a finished TCP relay closes the client gracefully,
    /// anything else is cut.
    fn upstream_gone(&mut self, c: &mut Socket) -> Step {
        if self.state == State::Relay {
            c.close();
        } else {
            c.abort();
            self.fail(None, Cause::Reset);
        }
        self.state = State::Done;
        self.deadline_us = 0;
        Step::Idle
    }

    /// No upstream could be had (`cause`: `NoServer` or `NoSlot`): 502 with
    /// the last upstream failure's cause when servers were tried and failed,
    /// 503 when none was up (or no local port or flow slot was free).
    pub fn no_upstream(&mut self, c: &mut Socket, cause: Cause) {
        let (status, cause) = match self.last_upstream {
            Some(last) if self.tried != 0 => (502, last),
            _ if self.tried != 0 => (502, cause),
            _ => (503, cause),
        };
        if self.mode == Mode::Tcp {
            c.abort();
            self.fail(None, cause);
            self.state = State::Done;
        } else {
            self.respond_error(c, status, cause);
        }
    }

    /// The deadline fired: 408 for a head that did not arrive in time, 504
    /// if nothing was answered yet, the end of a lingering close, else give up.
    pub fn timed_out(&mut self, c: &mut Socket, u: Option<&mut Socket>) -> Step {
        self.deadline_us = 0;
        match self.state {
            State::ReadHead => {
                self.respond_error(c, 408, Cause::BadRequest); // the head did not arrive in time
                return Step::Idle;
            }
            State::Linger => {
                self.linger(c);
                if self.state == State::Linger {
                    // Still sending after the lingering time: cut.
                    if self.lingered > 0 || c.recv_queue() > 0 {
                        c.abort();
                    }
                    self.state = State::Done;
                }
                return Step::Idle;
            }
            State::Done => return Step::Idle,
            _ => {}
        }
        if !self.x.responded && matches!(self.state, State::RequestBody | State::ResponseHead) {
            self.respond_error(c, 504, Cause::Timeout);
            if let Some(u) = u {
                u.abort();
            }
            return Step::ReleaseUpstream { reusable: false };
        }
        self.abort_both(c, u, Cause::Timeout)
    }

    fn refuse(&mut self, c: &mut Socket, status: u16) -> Step {
        self.respond_error(c, status, Cause::BadRequest);
        Step::Idle
    }

    fn fail_upstream(&mut self, c: &mut Socket, status: u16) -> Step {
        self.respond_error(c, status, Cause::BadResponse);
        Step::ReleaseUpstream { reusable: false }
    }

    fn abort_both(&mut self, c: &mut Socket, u: Option<&mut Socket>, cause: Cause) -> Step {
        c.abort();
        if let Some(u) = u {
            u.abort();
        }
        self.state = State::Done;
        self.deadline_us = 0;
        self.fail(None, cause);
        Step::ReleaseUpstream { reusable: false }
    }

    /// A complete error response, then close (lingering).
    fn respond_error(&mut self, c: &mut Socket, status: u16, cause: Cause) {
        let page = error_page(status);
        if send_room(c) >= page.len() {
            let _ = c.send_slice(page);
        }
        self.fail(Some(status), cause);
        self.close_client(c);
    }

    /// Closes the client's connection for sending and lingers: whatever it
    /// still sends is read and dropped until its FIN, `LINGER_BYTES` or
    /// `LINGER_US`.
    fn close_client(&mut self, c: &mut Socket) {
        c.close();
        self.scanned = 0;
        self.lingered = 0;
        self.state = State::Linger;
        self.deadline_us = self.now_us + LINGER_US;
        self.linger(c);
    }

    /// One round of the lingering close.
    fn linger(&mut self, c: &mut Socket) {
        self.lingered += dequeue(c, usize::MAX);
        if at_eof(c) || !c.is_open() {
            self.state = State::Done; // the peer closed too: smoltcp finishes the close
            self.deadline_us = 0;
        } else if self.lingered > LINGER_BYTES {
            c.abort();
            self.state = State::Done;
            self.deadline_us = 0;
        }
    }

    /// Writes the rewritten request head into the upstream's send buffer and
    /// takes it off the client's receive buffer. Ok(false) when it does not
    /// fit yet; Err when it never will (larger than the send buffer).
    fn send_request_head(
        &mut self,
        c: &mut Socket,
        up: &mut Socket,
        scratch: &mut [u8],
    ) -> Result<bool, HeadTooLarge> {
        let mut ip = [0u8; 16];
        let ip_len = {
            let mut cur = std::io::Cursor::new(&mut ip[..]);
            let _ = write!(cur, "{}", self.client_ip);
            cur.position() as usize
        };
        let client_ip = &ip[..ip_len];
        let plan = self.x.plan;
        let http11 = self.x.http11;
        {
            let raw = head_bytes(c, scratch, plan.head_len as usize);
            let mut len = 0;
            write_request_head(raw, &plan, client_ip, http11, &mut |b| len += b.len());
            if len > up.send_capacity() {
                return Err(HeadTooLarge);
            }
            if send_room(up) < len {
                return Ok(false);
            }
            write_request_head(raw, &plan, client_ip, http11, &mut |b| {
                let _ = up.send_slice(b);
            });
        }
        dequeue(c, plan.head_len as usize);
        Ok(true)
    }
}

/// The rewritten request head is larger than the upstream socket's send buffer.
struct HeadTooLarge;

/// Parses and checks a complete request head (`raw`, `head_len` bytes) and
/// routes it; the exchange and the group, or the status to refuse it with.
fn parse_request(
    raw: &[u8],
    head_len: usize,
    routes: Option<&Routes>,
    draining: bool,
) -> Result<(Exchange, usize), u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) if n == head_len => {}
        Ok(_) => return Err(400),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    }
    let info = http::request_info(&req, raw, head_len).map_err(Refusal::status)?;
    let target =
        http::request_target(req.path.unwrap_or("")).expect("request_info checked the target");
    let host = target.authority.map(str::as_bytes).or_else(|| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| h.value)
    });
    let group = routes
        .and_then(|r| r.find(host, target.route_path()))
        .ok_or(404u16)?;
    let mut x = Exchange::new();
    x.http11 = info.http11;
    x.client_keep_alive = info.keep_alive && !draining;
    x.is_head = info.is_head;
    x.req_body = info.body;
    x.plan = plan_request(&req, raw, head_len);
    Ok((x, group))
}

/// Where `part` (a slice of `whole`) starts in `whole`.
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// The rewrite of a parsed, checked request head.
fn plan_request(req: &httparse::Request, raw: &[u8], head_len: usize) -> Plan {
    let method = req.method.unwrap_or("GET");
    let path = req.path.unwrap_or("/");
    let target = http::request_target(path).expect("a checked target");
    let rest_start = offset_in(raw, target.rest.as_bytes()) as u32;
    let mut plan = Plan {
        head_len: head_len as u32,
        method_end: (offset_in(raw, method.as_bytes()) + method.len()) as u32,
        rest: (rest_start, rest_start + target.rest.len() as u32),
        // "http://h" or "http://h?q": origin form starts with '/'
        slash: target.route_path() != target.rest,
        drop: 0,
        forwarded_for: None,
    };
    let mut length_seen = false;
    for (i, h) in req.headers.iter().enumerate() {
        let drop = if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            let start = offset_in(raw, h.value) as u32;
            plan.forwarded_for = Some((start, start + h.value.len() as u32));
            true
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // Equal repeats were accepted: exactly one goes on.
            std::mem::replace(&mut length_seen, true)
        } else {
            http::is_hop_by_hop(h.name) || h.name.eq_ignore_ascii_case("x-forwarded-proto")
        };
        if drop {
            plan.drop |= 1 << i;
        }
    }
    plan
}

/// Request head for the upstream, from the client's head `raw` as `plan`
/// says: same method, the target in origin form, HTTP/1.1 (1.0 clients stay
/// 1.0 and close), the header lines as they came minus hop-by-hop ones,
/// X-Forwarded-For and X-Forwarded-Proto set.
fn write_request_head(
    raw: &[u8],
    plan: &Plan,
    client_ip: &[u8],
    http11: bool,
    out: &mut dyn FnMut(&[u8]),
) {
    out(&raw[..plan.method_end as usize]);
    out(b" ");
    if plan.slash {
        out(b"/");
    }
    out(&raw[plan.rest.0 as usize..plan.rest.1 as usize]);
    out(if http11 {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    });
    // The header lines (checked: CRLF ends every line), up to the empty one.
    let mut lines = raw[..plan.head_len as usize].split(|&b| b == b'\n').skip(1);
    for i in 0.. {
        let Some(line) = lines.next() else { break };
        if line.len() <= 1 {
            break; // "\r": the end of the head
        }
        if i < 64 && plan.drop & (1 << i) != 0 {
            continue;
        }
        out(line);
        out(b"\n");
    }
    out(b"X-Forwarded-For: ");
    if let Some((start, end)) = plan.forwarded_for {
        out(&raw[start as usize..end as usize]);
        out(b", ");
    }
    out(client_ip);
    out(b"\r\nX-Forwarded-Proto: http\r\n");
    if !http11 {
        out(b"Connection: close\r\n");
    }
    out(b"\r\n");
}

/// Response head for the client: the upstream's status and headers, minus
/// hop-by-hop ones (and Content-Length when a transfer coding frames the
/// body, and a repeated Content-Length), with our own Connection decision.
fn write_response_head(
    resp: &httparse::Response,
    http11: bool,
    keep_alive: bool,
    drop_length: bool,
    out: &mut dyn FnMut(&[u8]),
) {
    out(if http11 { b"HTTP/1.1 " } else { b"HTTP/1.0 " });
    let code = resp.code.unwrap_or(502);
    let digits = [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ];
    out(&digits);
    out(b" ");
    out(resp.reason.unwrap_or("").as_bytes());
    out(b"\r\n");
    let mut length_seen = drop_length;
    for h in resp.headers.iter() {
        if http::is_hop_by_hop(h.name)
            || (h.name.eq_ignore_ascii_case("content-length")
                && std::mem::replace(&mut length_seen, true))
        {
            continue;
        }
        out(h.name.as_bytes());
        out(b": ");
        out(h.value);
        out(b"\r\n");
    }
    match (keep_alive, http11) {
        (false, _) => out(b"Connection: close\r\n"),
        (true, false) => out(b"Connection: keep-alive\r\n"),
        (true, true) => {}
    }
    out(b"\r\n");
}

/// Looks for the end of a head (an empty line) in `s`'s receive buffer, in
/// the bytes not searched before (`scanned`, updated); its length when found.
///
/// The search runs in place in the ring. Only when the queued bytes wrap the
/// ring's end and the end is not in the first part are they copied into
/// `scratch` (the ring restarts at 0 whenever it empties, so this takes a
/// head that straddles the end of the ring behind pipelined bytes).
fn scan_head(s: &mut Socket, scratch: &mut [u8], scanned: &mut usize) -> Option<usize> {
    let queued = s.recv_queue();
    if queued <= *scanned {
        return None;
    }
    // Back up over the start of a line end split between two searches.
    let from = scanned.saturating_sub(3);
    let first = s.peek(queued).unwrap_or(&[]);
    let found = if first.len() == queued || from + 3 < first.len() {
        head_end(first, from)
    } else {
        None
    };
    if found.is_some() || first.len() == queued {
        *scanned = if found.is_some() { 0 } else { queued };
        return found;
    }
    let from = from.max(first.len().saturating_sub(3));
    let len = queued.min(scratch.len());
    let n = s.peek_slice(&mut scratch[..len]).unwrap_or(0);
    let found = head_end(&scratch[..n], from);
    *scanned = if found.is_some() { 0 } else { n };
    found
}

/// The end of a head in `buf`, searching from `from`: just past a line end
/// followed by an empty line (CRLF, or a bare LF, which httparse takes in
/// responses and the request checks refuse).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(at) = buf
        .get(i..)
        .and_then(|b| b.iter().position(|&b| b == b'\n'))
    {
        let lf = i + at;
        match &buf[lf + 1..] {
            [b'\n', ..] => return Some(lf + 2),
            [b'\r', b'\n', ..] => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

/// The first `len` received bytes of `s` (a head found by `scan_head`): in
/// place when contiguous in the ring, else copied into `scratch`.
fn head_bytes<'a>(s: &'a mut Socket, scratch: &'a mut [u8], len: usize) -> &'a [u8] {
    if s.peek(len).map_or(0, |b| b.len()) == len {
        return s.peek(len).unwrap_or(&[]);
    }
    let len = len.min(scratch.len()); // never short: `scan_head` found it within scratch
    let n = s.peek_slice(&mut scratch[..len]).unwrap_or(0);
    &scratch[..n]
}

/// The peer sent its FIN (or the connection is gone): nothing more will arrive.
fn peer_closed(s: &Socket) -> bool {
    matches!(
        s.state(),
        TcpState::CloseWait
            | TcpState::LastAck
            | TcpState::Closing
            | TcpState::TimeWait
            | TcpState::Closed
    )
}

/// Moves body bytes from `from` to `to` as `body` delimits them. Returns
/// (bytes moved, body complete); Err on a malformed chunked body.
fn relay_body(
    from: &mut Socket,
    to: &mut Socket,
    body: &mut Body,
) -> Result<(usize, bool), http::BadChunk> {
    let mut moved = 0;
    loop {
        let room = send_room(to);
        match body {
            Body::None => return Ok((moved, true)),
            Body::Length(0) => return Ok((moved, true)),
            _ if room == 0 => return Ok((moved, false)),
            Body::Length(left) => {
                let want = room.min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = from.recv(|b| {
                    let n = b.len().min(want);
                    let sent = to.send_slice(&b[..n]).unwrap_or(0);
                    (sent, sent)
                });
                match n {
                    Ok(0) | Err(_) => return Ok((moved, false)),
                    Ok(n) => {
                        *left -= n as u64;
                        moved += n;
                    }
                }
            }
            Body::Chunked(scanner) => {
                let mut result = Ok(false);
                let n = from.recv(|b| {
                    let lim = b.len().min(room);
                    match scanner.scan(&b[..lim]) {
                        Ok((n, done)) => {
                            let sent = to.send_slice(&b[..n]).unwrap_or(0);
                            debug_assert_eq!(sent, n, "room was checked");
                            result = Ok(done);
                            (sent, sent)
                        }
                        Err(e) => {
                            result = Err(e);
                            (0, 0)
                        }
                    }
                });
                let done = result?;
                let n = n.unwrap_or(0);
                moved += n;
                if done {
                    return Ok((moved, true));
                }
                if n == 0 {
                    return Ok((moved, false));
                }
            }
            Body::UntilClose => {
                let n = relay_stream(from, to);
                return Ok((moved + n, false));
            }
        }
    }
}

/// The peer sent FIN (or the connection is gone) and every byte was read.
fn at_eof(s: &Socket) -> bool {
    let opening = matches!(
        s.state(),
        TcpState::Listen | TcpState::SynSent | TcpState::SynReceived
    );
    !opening && !s.may_recv() && s.recv_queue() == 0
}

/// Moves whatever fits from `from`'s receive buffer to `to`'s send buffer.
fn relay_stream(from: &mut Socket, to: &mut Socket) -> usize {
    let mut moved = 0;
    loop {
        let room = send_room(to);
        if room == 0 {
            return moved;
        }
        let n = from
            .recv(|b| {
                let n = to.send_slice(&b[..b.len().min(room)]).unwrap_or(0);
                (n, n)
            })
            .unwrap_or(0);
        if n == 0 {
            return moved;
        }
        moved += n;
    }
}

fn error_page(status: u16) -> &'static [u8] {
    match status {
        400 => b"HTTP/1.1 400 Bad Request\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad request\n",
        405 => b"HTTP/1.1 405 Method Not Allowed\r\nServer: zproxy\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\nContent-Type: text/plain\r\nContent-Length: 23\r\nConnection: close\r\n\r\nCONNECT is not allowed\n",
        404 => b"HTTP/1.1 404 Not Found\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nno route\n\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 23\r\nConnection: close\r\n\r\nrequest head too large\n",
        501 => b"HTTP/1.1 501 Not Implemented\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 28\r\nConnection: close\r\n\r\ntransfer coding unsupported\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nno healthy upstream\n",
        408 => b"HTTP/1.1 408 Request Timeout\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nrequest head timeout",
        504 => b"HTTP/1.1 504 Gateway Timeout\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 17\r\nConnection: close\r\n\r\nupstream timeout\n",
        _ => b"HTTP/1.1 502 Bad Gateway\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 15\r\nConnection: close\r\n\r\nupstream error\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request head `raw` as it goes upstream from client 10.0.0.9.
    fn rewrite(raw: &[u8]) -> String {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let n = req.parse(raw).unwrap().unwrap();
        let plan = plan_request(&req, raw, n);
        let mut out = Vec::new();
        write_request_head(raw, &plan, b"10.0.0.9", true, &mut |b| {
            out.extend_from_slice(b)
        });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn head_end_is_found_from_any_resume_point() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        for from in 0..=24 {
            assert_eq!(head_end(head, from), Some(27), "from {from}");
        }
        assert_eq!(head_end(head, 25), None); // past the line end before the empty line
        assert_eq!(head_end(b"HTTP/1.1 200 OK\nA: b\n\n", 0), Some(22));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
    }

    #[test]
    fn error_pages_have_correct_lengths() {
        for status in [400, 404, 405, 408, 431, 501, 502, 503, 504] {
            let page = error_page(status);
            let text = std::str::from_utf8(page).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "status {status}");
        }
    }

    #[test]
    fn absolute_form_goes_upstream_in_origin_form() {
        for (target, origin) in [
            ("http://x/a?b", "/a?b"),
            ("http://x", "/"),
            ("http://x?q", "/?q"),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            let out = rewrite(raw.as_bytes());
            assert!(
                out.starts_with(&format!("GET {origin} HTTP/1.1\r\nHost: x\r\n")),
                "{out}"
            );
        }
    }

    #[test]
    fn request_head_is_rewritten() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            rewrite(raw),
            "GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn equal_content_lengths_go_on_as_one() {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            rewrite(raw),
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn response_head_gets_our_connection_header() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(raw).unwrap();
        let mut out = Vec::new();
        write_response_head(&resp, true, false, false, &mut |b| out.extend_from_slice(b));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn routes_match_host_and_prefix() {
        let r = Routes {
            routes: vec![
                (Some("api.example".into()), "/v1".into(), 1),
                (None, "/static".into(), 2),
            ],
            default: Some(0),
        };
        assert_eq!(r.find(Some(b"API.example:8080"), "/v1/x"), Some(1));
        assert_eq!(r.find(Some(b"other"), "/v1/x"), Some(0));
        assert_eq!(r.find(None, "/static/a.css"), Some(2));
        let no_default = Routes {
            routes: vec![(None, "/only".into(), 3)],
            default: None,
        };
        assert_eq!(no_default.find(None, "/other"), None);
    }
}
