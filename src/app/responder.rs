//! The static responder: answers every HTTP/1.x request with one fixed
//! response. Request heads are parsed in place from the socket's receive
//! buffer (copied once into the worker's scratch for `httparse`) and checked
//! by the proxy's own rules ([`http::request_info`]: the same framing, the
//! same refusals); bodies (sized or chunked) are discarded. Keep-alive and
//! pipelining work; anything malformed gets its 4xx/5xx and the connection
//! is closed. A request head must arrive whole within the listener's header
//! timeout (408 otherwise), and a client that sends its FIN mid-head is owed
//! nothing: its connection closes at once.

use smoltcp::socket::tcp;

use super::outcome::Sink;
use super::proxy::http::{self, Body, ChunkedScanner, Refusal, MAX_HEADERS};
use super::proxy::session::Cause;
use super::{dequeue, send_room};
use crate::config::StaticResponse;

/// The prebuilt responses of one listener.
pub struct Responder {
    status: u16,
    keep_alive: Box<[u8]>,
    close: Box<[u8]>,
    bad_request: Box<[u8]>,
    not_allowed: Box<[u8]>,
    timeout: Box<[u8]>,
    too_large: Box<[u8]>,
    not_implemented: Box<[u8]>,
}

/// Per-connection state.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResponderState {
    /// The request body still to skip.
    discard: Discard,
    /// A response with `Connection: close` went out, or the connection is
    /// being closed: nothing more is read.
    closing: bool,
    /// At least one request was answered on this connection.
    served: bool,
    /// The appliance is shutting down: no more keep-alive.
    draining: bool,
    /// How long a request head may take to arrive whole (0: no limit).
    header_timeout_us: u64,
    /// When the partial head waiting now times out (0: none waiting).
    deadline_us: u64,
    /// When the first bytes of the request being read arrived (0: none yet).
    start_us: u64,
}

impl ResponderState {
    /// A new connection's state; `header_timeout_us` bounds how long a
    /// request head may take to arrive whole (0: no limit).
    pub fn new(header_timeout_us: u64) -> Self {
        Self {
            header_timeout_us,
            ..Self::default()
        }
    }

    /// When [`Responder::timed_out`] is due: a partial request head is
    /// waiting and must be complete by then.
    pub fn deadline_us(&self) -> Option<u64> {
        (self.deadline_us != 0).then_some(self.deadline_us)
    }
}

/// A request body being skipped.
#[derive(Debug, Default, Clone, Copy)]
enum Discard {
    #[default]
    None,
    /// Bytes still to skip.
    Length(u64),
    Chunked(ChunkedScanner),
}

/// What one run of the responder did (for counters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub requests: u32,
    /// Requests refused (4xx/5xx), heads that timed out, broken bodies.
    pub bad_requests: u32,
}

impl Responder {
    pub fn new(cfg: &StaticResponse) -> Self {
        let build = |status: u16, reason: &str, ctype: &str, body: &str, close: bool| {
            format!(
                "HTTP/1.1 {status} {reason}\r\nServer: zproxy\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
                body.len(),
                if close { "close" } else { "keep-alive" }
            )
            .into_bytes()
            .into_boxed_slice()
        };
        let error =
            |status: u16, reason: &str, body: &str| build(status, reason, "text/plain", body, true);
        let reason = reason_phrase(cfg.status);
        Self {
            status: cfg.status,
            keep_alive: build(cfg.status, reason, &cfg.content_type, &cfg.body, false),
            close: build(cfg.status, reason, &cfg.content_type, &cfg.body, true),
            bad_request: error(400, "Bad Request", "bad request\n"),
            not_allowed: error(405, "Method Not Allowed", "method not allowed\n"),
            timeout: error(408, "Request Timeout", "request head timeout\n"),
            too_large: error(
                431,
                "Request Header Fields Too Large",
                "request head too large\n",
            ),
            not_implemented: error(501, "Not Implemented", "transfer coding not implemented\n"),
        }
    }

    fn refusal(&self, r: Refusal) -> &[u8] {
        match r {
            Refusal::BadRequest => &self.bad_request,
            Refusal::HeadTooLarge => &self.too_large,
            Refusal::MethodNotAllowed => &self.not_allowed,
            Refusal::NotImplemented => &self.not_implemented,
        }
    }

