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
//!
//! - [`head`]: finding, parsing and sending request and response heads.
//! - [`rewrite`]: the rewrite of a head for the other side.
//! - [`relay`]: body bytes from one socket to the other.
//! - [`tunnel`]: an upgraded connection (101) as a byte tunnel.
//! - [`close`]: how an exchange ends: failures, timeouts, lingering close.
//! - [`failure`]: failure causes and error pages.
//! - [`proxied`]: PROXY protocol headers read from clients, written to upstreams.
//! - [`retry`]: one replay of a request lost on a reused upstream connection.

mod close;
mod failure;
mod head;
mod proxied;
mod record;
mod relay;
mod retry;
mod rewrite;
mod tunnel;

use std::net::{IpAddr, SocketAddr};

use smoltcp::socket::tcp::State as TcpState;

pub use self::failure::{Cause, Failure};
use self::head::{head_bytes, parse_request, scan_head, HeadTooLarge};
use self::relay::{at_eof, peer_closed, relay_body, relay_both_ways};
use self::rewrite::Plan;
use crate::app::outcome::Outcome;
use crate::app::proxy::headers::{Headers, RequestIds};
use crate::app::proxy::http::{self, Body, Refusal};
use crate::app::proxy::ratelimit::{RequestLimiter, RouteLimit};
use crate::app::proxy::tls::{dequeue, Io as Socket};

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
    /// The exchange became a tunnel (101): both flows get this idle timeout.
    Tunnel {
        idle_us: u64,
    },
}

/// What the worker lends a session while it drives it.
pub struct Lent<'a> {
    pub routes: Option<&'a Routes>,
    pub limiter: &'a mut RequestLimiter,
    /// Open connections per real client (listeners that accept PROXY headers).
    pub open: &'a mut crate::app::proxy::client_limits::OpenPerClient,
    pub ids: &'a mut RequestIds,
    /// For heads that wrap the receive ring's end.
    pub scratch: &'a mut [u8],
}

/// Routing of one HTTP listener.
pub struct Routes {
    /// (lower-case host or any, path prefix, group)
    pub routes: Vec<(Option<String>, String, usize)>,
    pub default: Option<usize>,
    /// The request rate limit of each route, then of the default (empty: none).
    pub limits: Vec<Option<RouteLimit>>,
    /// Header rules (per route) and limits.
    pub headers: Headers,
    /// Which `Upgrade` requests go upstream, per route.
    pub upgrade: crate::app::proxy::upgrade::Policy,
    /// What each route's group hashes, then the default's (empty: only
    /// client addresses, nothing to read from a request).
    pub hash_keys: Vec<crate::config::HashKey>,
}

impl Routes {
    /// The request key a route found by `find_route` balances on.
    pub fn hash_key(&self, route: Option<u16>) -> Option<&crate::config::HashKey> {
        self.hash_keys
            .get(route.map_or(self.routes.len(), usize::from))
    }

    pub fn find(&self, host: Option<&[u8]>, path: &str) -> Option<usize> {
        self.find_route(host, path).map(|(_, group)| group)
    }

    /// The request rate limit of a route found by `find_route`.
    pub fn limit(&self, route: Option<u16>) -> Option<RouteLimit> {
        let index = route.map_or(self.routes.len(), usize::from);
        self.limits.get(index).copied().flatten()
    }

