//! Request and response heads off the receive buffers: finding a head's
//! end in place in the ring, parsing and routing a request head, and the
//! session steps that send the request head upstream and the response head
//! to the client.

use std::io::Write as _;

use crate::app::proxy::tls::Io as Socket;

use super::relay::peer_closed;
use super::rewrite::{plan_request, write_request_head, write_response_head};
use super::{Cause, Exchange, HeadStep, Routes, Session, State, Step};
use crate::app::outcome::Outcome;
use crate::app::proxy::headers::{Rules, Vars, NO_RULES};
use crate::app::proxy::http::{self, Body, Refusal, MAX_HEADERS};
use crate::app::proxy::ratelimit::RouteLimit;
use crate::app::proxy::tls::{dequeue, send_room};

/// At most this many interim (1xx) responses per request.
const MAX_INTERIM: u8 = 8;

impl Session {
    /// Reads a response head off the upstream and writes it, rewritten, to
    /// the client: parsed once, in place in the upstream's receive buffer
    /// (copied into `scratch` only when it wraps the ring's end).
    pub(super) fn response_head(
        &mut self,
        c: &mut Socket,
        up: &mut Socket,
        scratch: &mut [u8],
        now_us: u64,
        routes: Option<&Routes>,
    ) -> HeadStep {
        if up.recv_queue() > 0 {
            self.release_head(c);
        } else if peer_closed(up) && self.replay(Cause::Reset).is_some() {
            // Closed before any response byte: replayed on a fresh connection.
            up.abort();
            return HeadStep::Failed(Step::ReleaseUpstream { reusable: false });
        }
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
        // 101 only answers an Upgrade that went upstream, once the whole
        // request is (the new protocol starts after it).
        let switch_ok = self.x.upgrade && self.state == State::ResponseHead;
        let info = match info {
            Ok(info) if info.status != 101 || switch_ok => info,
            _ => return HeadStep::Failed(self.fail_upstream(c, 502)),
        };
        let switched = info.status == 101;
        let interim = (100..200).contains(&info.status) && !switched;
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
        // Rules shape the final response; interim ones (100 Continue) go as they came.
        let rules = if interim {
            &Rules::EMPTY
        } else {
            &self.rules(routes).1
        };
        let vars = self.vars();
        let drop_length = info.drop_length;
        // Measured first, then written: it goes in whole or waits.
        let write = |out: &mut dyn FnMut(&[u8])| {
            write_response_head(
                &resp,
                http11,
                keep_alive,
                switched,
                drop_length,
                rules,
                &vars,
                out,
            )
        };
        let mut len = 0;
        write(&mut |b| len += b.len());
        if len > c.send_capacity() {
            return HeadStep::Failed(self.fail_upstream(c, 502)); // can never fit: the head is too large
        }
        if send_room(c) < len {
            // No room yet: next time the search starts just before the end.
            self.scanned = head_len.saturating_sub(1);
            return HeadStep::Wait;
        }
        write(&mut |b| {
            let _ = c.send_slice(b);
        });
        self.responded(info.status, len);
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
        if switched {
            return HeadStep::Switched;
        }
        self.deadline_us = now_us + self.read_timeout_us;
        self.x.resp_body = info.body;
        self.x.upstream_reusable = info.reusable && !self.x.early;
        HeadStep::Final
    }

    /// Writes the rewritten request head into the upstream's send buffer and
    /// takes it off the client's receive buffer. Ok(false) when it does not
    /// fit yet; Err when it never will (larger than the send buffer).
    pub(super) fn send_request_head(
        &mut self,
        c: &mut Socket,
        up: &mut Socket,
        scratch: &mut [u8],
        routes: Option<&Routes>,
    ) -> Result<bool, HeadTooLarge> {
        // Room for any IPv6 address in RFC 5952 form (at most 45 bytes).
        let mut ip = [0u8; 48];
        let ip_len = {
            let mut cur = std::io::Cursor::new(&mut ip[..]);
            let _ = write!(cur, "{}", self.client_ip);
            cur.position() as usize
        };
        let client_ip = &ip[..ip_len];
        let plan = self.x.plan;
        let http11 = self.x.http11;
        let rules = &self.rules(routes).0;
        let vars = self.vars();
        {
            let raw = head_bytes(c, scratch, plan.head_len as usize);
            let write = |out: &mut dyn FnMut(&[u8])| {
                write_request_head(raw, &plan, client_ip, http11, rules, &vars, out)
            };
            let mut len = 0;
            write(&mut |b| len += b.len());
            if len > up.send_capacity() {
                return Err(HeadTooLarge);
            }
            if send_room(up) < len {
                return Ok(false);
            }
            write(&mut |b| {
                let _ = up.send_slice(b);
            });
        }
        // Kept in the ring for a replay until the response starts (`retry`).
        if !self.hold_head(plan.head_len as usize) {
            dequeue(c, plan.head_len as usize);
        }
        Ok(true)
    }
}