    /// Serves what the socket holds. `scratch` must be at least as large as
    /// the socket's receive buffer. Arms the state's deadline while a partial
    /// request head waits (see [`ResponderState::deadline_us`]).
    pub fn serve(
        &self,
        st: &mut ResponderState,
        sock: &mut tcp::Socket,
        scratch: &mut [u8],
        now_us: u64,
        log: &mut Sink,
    ) -> Served {
        let mut served = Served::default();
        // A complete head waits for room in the send buffer: a response is owed.
        let mut owed = false;
        loop {
            if st.closing {
                return served;
            }
            match &mut st.discard {
                Discard::None => {}
                Discard::Length(left) => {
                    *left -= dequeue(sock, usize::try_from(*left).unwrap_or(usize::MAX)) as u64;
                    if *left > 0 {
                        break;
                    }
                    st.discard = Discard::None;
                }
                Discard::Chunked(scanner) => {
                    let queued = match sock.peek_slice(scratch) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    match scanner.scan(&scratch[..queued]) {
                        Ok((n, done)) => {
                            dequeue(sock, n);
                            if done {
                                st.discard = Discard::None;
                            }
                            continue;
                        }
                        Err(http::BadChunk) => {
                            // Its response already went out (and was logged): no other is owed.
                            served.bad_requests += 1;
                            self.close(st, sock);
                            break;
                        }
                    }
                }
            }
            let queued = match sock.peek_slice(scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if st.start_us == 0 {
                st.start_us = now_us;
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let head_len = match req.parse(&scratch[..queued]) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    if queued >= sock.recv_capacity() {
                        self.fail(st, sock, &self.too_large, &mut served, log, now_us);
                    } else if st.deadline_us == 0 && st.header_timeout_us != 0 {
                        // Slowloris: the whole head must arrive within the header timeout.
                        st.deadline_us = now_us + st.header_timeout_us;
                    }
                    break;
                }
                Err(httparse::Error::TooManyHeaders) => {
                    self.fail(st, sock, &self.too_large, &mut served, log, now_us);
                    break;
                }
                Err(_) => {
                    self.fail(st, sock, &self.bad_request, &mut served, log, now_us);
                    break;
                }
            };
            st.deadline_us = 0;
            log.rec.bytes_in = head_len as u64;
            log.rec.set_request(
                req.method.unwrap_or("").as_bytes(),
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("host"))
                    .map(|h| h.value),
                req.path.unwrap_or("").as_bytes(),
            );
            let info = match http::request_info(&req, &scratch[..queued], head_len) {
                Ok(info) => info,
                Err(r) => {
                    self.fail(st, sock, self.refusal(r), &mut served, log, now_us);
                    break;
                }
            };
            let keep_alive = info.keep_alive && !st.draining;
            let response: &[u8] = if keep_alive {
                &self.keep_alive
            } else {
                &self.close
            };
            if send_room(sock) < response.len() {
                // Wait for the peer to ACK; the head stays queued until then.
                owed = true;
                break;
            }
            dequeue(sock, head_len);
            st.discard = match info.body {
                Body::None => Discard::None,
                Body::Length(n) => Discard::Length(n),
                Body::Chunked(scanner) => Discard::Chunked(scanner),
                // Requests are never delimited by the close (request_info).
                Body::UntilClose => Discard::Length(u64::MAX),
            };
            let _ = sock.send_slice(response);
            if let Body::Length(n) = info.body {
                log.rec.bytes_in += n; // discarded, but read
            }
            log.emit(st.start_us, now_us, self.status, response.len(), None);
            st.start_us = 0;
            served.requests += 1;
            st.served = true;
            if !keep_alive {
                self.close(st, sock);
            }
        }
        // The client finished sending and everything it sent in full was
        // answered (what is left is a partial head or body: nothing is owed
        // for it): close our side.
        if !st.closing && !owed && peer_finished(sock) {
            self.close(st, sock);
        }
        served
    }

    /// The state's deadline passed with the request head still partial:
    /// answers 408 and closes (counted as a bad request).
    pub fn timed_out(
        &self,
        st: &mut ResponderState,
        sock: &mut tcp::Socket,
        now_us: u64,
        log: &mut Sink,
    ) -> Served {
        let mut served = Served::default();
        st.deadline_us = 0;
        if !st.closing {
            self.fail(st, sock, &self.timeout, &mut served, log, now_us);
        }
        served
    }

    /// Graceful shutdown: close a connection that waits for its next request.
    /// A connection that has not sent its first request yet gets it
    /// answered (with `Connection: close`): it may be on the wire.
    pub fn drain(&self, st: &mut ResponderState, sock: &mut tcp::Socket) {
        st.draining = true;
        if !st.closing && sock.recv_queue() == 0 && st.served {
            self.close(st, sock);
        }
    }

    fn close(&self, st: &mut ResponderState, sock: &mut tcp::Socket) {
        st.closing = true;
        st.deadline_us = 0;
        sock.close();
    }

    fn fail(
        &self,
        st: &mut ResponderState,
        sock: &mut tcp::Socket,
        response: &[u8],
        served: &mut Served,
        log: &mut Sink,
        now_us: u64,
    ) {
        let mut sent = 0;
        if send_room(sock) >= response.len() {
            sent = sock.send_slice(response).unwrap_or(0);
        }
        let start_us = if st.start_us == 0 {
            now_us
        } else {
            st.start_us
        };
        log.emit(
            start_us,
            now_us,
            status_of(response),
            sent,
            Some(Cause::BadRequest),
        );
        st.start_us = 0;
        served.bad_requests += 1;
        self.close(st, sock);
    }
}

