//! The generator's side of one connection: send the pre-built request, read
//! the response, say how it ended. It works on any smoltcp socket (the world
//! lends it one from the stack; the tests one from a loopback interface).

use smoltcp::socket::tcp;
use zproxy_bench::FailureKind;

use crate::http::{Response, ResponseReader};

/// What every request of a run is, built once.
pub struct Plan {
    /// Head and body, sent as they are.
    pub request: Vec<u8>,
    pub keep_alive: bool,
    /// One request per connection, then it stays open, idle (`--hold-open`).
    pub hold_open: bool,
    /// Body bytes every response must have.
    pub expect_len: u64,
    /// Check every body byte against the pattern (costs a compare per byte).
    pub verify: bool,
    /// A request not answered in this long fails (`timeout`).
    pub timeout_us: u64,
}

/// One connection's request in flight.
pub struct Client {
    reader: ResponseReader,
    sent: usize,
    /// When the current request began (its latency is taken from here).
    pub started_us: u64,
    /// Whether the current request began inside the measured window.
    pub measured: bool,
}

impl Client {
    pub fn new(plan: &Plan) -> Client {
        Client {
            reader: ResponseReader::new(plan.expect_len, plan.verify),
            sent: 0,
            started_us: 0,
            measured: false,
        }
    }

    /// Starts a request (a fresh connection's first, or the next on a kept one).
    pub fn begin(&mut self, now_us: u64, measured: bool) {
        self.reader.reset();
        self.sent = 0;
        self.started_us = now_us;
        self.measured = measured;
    }

    /// Response bytes of the current request taken so far.
    pub fn received(&self) -> u64 {
        self.reader.received
    }

    /// Request bytes of the current request sent so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// Sends what the socket takes of the request and reads what arrived:
    /// the response's outcome once it is complete, broken, truncated by the
    /// peer's close, or late.
    pub fn step(&mut self, sock: &mut tcp::Socket, plan: &Plan, now_us: u64) -> Option<Response> {
        if self.sent < plan.request.len() && sock.can_send() {
            if let Ok(n) = sock.send_slice(&plan.request[self.sent..]) {
                self.sent += n;
            }
        }
        while sock.can_recv() {
            let reader = &mut self.reader;
            match sock.recv(|buf| reader.feed(buf)) {
                Ok(Some(out)) => return Some(out),
                Ok(None) => {}
                Err(_) => break,
            }
        }
        let peer_closed = matches!(
            sock.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
        );
        if peer_closed {
            return self.reader.eof();
        }
        if now_us >= self.started_us + plan.timeout_us {
            return Some(Response::Failed(FailureKind::Timeout));
        }
        None
    }
}
