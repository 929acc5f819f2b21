//! The session's record of its current exchange (an HTTP request, or the
//! whole `tcp` connection), handed to the engine as an [`Outcome`] when it
//! ends.

use std::net::{IpAddr, SocketAddr};

use super::{Mode, Session, State};
use crate::app::outcome::{Kind, Outcome};

impl Session {
    /// Where the client is and which listener took it (kept for every
    /// request); a `tcp` connection's exchange starts with its accept.
    pub fn set_origin(&mut self, listener: usize, client: (IpAddr, u16), now_us: u64) {
        self.rec.listener = listener as u16;
        self.rec.client = Some(client);
        self.rec.kind = match self.mode {
            Mode::Tcp => Kind::Tcp,
            Mode::Http => Kind::Http,
        };
        self.now_us = now_us;
        if self.mode == Mode::Tcp {
            self.begin(now_us);
        }
    }

    /// The client's TLS finished its handshake: (version, cipher suite).
    pub fn set_tls(&mut self, params: Option<(&'static str, &'static str)>) {
        self.rec.tls = params;
    }

    /// The time of the engine's current call (for calls that take none).
    pub fn set_now(&mut self, now_us: u64) {
        self.now_us = now_us;
    }

    /// A new exchange starts now (its first bytes arrived, or the `tcp` accept).
    pub(super) fn begin(&mut self, now_us: u64) {
        self.rec = Outcome {
            kind: self.rec.kind,
            listener: self.rec.listener,
            client: self.rec.client,
            tls: self.rec.tls,
            start_us: now_us,
            ..Outcome::default()
        };
        self.rec_open = true;
    }

    /// An upstream connection of (`group`, `server` at `addr`) was attached;
    /// a pooled one took no time to connect.
    pub fn attached(&mut self, group: usize, server: usize, addr: SocketAddr, pooled: bool) {
        self.upstream_addr = Some(addr);
        self.rec.upstream = Some((group as u16, server as u16));
        self.rec.connect_us = pooled.then_some(0);
        self.replay.reused = pooled;
    }

    /// The attached upstream is established (first seen now).
    pub(super) fn upstream_usable(&mut self) {
        if self.rec.connect_us.is_none() {
            self.rec.connect_us = Some(self.now_us.saturating_sub(self.rec.start_us));
        }
    }

    /// A response head (interim or final, `status`) went to the client.
    pub(super) fn responded(&mut self, status: u16, head_len: usize) {
        self.rec.bytes_out += head_len as u64;
        if self.rec.response_us.is_none() {
            self.rec.response_us = Some(self.now_us.saturating_sub(self.rec.start_us));
        }
        if !(100..200).contains(&status) || status == 101 {
            self.rec.status = status;
        }
    }

    /// The exchange ended (`cause` when it failed); the engine takes it next.
    pub(super) fn finish(&mut self, cause: Option<super::Cause>) {
        if !self.rec_open {
            return;
        }
        self.rec_open = false;
        self.rec.cause = self.rec.cause.or(cause);
        self.rec.total_us = self.now_us.saturating_sub(self.rec.start_us);
        self.rec_done = true;
    }

    /// The client connection is gone: a `tcp` connection ends, and so does
    /// an HTTP request still in flight (the client aborted it).
    pub fn client_gone(&mut self, now_us: u64) {
        self.now_us = now_us;
        match self.mode {
            Mode::Tcp => self.finish(None),
            Mode::Http => {
                let in_flight = matches!(
                    self.state,
                    State::WaitUpstream
                        | State::RequestBody
                        | State::ResponseHead
                        | State::ResponseBody
                        | State::Tunnel
                );
                if in_flight {
                    self.finish(Some(super::Cause::ClientAbort));
                }
            }
        }
    }

    /// The exchange that ended since the last call, once.
    pub fn take_outcome(&mut self) -> Option<Outcome> {
        if !self.rec_done {
            return None;
        }
        self.rec_done = false;
        Some(self.rec)
    }
}