/// The status of one of our prebuilt responses ("HTTP/1.1 NNN ...").
fn status_of(response: &[u8]) -> u16 {
    response
        .get(9..12)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// The client sent its FIN (what it sent before may still be queued).
fn peer_finished(sock: &tcp::Socket) -> bool {
    matches!(
        sock.state(),
        tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait
    )
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
    use smoltcp::phy::{Loopback, Medium};
    use smoltcp::time::Instant;
    use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

    use super::*;
    use crate::app::outcome::{Outcome, Outcomes};

    const BUF: usize = 4096;
    const TIMEOUT_US: u64 = 10_000_000;

    fn responder() -> Responder {
        Responder::new(&StaticResponse {
            status: 200,
            body: "hi\n".into(),
            content_type: "text/plain".into(),
        })
    }

    /// A client socket connected to a responder's socket over smoltcp's
    /// loopback device, all in memory; time only moves when a test says.
    struct Pair {
        iface: Interface,
        dev: Loopback,
        sockets: SocketSet<'static>,
        server: SocketHandle,
        client: SocketHandle,
        responder: Responder,
        st: ResponderState,
        scratch: Vec<u8>,
        now_us: u64,
        /// What the responder logged.
        log: Outcomes,
    }

    impl Pair {
        fn new() -> Pair {
            let mut dev = Loopback::new(Medium::Ethernet);
            let cfg = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
            let mut iface = Interface::new(cfg, &mut dev, Instant::ZERO);
            iface.update_ip_addrs(|a| {
                a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap();
            });
            let socket = || {
                let mut s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; BUF]),
                    tcp::SocketBuffer::new(vec![0; BUF]),
                );
                s.set_ack_delay(None);
                s.set_nagle_enabled(false);
                s
            };
            let mut sockets = SocketSet::new(vec![]);
            let mut server = socket();
            server.listen(80).unwrap();
            let server = sockets.add(server);
            let mut client = socket();
            client
                .connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), 80), 49152)
                .unwrap();
            let client = sockets.add(client);
            let mut p = Pair {
                iface,
                dev,
                sockets,
                server,
                client,
                responder: responder(),
                st: ResponderState::new(TIMEOUT_US),
                scratch: vec![0; BUF],
                now_us: 1_000_000,
                log: Outcomes::new(),
            };
            p.poll();
            assert_eq!(p.server().state(), tcp::State::Established);
            p
        }

        fn poll(&mut self) {
            for _ in 0..8 {
                let now = Instant::from_micros(self.now_us as i64);
                self.iface.poll(now, &mut self.dev, &mut self.sockets);
            }
        }

        fn server(&mut self) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut(self.server)
        }

        fn client(&mut self) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut(self.client)
        }

        /// The client sends `data`; the responder runs on what arrived.
        fn send(&mut self, data: &[u8]) -> Served {
            assert_eq!(self.client().send_slice(data), Ok(data.len()));
            self.poll();
            self.serve()
        }

        fn serve(&mut self) -> Served {
            let sock = self.sockets.get_mut::<tcp::Socket>(self.server);
            let mut sink = Sink {
                rec: Outcome::default(),
                out: &mut self.log,
            };
            let served = self.responder.serve(
                &mut self.st,
                sock,
                &mut self.scratch,
                self.now_us,
                &mut sink,
            );
            self.poll();
            served
        }

        /// What the client received so far.
        fn received(&mut self) -> String {
            let mut out = Vec::new();
            while let Ok(n) = self.client().recv(|b| {
                out.extend_from_slice(b);
                (b.len(), b.len())
            }) {
                if n == 0 {
                    break;
                }
            }
            String::from_utf8(out).unwrap()
        }

        /// The responder closed its side (the client got its FIN).
        fn closed_by_server(&mut self) -> bool {
            self.client().state() == tcp::State::CloseWait
        }
    }

    fn responses(text: &str) -> Vec<&str> {
        text.split("HTTP/1.1 ").skip(1).collect()
    }

    #[test]
    fn each_answer_is_logged_with_its_request() {
        let mut p = Pair::new();
        let first = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        p.send(first);
        p.now_us += 1_000;
        p.send(b"GET /q?x HTTP/1.1\r\nHost: b\r\n\r\n");
        p.send(b"GET / HTTP/1.0 x\r\n\r\n");
        let text = p.received();
        let log: Vec<Outcome> = (0..p.log.len()).map(|i| p.log.get(i)).collect();
        let got: Vec<_> = log
            .iter()
            .map(|o| {
                (
                    String::from_utf8_lossy(o.method.as_bytes()).into_owned(),
                    String::from_utf8_lossy(o.host.as_bytes()).into_owned(),
                    String::from_utf8_lossy(o.path.as_bytes()).into_owned(),
                    o.status,
                    o.cause,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("POST".into(), "a".into(), "/up".into(), 200, None),
                ("GET".into(), "b".into(), "/q?x".into(), 200, None),
                (
                    "".into(),
                    "".into(),
                    "".into(),
                    400,
                    Some(Cause::BadRequest)
                ),
            ]
        );
        assert_eq!(log[0].bytes_in, first.len() as u64);
        let sent: u64 = log.iter().map(|o| o.bytes_out).sum();
        assert_eq!(sent, text.len() as u64);
        assert_eq!(log[1].start_us, 1_001_000);
    }

    #[test]
    fn answers_keep_alive_pipelined_and_discards_bodies() {
        let mut p = Pair::new();
        let s = p.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
              POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
              GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        assert_eq!(
            s,
            Served {
                requests: 3,
                bad_requests: 0
            }
        );
        let text = p.received();
        let r = responses(&text);
        assert_eq!(r.len(), 3, "{text}");
        assert!(
            r.iter().all(|r| r.starts_with("200 OK\r\n")
                && r.contains("Connection: keep-alive\r\n")
                && r.ends_with("\r\n\r\nhi\n")),
            "{text}"
        );
        assert!(!p.closed_by_server());
        // A body split over segments, then the next request.
        assert_eq!(
            p.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nab")
                .requests,
            1
        );
        assert_eq!(p.send(b"cdef").requests, 0);
        assert_eq!(
            p.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .requests,
            1
        );
        let text = p.received();
        assert_eq!(responses(&text).len(), 2, "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(p.closed_by_server());
    }

    #[test]
    fn framing_is_the_proxys() {
        let refused: &[(&[u8], &str)] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", "400"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "400"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "400"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\xc2\xa0\r\n\r\nhello", "400"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n folded\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\n\r\n", "400"),
            (b"GARBAGE\r\n\r\n", "400"),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "405"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
        ];
        for (raw, status) in refused {
            let mut p = Pair::new();
            let s = p.send(raw);
            let text = p.received();
            let what = String::from_utf8_lossy(raw);
            assert_eq!(
                s,
                Served {
                    requests: 0,
                    bad_requests: 1
                },
                "{what}"
            );
            assert!(
                text.starts_with(&format!("HTTP/1.1 {status} ")),
                "{what}: {text}"
            );
            assert!(text.contains("Connection: close\r\n"), "{what}: {text}");
            assert!(p.closed_by_server(), "{what}");
        }
        // Too many header lines: 431, as the proxy answers.
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            raw.extend(format!("X-{i}: y\r\n").bytes());
        }
        raw.extend(b"\r\n");
        let mut p = Pair::new();
        assert_eq!(p.send(&raw).bad_requests, 1);
        assert!(p.received().starts_with("HTTP/1.1 431 "));
        // A broken chunked body after an answered head: closed, nothing more said.
        let mut p = Pair::new();
        let s = p.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert_eq!(
            s,
            Served {
                requests: 1,
                bad_requests: 1
            }
        );
        assert_eq!(responses(&p.received()).len(), 1);
        assert!(p.closed_by_server());
    }

    #[test]
    fn a_partial_head_must_complete_within_the_header_timeout() {
        let mut p = Pair::new();
        assert_eq!(p.st.deadline_us(), None);
        let start = p.now_us;
        assert_eq!(p.send(b"GET / HTTP/1.1\r\nHo").requests, 0);
        assert_eq!(p.st.deadline_us(), Some(start + TIMEOUT_US));
        // More of it later does not push the deadline back.
        p.now_us += 1_000_000;
        p.send(b"st: a\r\n");
        assert_eq!(p.st.deadline_us(), Some(start + TIMEOUT_US));
        // Complete: answered, no deadline while the connection idles.
        assert_eq!(p.send(b"\r\n").requests, 1);
        assert_eq!(p.st.deadline_us(), None);
        assert!(p.received().starts_with("HTTP/1.1 200 OK\r\n"));
        // The next head is slow: 408 and closed when the deadline passes.
        p.now_us += 60_000_000;
        p.send(b"GET / HTTP/1.1\r\n");
        assert_eq!(p.st.deadline_us(), Some(p.now_us + TIMEOUT_US));
        p.now_us += TIMEOUT_US;
        let sock = p.sockets.get_mut::<tcp::Socket>(p.server);
        let mut sink = Sink {
            rec: Outcome::default(),
            out: &mut p.log,
        };
        let s = p.responder.timed_out(&mut p.st, sock, p.now_us, &mut sink);
        assert_eq!(
            s,
            Served {
                requests: 0,
                bad_requests: 1
            }
        );
        assert_eq!(p.st.deadline_us(), None);
        p.poll();
        let text = p.received();
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{text}"
        );
        assert!(p.closed_by_server());
        // Nothing more is read or answered.
        assert_eq!(p.serve(), Served::default());
    }

    #[test]
    fn no_header_timeout_when_none_is_configured() {
        let mut p = Pair::new();
        p.st = ResponderState::new(0);
        p.send(b"GET / HTTP/1.1\r\n");
        assert_eq!(p.st.deadline_us(), None);
        assert!(!p.closed_by_server());
    }

    #[test]
    fn a_fin_after_a_partial_head_closes_at_once() {
        let mut p = Pair::new();
        p.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
        assert!(p.st.deadline_us().is_some());
        p.client().close();
        p.poll();
        assert_eq!(p.server().state(), tcp::State::CloseWait);
        assert_eq!(p.serve(), Served::default());
        assert_eq!(p.st.deadline_us(), None);
        assert_eq!(p.received(), "");
        // Both sides closed: the client saw our FIN.
        assert!(matches!(
            p.client().state(),
            tcp::State::TimeWait | tcp::State::Closed
        ));
        // Mid-body likewise; a whole request before the FIN is still answered.
        let mut p = Pair::new();
        p.client()
            .send_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc")
            .unwrap();
        p.client().close();
        p.poll();
        assert_eq!(p.serve().requests, 2);
        assert_eq!(responses(&p.received()).len(), 2);
        assert!(matches!(
            p.client().state(),
            tcp::State::TimeWait | tcp::State::Closed
        ));
    }

    #[test]
    fn drain_closes_idle_keep_alive_connections() {
        let mut p = Pair::new();
        assert_eq!(p.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").requests, 1);
        let sock = p.sockets.get_mut::<tcp::Socket>(p.server);
        p.responder.drain(&mut p.st, sock);
        p.poll();
        assert_eq!(responses(&p.received()).len(), 1);
        assert!(p.closed_by_server());
    }

    #[test]
    fn responses_are_well_formed() {
        let r = responder();
        for page in [
            &r.keep_alive,
            &r.close,
            &r.bad_request,
            &r.not_allowed,
            &r.timeout,
            &r.too_large,
            &r.not_implemented,
        ] {
            let text = std::str::from_utf8(page).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 "), "{head}");
            assert!(
                head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
                "{head}"
            );
        }
        let text = std::str::from_utf8(&r.close).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nhi\n"));
    }
}
