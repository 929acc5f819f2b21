//! One proxied client connection: the state machine that moves a request
//! from the client socket to an upstream socket and the response back.
//!
//! Bytes go straight from one smoltcp socket's receive buffer into the other
//! socket's send buffer (`recv` closure + `send_slice`): a forwarded byte is
//! copied three times - frame into the receive ring (smoltcp ingress), ring
//! to ring (the relay), send ring into a frame (smoltcp egress). smoltcp owns
//! its rings, so the first and last copies cannot be avoided, and two sockets
//! cannot share one ring, so neither can the middle one. Request and response
//! heads are copied once more into the worker's scratch buffer to be parsed.

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
    Done,
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
    /// Errors answered or caused since the worker last took the count.
    errors: u32,
    /// When the current request head went to the upstream (µs), 0 if not.
    sent_at_us: u64,
    /// Longest a request head may take to arrive (µs; 0: no limit).
    header_timeout_us: u64,
    /// The appliance is shutting down: no more keep-alive.
    draining: bool,
    /// Time from request sent to response head received, for the worker to
    /// attribute to the upstream server (taken with `take_response_time`).
    response_us: Option<u64>,
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
            x: Exchange {
                http11: true,
                client_keep_alive: true,
                is_head: false,
                req_body: Body::None,
                resp_body: Body::None,
                upstream_reusable: false,
                responded: false,
            },
            deadline_us: 0,
            read_timeout_us,
            requests: 0,
            errors: 0,
            sent_at_us: 0,
            response_us: None,
            header_timeout_us,
            draining: false,
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

    /// The errors since the last call (for the worker's `proxy_errors`).
    pub fn take_errors(&mut self) -> u32 {
        std::mem::take(&mut self.errors)
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
        loop {
            match self.state {
                State::Done => return Step::Idle,
                State::ReadHead => {
                    if at_eof(c) {
                        c.close();
                        self.state = State::Done;
                        return Step::Idle;
                    }
                    let n = c.peek_slice(scratch).unwrap_or(0);
                    if n == 0 {
                        return Step::Idle;
                    }
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut req = httparse::Request::new(&mut headers);
                    let head_len = match req.parse(&scratch[..n]) {
                        Ok(httparse::Status::Complete(len)) => len,
                        Ok(httparse::Status::Partial) if n >= c.recv_capacity() => {
                            return self.refuse(c, Refusal::HeadTooLarge.status());
                        }
                        Ok(httparse::Status::Partial) => {
                            // Slowloris: the whole head must arrive within the header timeout.
                            if self.deadline_us == 0 && self.header_timeout_us != 0 {
                                self.deadline_us = now_us + self.header_timeout_us;
                            }
                            return Step::Idle;
                        }
                        Err(httparse::Error::TooManyHeaders) => return self.refuse(c, 431),
                        Err(_) => return self.refuse(c, 400),
                    };
                    self.deadline_us = 0;
                    let info = match http::request_info(&req, &scratch[..n], head_len) {
                        Ok(info) => info,
                        Err(r) => return self.refuse(c, r.status()),
                    };
                    let target = http::request_target(req.path.unwrap_or(""))
                        .expect("request_info checked the target");
                    let host = target.authority.map(str::as_bytes).or_else(|| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("host"))
                            .map(|h| h.value)
                    });
                    let Some(group) = routes.and_then(|r| r.find(host, target.route_path())) else {
                        return self.refuse(c, 404);
                    };
                    self.group = group;
                    self.tried = 0;
                    self.x = Exchange {
                        http11: info.http11,
                        client_keep_alive: info.keep_alive && !self.draining,
                        is_head: info.is_head,
                        req_body: info.body,
                        resp_body: Body::None,
                        upstream_reusable: false,
                        responded: false,
                    };
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
                            self.respond_error(c, 431);
                            return Step::ReleaseUpstream { reusable: true };
                        }
                    }
                    self.deadline_us = now_us + self.read_timeout_us;
                    self.sent_at_us = now_us;
                    self.state = State::RequestBody;
                }
                State::RequestBody => {
                    let Some(up) = u.as_deref_mut() else {
                        return self.upstream_gone(c);
                    };
                    let mut body = self.x.req_body;
                    let (moved, done) = match relay_body(c, up, &mut body) {
                        Ok(r) => r,
                        Err(http::BadChunk) => return self.abort_both(c, Some(up)),
                    };
                    self.x.req_body = body;
                    if moved > 0 {
                        self.deadline_us = now_us + self.read_timeout_us;
                    }
                    if done {
                        self.state = State::ResponseHead;
                        continue;
                    }
                    if at_eof(c) {
                        return self.abort_both(c, Some(up)); // client gave up mid-body
                    }
                    return Step::Idle;
                }
                State::ResponseHead => {
                    let Some(up) = u.as_deref_mut() else {
                        return self.upstream_gone(c);
                    };
                    let n = up.peek_slice(scratch).unwrap_or(0);
                    if n == 0 {
                        if at_eof(up) {
                            return self.fail_upstream(c, 502);
                        }
                        return Step::Idle;
                    }
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut resp = httparse::Response::new(&mut headers);
                    let head_len = match resp.parse(&scratch[..n]) {
                        Ok(httparse::Status::Complete(len)) => len,
                        Ok(httparse::Status::Partial) if n < up.recv_capacity() && !at_eof(up) => {
                            return Step::Idle
                        }
                        _ => return self.fail_upstream(c, 502),
                    };
                    let Ok(info) = http::response_info(&resp, head_len, self.x.is_head) else {
                        return self.fail_upstream(c, 502);
                    };
                    if matches!(info.body, Body::UntilClose) {
                        // The body ends when the upstream closes: so must the client connection.
                        self.x.client_keep_alive = false;
                    }
                    let interim = (100..200).contains(&info.status);
                    let mut len = 0;
                    write_response_head(
                        &resp,
                        self.x.http11,
                        self.x.client_keep_alive || interim,
                        &mut |b| len += b.len(),
                    );
                    if len > c.send_capacity() {
                        return self.fail_upstream(c, 502); // can never fit: the head is too large
                    }
                    if send_room(c) < len {
                        return Step::Idle;
                    }
                    write_response_head(
                        &resp,
                        self.x.http11,
                        self.x.client_keep_alive || interim,
                        &mut |b| {
                            let _ = c.send_slice(b);
                        },
                    );
                    dequeue(up, head_len);
                    self.x.responded = true;
                    if self.sent_at_us != 0 {
                        self.response_us = Some(now_us - self.sent_at_us);
                        self.sent_at_us = 0;
                    }
                    self.deadline_us = now_us + self.read_timeout_us;
                    if interim {
                        continue; // 100 Continue and friends: the real response follows
                    }
                    self.x.resp_body = info.body;
                    self.x.upstream_reusable = info.reusable;
                    self.state = State::ResponseBody;
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
                        Err(http::BadChunk) => return self.abort_both(c, Some(up)),
                    };
                    if !done {
                        if at_eof(up) {
                            return self.abort_both(c, Some(up)); // truncated by the upstream
                        }
                        return Step::Idle;
                    }
                    self.requests += 1;
                    self.deadline_us = 0;
                    let reusable = self.x.upstream_reusable && !matches!(body, Body::UntilClose);
                    if self.x.client_keep_alive {
                        self.state = State::ReadHead;
                    } else {
                        c.close();
                        self.state = State::Done;
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

    /// The upstream connection died (reset, refused, timed out) while attached.
    pub fn upstream_lost(&mut self, c: &mut Socket, can_retry: bool) -> Step {
        match self.state {
            State::WaitUpstream if can_retry => Step::NeedUpstream { group: self.group },
            State::WaitUpstream if self.mode == Mode::Tcp => {
                c.abort();
                self.state = State::Done;
                Step::Idle
            }
            State::WaitUpstream | State::RequestBody | State::ResponseHead if !self.x.responded => {
                self.respond_error(c, 502);
                Step::Idle
            }
            State::Relay => {
                // The upstream reset: so does the client.
                c.abort();
                self.state = State::Done;
                Step::Idle
            }
            State::Done | State::ReadHead => Step::Idle,
            _ => {
                c.abort();
                self.state = State::Done;
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
            }
            State::Done | State::Relay => {}
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
            self.errors += 1;
        }
        self.state = State::Done;
        self.deadline_us = 0;
        Step::Idle
    }

    /// No upstream could be had: 502 when servers were tried and failed,
    /// 503 when none was up (or no local port or flow slot was free).
    pub fn no_upstream(&mut self, c: &mut Socket) {
        if self.mode == Mode::Tcp {
            c.abort();
            self.state = State::Done;
        } else {
            self.respond_error(c, if self.tried != 0 { 502 } else { 503 });
        }
    }

    /// The read timeout fired: 504 if nothing was answered yet, else give up.
    pub fn timed_out(&mut self, c: &mut Socket, u: Option<&mut Socket>) -> Step {
        self.deadline_us = 0;
        if self.state == State::ReadHead {
            self.respond_error(c, 408); // the head did not arrive in time
            return Step::Idle;
        }
        if !self.x.responded && matches!(self.state, State::RequestBody | State::ResponseHead) {
            self.respond_error(c, 504);
            if let Some(u) = u {
                u.abort();
            }
            return Step::ReleaseUpstream { reusable: false };
        }
        self.abort_both(c, u)
    }

    fn refuse(&mut self, c: &mut Socket, status: u16) -> Step {
        self.respond_error(c, status);
        Step::Idle
    }

    fn fail_upstream(&mut self, c: &mut Socket, status: u16) -> Step {
        self.respond_error(c, status);
        Step::ReleaseUpstream { reusable: false }
    }

    fn abort_both(&mut self, c: &mut Socket, u: Option<&mut Socket>) -> Step {
        c.abort();
        if let Some(u) = u {
            u.abort();
        }
        self.state = State::Done;
        self.deadline_us = 0;
        self.errors += 1;
        Step::ReleaseUpstream { reusable: false }
    }

    /// A complete error response, then close.
    fn respond_error(&mut self, c: &mut Socket, status: u16) {
        let page = error_page(status);
        if send_room(c) >= page.len() {
            let _ = c.send_slice(page);
        }
        c.close();
        self.errors += 1;
        self.deadline_us = 0;
        self.state = State::Done;
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
        let n = c.peek_slice(scratch).unwrap_or(0);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = req.parse(&scratch[..n]) else {
            unreachable!("the head parsed in ReadHead is still queued")
        };
        let mut ip = [0u8; 16];
        let ip_len = {
            let mut cur = std::io::Cursor::new(&mut ip[..]);
            let _ = write!(cur, "{}", self.client_ip);
            cur.position() as usize
        };
        let client_ip = &ip[..ip_len];
        let http11 = self.x.http11;
        let mut len = 0;
        write_request_head(&req, client_ip, http11, &mut |b| len += b.len());
        if len > up.send_capacity() {
            return Err(HeadTooLarge);
        }
        if send_room(up) < len {
            return Ok(false);
        }
        write_request_head(&req, client_ip, http11, &mut |b| {
            let _ = up.send_slice(b);
        });
        dequeue(c, head_len);
        Ok(true)
    }
}

