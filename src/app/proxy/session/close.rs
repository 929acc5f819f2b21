//! How an exchange ends: the upstream lost or gone, no upstream to be had,
//! timeouts, graceful drain, error responses and the lingering close.

use crate::app::proxy::tls::Io as Socket;

use super::failure::error_page;
use super::relay::at_eof;
use super::{Cause, Mode, Session, State, Step};
use crate::app::proxy::ratelimit::too_many_requests;
use crate::app::proxy::tls::{dequeue, send_room};

/// A lingering close reads and drops at most this much client input...
const LINGER_BYTES: usize = 64 * 1024;
/// ...for at most this long, then aborts.
const LINGER_US: u64 = 3_000_000;

impl Session {
    /// The upstream connection died (reset, refused, timed out) while attached.
    /// `cause` says how: `Refused`, `Reset` or `Timeout`.
    pub fn upstream_lost(&mut self, c: &mut Socket, can_retry: bool, cause: Cause) -> Step {
        if let Some(step) = self.replay(cause) {
            return step; // lost on a reused connection before any response byte
        }
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
    pub(super) fn upstream_gone(&mut self, c: &mut Socket) -> Step {
        if self.relays() {
            if self.state == State::Tunnel {
                self.finish(None); // it closed cleanly: the tunnel ends
            }
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

    pub(super) fn refuse(&mut self, c: &mut Socket, status: u16) -> Step {
        self.respond_error(c, status, Cause::BadRequest);
        Step::Idle
    }

    pub(super) fn fail_upstream(&mut self, c: &mut Socket, status: u16) -> Step {
        self.respond_error(c, status, Cause::BadResponse);
        Step::ReleaseUpstream { reusable: false }
    }

    pub(super) fn abort_both(
        &mut self,
        c: &mut Socket,
        u: Option<&mut Socket>,
        cause: Cause,
    ) -> Step {
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
    pub(super) fn respond_error(&mut self, c: &mut Socket, status: u16, cause: Cause) {
        self.respond_page(c, error_page(status), status, cause);
    }

    /// The client is over its request rate: 429 with `Retry-After`.
    pub(super) fn rate_limited(&mut self, c: &mut Socket, retry_after_s: u64) -> Step {
        let mut buf = [0u8; 192];
        let len = too_many_requests(retry_after_s, &mut buf);
        self.respond_page(c, &buf[..len], 429, Cause::RateLimited);
        Step::Idle
    }

    fn respond_page(&mut self, c: &mut Socket, page: &[u8], status: u16, cause: Cause) {
        if send_room(c) >= page.len() {
            let _ = c.send_slice(page);
            self.rec.bytes_out += page.len() as u64;
        }
        self.fail(Some(status), cause);
        self.close_client(c);
    }

    /// Closes the client's connection for sending and lingers: whatever it
    /// still sends is read and dropped until its FIN, `LINGER_BYTES` or
    /// `LINGER_US`.
    pub(super) fn close_client(&mut self, c: &mut Socket) {
        self.release_head(c); // a request held for a replay is not lingering input
        c.close();
        self.scanned = 0;
        self.lingered = 0;
        self.state = State::Linger;
        self.deadline_us = self.now_us + LINGER_US;
        self.linger(c);
    }

    /// One round of the lingering close.
    pub(super) fn linger(&mut self, c: &mut Socket) {
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
}