    /// The route (its index; `None` for the default) and group a request goes to.
    pub fn find_route(&self, host: Option<&[u8]>, path: &str) -> Option<(Option<u16>, usize)> {
        let host = host.map(|h| {
            // Drop the port; compare case-insensitively.
            let h = std::str::from_utf8(h).unwrap_or("").trim();
            h.rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(h, _)| h)
        });
        self.routes
            .iter()
            .position(|(rh, prefix, _)| {
                rh.as_deref()
                    .is_none_or(|rh| host.is_some_and(|h| h.eq_ignore_ascii_case(rh)))
                    && path.starts_with(prefix.as_str())
            })
            .map(|i| (Some(i as u16), self.routes[i].2))
            .or(self.default.map(|g| (None, g)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A trusted proxy's PROXY protocol header comes first (`proxied`).
    ReadProxy,
    ReadHead,
    WaitUpstream,
    RequestBody,
    ResponseHead,
    ResponseBody,
    /// TCP mode: bytes both ways.
    Relay,
    /// HTTP mode after a 101: bytes both ways until both sides closed.
    Tunnel,
    /// The client's side is closed for sending (after an error response or
    /// a response the client must not wait behind): what it still sends is
    /// read and dropped, so that its window stays open and it sees our
    /// response and FIN instead of a stalled connection (nginx's lingering
    /// close). Bounded by `LINGER_BYTES` and `LINGER_US`.
    Linger,
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
    /// Interim (1xx) responses received for this request.
    interim: u8,
    /// The final response came before the request body was all sent.
    early: bool,
    /// The request's `Upgrade` went upstream: a 101 opens a tunnel.
    upgrade: bool,
    plan: Plan,
    /// The route the request took (`None`: the default upstream), for its header rules.
    route: Option<u16>,
    /// Its `hash_key` value's hash, for `consistent_hash` balancing.
    request_key: Option<u64>,
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
            upgrade: false,
            plan: Plan::default(),
            route: None,
            request_key: None,
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
    /// A 101 went to the client: the connection is a tunnel now.
    Switched,
    /// The exchange failed; return this step.
    Failed(Step),
}

pub struct Session {
    pub mode: Mode,
    state: State,
    pub client_ip: IpAddr,
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
    /// The current exchange, as far as it got (`record`).
    rec: Outcome,
    /// `rec` started and has not ended.
    rec_open: bool,
    /// `rec` ended and waits for `take_outcome`.
    rec_done: bool,
    /// The attached upstream server (for `$upstream_addr`).
    upstream_addr: Option<SocketAddr>,
    pp: proxied::Proxied,
    /// The retry of a request lost on a reused upstream connection.
    replay: retry::Replay,
}

impl Session {
    /// The current request's `hash_key` hash, if its group hashes one.
    pub fn request_key(&self) -> Option<u64> {
        self.x.request_key
    }

    pub fn new(
        mode: Mode,
        client_ip: IpAddr,
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
            rec: Outcome::default(),
            rec_open: false,
            rec_done: false,
            upstream_addr: None,
            pp: proxied::Proxied::default(),
            replay: retry::Replay::default(),
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
            State::RequestBody
                | State::ResponseHead
                | State::ResponseBody
                | State::Relay
                | State::Tunnel
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
        if let Some(status) = status {
            self.rec.status = status;
        }
        self.finish(Some(cause));
    }

    /// Advances as far as the sockets allow.
    pub fn drive(
        &mut self,
        c: &mut Socket,
        mut u: Option<&mut Socket>,
        lent: Lent<'_>,
        now_us: u64,
    ) -> Step {
        let Lent {
            routes,
            limiter,
            open,
            ids,
            scratch,
        } = lent;
        self.now_us = now_us;
        loop {
            match self.state {
                State::Done => return Step::Idle,
                State::Linger => {
                    self.linger(c);
                    return Step::Idle;
                }
                State::ReadProxy => {
                    if let Some(step) = self.read_proxy_header(c, scratch, (open, limiter), now_us)
                    {
                        return step;
                    }
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
                    if !self.rec_open && c.recv_queue() > 0 {
                        self.begin(now_us);
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
                        let max = routes.map_or(usize::MAX, |r| r.headers.max_bytes);
                        if queued >= c.recv_capacity() || queued > max {
                            self.rec.bytes_in = queued as u64;
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
                    self.rec.bytes_in = head_len as u64;
                    // Numbered when routed: X-Request-Id and the access log agree.
                    self.rec.request_id = ids.take();
                    let parsed = {
                        let raw = head_bytes(c, scratch, head_len);
                        parse_request(raw, head_len, routes, self.draining, &mut self.rec)
                    };
                    let (x, group, limit) = match parsed {
                        Ok(r) => r,
                        Err(status) => return self.refuse(c, status),
                    };
                    if let Some(retry_s) = limiter.check(limit, self.client_ip, now_us) {
                        return self.rate_limited(c, retry_s);
                    }
                    self.x = x;
                    self.group = group;
                    self.tried = 0;
                    self.last_upstream = None;
                    (self.replay.retried, self.replay.held) = (false, 0);
                    self.state = State::WaitUpstream;
                    if u.is_none() {
                        return Step::NeedUpstream { group };
                    }
                }
                State::WaitUpstream => {
                    let Some(up) = u.as_deref_mut() else {
                        // TCP mode connects as soon as the client's SYN is in.
                        return if self.mode == Mode::Tcp && self.tried == 0 || self.replay_due() {
                            Step::NeedUpstream { group: self.group }
                        } else {
                            Step::Idle
                        };
                    };
                    if up.state() != TcpState::Established {
                        return Step::Idle; // connecting; failures come through `upstream_lost`
                    }
                    self.upstream_usable();
                    if !self.write_proxy_header(up) {
                        return Step::Idle;
                    }
                    if self.mode == Mode::Tcp {
                        self.state = State::Relay;
                        continue;
                    }
                    match self.send_request_head(c, up, scratch, routes) {
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
                    self.rec.bytes_in += moved as u64;
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
                        match self.response_head(c, up, scratch, now_us, routes) {
                            HeadStep::Wait => {}
                            HeadStep::Interim => continue,
                            HeadStep::Final => {
                                self.state = State::ResponseBody;
                                continue;
                            }
                            HeadStep::Switched => return self.start_tunnel(routes),
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
                    match self.response_head(c, up, scratch, now_us, routes) {
                        HeadStep::Wait => return Step::Idle,
                        HeadStep::Interim => continue,
                        HeadStep::Final => self.state = State::ResponseBody,
                        HeadStep::Switched => return self.start_tunnel(routes),
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
                            self.rec.bytes_out += moved as u64;
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
                    self.finish(None);
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
                    let (inward, outward) = relay_both_ways(c, up);
                    self.rec.bytes_in += inward;
                    self.rec.bytes_out += outward;
                    return Step::Idle;
                }
                State::Tunnel => {
                    let Some(up) = u.as_deref_mut() else {
                        return self.upstream_gone(c);
                    };
                    self.tunnel(c, up);
                    return Step::Idle;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_host_and_prefix() {
        let r = Routes {
            routes: vec![
                (Some("api.example".into()), "/v1".into(), 1),
                (None, "/static".into(), 2),
            ],
            default: Some(0),
            limits: Vec::new(),
            headers: Headers::default(),
            upgrade: Default::default(),
            hash_keys: Vec::new(),
        };
        assert_eq!(r.find(Some(b"API.example:8080"), "/v1/x"), Some(1));
        assert_eq!(r.find(Some(b"other"), "/v1/x"), Some(0));
        assert_eq!(r.find(None, "/static/a.css"), Some(2));
        let no_default = Routes {
            routes: vec![(None, "/only".into(), 3)],
            default: None,
            limits: Vec::new(),
            headers: Headers::default(),
            upgrade: Default::default(),
            hash_keys: Vec::new(),
        };
        assert_eq!(no_default.find(None, "/other"), None);
    }
}