/// The rewritten request head is larger than the upstream socket's send buffer.
struct HeadTooLarge;

/// Request head for the upstream: same method, the target in origin form,
/// HTTP/1.1 (1.0 clients stay 1.0 and close), hop-by-hop headers dropped,
/// X-Forwarded-For and X-Forwarded-Proto set.
fn write_request_head(
    req: &httparse::Request,
    client_ip: &[u8],
    http11: bool,
    out: &mut dyn FnMut(&[u8]),
) {
    out(req.method.unwrap_or("GET").as_bytes());
    out(b" ");
    let target = http::request_target(req.path.unwrap_or("/")).expect("a checked target");
    if target.route_path() != target.rest {
        out(b"/"); // "http://h" or "http://h?q": origin form starts with '/'
    }
    out(target.rest.as_bytes());
    out(if http11 {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    });
    let mut forwarded_for: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(h.value);
            continue;
        }
        if http::is_hop_by_hop(h.name) || h.name.eq_ignore_ascii_case("x-forwarded-proto") {
            continue;
        }
        out(h.name.as_bytes());
        out(b": ");
        out(h.value);
        out(b"\r\n");
    }
    out(b"X-Forwarded-For: ");
    if let Some(prev) = forwarded_for {
        out(prev);
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
/// hop-by-hop ones, with our own Connection decision.
fn write_response_head(
    resp: &httparse::Response,
    http11: bool,
    keep_alive: bool,
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
    for h in resp.headers.iter() {
        if http::is_hop_by_hop(h.name) {
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
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(raw.as_bytes()).unwrap();
            let mut out = Vec::new();
            write_request_head(&req, b"10.0.0.9", true, &mut |b| out.extend_from_slice(b));
            let out = String::from_utf8(out).unwrap();
            assert!(
                out.starts_with(&format!("GET {origin} HTTP/1.1\r\nHost: x\r\n")),
                "{out}"
            );
        }
    }

    #[test]
    fn request_head_is_rewritten() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: */*\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(raw).unwrap();
        let mut out = Vec::new();
        write_request_head(&req, b"10.0.0.9", true, &mut |b| out.extend_from_slice(b));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn response_head_gets_our_connection_header() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(raw).unwrap();
        let mut out = Vec::new();
        write_response_head(&resp, true, false, &mut |b| out.extend_from_slice(b));
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
