//! The PROXY protocol in a session: reading the header a trusted load
//! balancer puts first (the real client then replaces the peer for the
//! access log, X-Forwarded-For, `source_hash` and the allow-list), and
//! writing one to an upstream before any client byte.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::app::proxy::tls::Io as Socket;

use super::relay::at_eof;
use super::{Session, State, Step};
use crate::app::proxy::client_limits::{OpenPerClient, Refused};
use crate::app::proxy::proxy_protocol::{self, AcceptProxy, Parsed, Version, HEADER_ROOM, V2_MAX};
use crate::app::proxy::ratelimit::RequestLimiter;
use crate::app::proxy::tls::{dequeue, send_room};

/// A session's PROXY protocol duties.
#[derive(Default)]
pub(super) struct Proxied {
    /// Where the client reached us (the header's destination).
    local: Option<SocketAddr>,
    /// The peer is a trusted proxy of this listener: its header comes first.
    accept: Option<Arc<AcceptProxy>>,
    /// The attached upstream still needs its header.
    send: Option<Version>,
    /// Why the real client was turned away (counted by the engine).
    refused: Option<Refused>,
    /// The key of the real client this connection counts against
    /// (released at close).
    counted: Option<IpAddr>,
}

impl Session {
    /// Where the client reached us, and - when the peer is one of the
    /// listener's trusted proxies - the policy its header is read under.
    pub fn set_proxying(&mut self, local: SocketAddr, accept: Option<Arc<AcceptProxy>>) {
        self.pp.local = Some(local);
        if accept.is_some() {
            self.pp.accept = accept;
            self.state = State::ReadProxy;
        }
    }

    /// A new upstream connection was attached: it owes the header first.
    pub fn send_proxy_header(&mut self, version: Option<Version>) {
        self.pp.send = version;
    }

    /// Why the real client was turned away, once.
    pub fn take_refusal(&mut self) -> Option<Refused> {
        self.pp.refused.take()
    }

    /// The real client counted in [`OpenPerClient`], once (at close).
    pub fn take_counted(&mut self) -> Option<IpAddr> {
        self.pp.counted.take()
    }

    /// `ReadProxy`: `None` once the header is read and the session moved
    /// on; else the step to return (waiting, or the connection was cut).
    pub(super) fn read_proxy_header(
        &mut self,
        c: &mut Socket,
        scratch: &mut [u8],
        (open, rates): (&mut OpenPerClient, &mut RequestLimiter),
        now_us: u64,
    ) -> Option<Step> {
        let room = V2_MAX.min(scratch.len());
        let n = c.peek_slice(&mut scratch[..room]).unwrap_or(0);
        match proxy_protocol::parse(&scratch[..n]) {
            Parsed::Incomplete if !at_eof(c) && c.recv_queue() < c.recv_capacity() => {
                if self.deadline_us == 0 && self.header_timeout_us != 0 {
                    self.deadline_us = now_us + self.header_timeout_us;
                }
                Some(Step::Idle)
            }
            // Broken, cut short, or not a header at all: a trusted peer
            // that sends no header is misconfigured; nothing is relayed.
            Parsed::Incomplete | Parsed::Invalid => Some(self.cut(c)),
            Parsed::Header { len, source } => {
                dequeue(c, len);
                self.deadline_us = 0;
                let policy = self.pp.accept.as_ref()?;
                let admitted = match source {
                    Some(src) => {
                        self.client_ip = src.ip();
                        self.rec.client = Some((self.client_ip, src.port()));
                        open.admit(policy, src.ip(), rates, now_us).map(Some)
                    }
                    // LOCAL (a health check) or UNKNOWN: the peer stays
                    // the client, and an allow-list cannot admit it.
                    None if policy.allow.is_empty() => Ok(None),
                    None => Err(Refused::Acl),
                };
                match admitted {
                    Ok(key) => self.pp.counted = key,
                    Err(why) => {
                        self.pp.refused = Some(why);
                        return Some(self.cut(c));
                    }
                }
                self.state = if self.mode == super::Mode::Tcp {
                    State::WaitUpstream
                } else {
                    State::ReadHead
                };
                None
            }
        }
    }

    /// Resets the client; its exchange ends unlogged as a failure.
    fn cut(&mut self, c: &mut Socket) -> Step {
        c.abort();
        self.state = State::Done;
        self.deadline_us = 0;
        self.rec_open = false;
        Step::Idle
    }

    /// Writes the header the attached upstream owes; false while its send
    /// ring has no room (a fresh connection always has).
    pub(super) fn write_proxy_header(&mut self, up: &mut Socket) -> bool {
        let (Some(version), Some(local)) = (self.pp.send, self.pp.local) else {
            return true;
        };
        let port = self.rec.client.map_or(0, |(_, p)| p);
        let mut buf = [0u8; HEADER_ROOM];
        let n = proxy_protocol::write(
            version,
            SocketAddr::new(self.client_ip, port),
            local,
            &mut buf,
        );
        if send_room(up) < n {
            return false;
        }
        let _ = up.send_slice(&buf[..n]);
        self.pp.send = None;
        true
    }
}