impl Session {
    /// The (request, response) header rules of the current request.
    fn rules<'r>(&self, routes: Option<&'r Routes>) -> &'r (Rules, Rules) {
        routes.map_or(&NO_RULES, |r| r.headers.rules(self.x.route))
    }

    /// What header rule variables render for the current request.
    fn vars(&self) -> Vars {
        Vars {
            client: self.rec.client,
            request_id: self.rec.request_id,
            upstream: self.upstream_addr,
            https: self.rec.tls.is_some(),
        }
    }
}

/// The rewritten request head is larger than the upstream socket's send buffer.
pub(super) struct HeadTooLarge;

/// Parses and checks a complete request head (`raw`, `head_len` bytes) and
/// routes it; the exchange and the group, or the status to refuse it with.
pub(super) fn parse_request(
    raw: &[u8],
    head_len: usize,
    routes: Option<&Routes>,
    draining: bool,
    rec: &mut Outcome,
) -> Result<(Exchange, usize, Option<RouteLimit>), u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) if n == head_len => {}
        Ok(_) => return Err(400),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    }
    let headers = routes.map(|r| &r.headers);
    if headers.is_some_and(|h| req.headers.len() > h.max_count || head_len > h.max_bytes) {
        return Err(Refusal::HeadTooLarge.status());
    }
    let host_header = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value);
    let method = req.method.unwrap_or("").as_bytes();
    rec.set_request(method, host_header, req.path.unwrap_or("").as_bytes());
    let info = http::request_info(&req, raw, head_len).map_err(Refusal::status)?;
    let target =
        http::request_target(req.path.unwrap_or("")).expect("request_info checked the target");
    let host = target.authority.map(str::as_bytes).or(host_header);
    if let Some(h) = host {
        rec.host.set(h);
    }
    let (route, group) = routes
        .and_then(|r| r.find_route(host, target.route_path()))
        .ok_or(404u16)?;
    let upgrade = routes.is_some_and(|r| r.upgrade.allows(&req, route.map(usize::from)));
    let mut x = Exchange::new();
    x.http11 = info.http11;
    x.client_keep_alive = info.keep_alive && !draining;
    x.is_head = info.is_head;
    x.req_body = info.body;
    x.upgrade = upgrade;
    let h = headers.expect("a route was found");
    x.plan = plan_request(
        &req,
        raw,
        head_len,
        &h.rules(route).0,
        h.trust_request_id,
        upgrade,
    );
    x.route = route;
    x.request_key = routes
        .and_then(|r| r.hash_key(route))
        .and_then(|k| crate::app::proxy::hash_key::request_key(k, req.headers));
    let limit = routes.and_then(|r| r.limit(route));
    Ok((x, group, limit))
}

/// Looks for the end of a head (an empty line) in `s`'s receive buffer, in
/// the bytes not searched before (`scanned`, updated); its length when found.
///
/// The search runs in place in the ring. Only when the queued bytes wrap the
/// ring's end and the end is not in the first part are they copied into
/// `scratch` (the ring restarts at 0 whenever it empties, so this takes a
/// head that straddles the end of the ring behind pipelined bytes).
pub(super) fn scan_head(s: &mut Socket, scratch: &mut [u8], scanned: &mut usize) -> Option<usize> {
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
pub(super) fn head_bytes<'a>(s: &'a mut Socket, scratch: &'a mut [u8], len: usize) -> &'a [u8] {
    if s.peek(len).map_or(0, |b| b.len()) == len {
        return s.peek(len).unwrap_or(&[]);
    }
    let len = len.min(scratch.len()); // never short: `scan_head` found it within scratch
    let n = s.peek_slice(&mut scratch[..len]).unwrap_or(0);
    &scratch[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
