//! One transparent retry of a request lost on a reused (pooled) upstream
//! connection: the server may close an idle keep-alive connection just as
//! the request is written on it (nginx retries on a cached connection,
//! HAProxy's `retry-on conn-failure empty-response` with `http-reuse safe`).
//!
//! The request head is kept in the client's receive ring (not dequeued)
//! until the first response byte arrives, so a replay needs no copy of
//! its own. Only idempotent methods (RFC 9110 9.2.2) without a body are
//! replayed: a streamed body is gone once relayed.

use super::{Cause, Mode, Session, State, Step};
use crate::app::proxy::http::Body;
use crate::app::proxy::tls::{dequeue, Io as Socket};

/// The retry state of the current request.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Replay {
    /// The attached upstream came from the pool.
    pub reused: bool,
    /// This request was already retried once (its upstream must be fresh).
    pub retried: bool,
    /// Bytes of the request head kept at the front of the client's ring.
    pub held: usize,
    /// A retry happened that the engine has not counted yet.
    pub uncounted: bool,
}

/// RFC 9110 9.2.2: methods whose repetition has the effect of one request.
fn idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

impl Session {
    /// The request head just written on the upstream is kept for a replay:
    /// a reused connection, not retried yet, a replayable request.
    pub(super) fn hold_head(&mut self, head_len: usize) -> bool {
        let hold = self.mode == Mode::Http
            && self.replay.reused
            && !self.replay.retried
            && matches!(self.x.req_body, Body::None | Body::Length(0))
            && idempotent(self.rec.method.as_bytes());
        self.replay.held = if hold { head_len } else { 0 };
        hold
    }

    /// The response started: the held head can no longer be replayed.
    pub(super) fn release_head(&mut self, c: &mut Socket) {
        if self.replay.held > 0 {
            dequeue(c, self.replay.held);
            self.replay.held = 0;
        }
    }

    /// The upstream failed (`cause`) before any response byte: when the
    /// request is held, go back to waiting for a fresh upstream; the step
    /// the engine then takes (it releases the lost connection itself).
    pub(super) fn replay(&mut self, cause: Cause) -> Option<Step> {
        let before_response = matches!(self.state, State::RequestBody | State::ResponseHead)
            && !self.x.responded
            && self.x.interim == 0;
        if self.replay.held == 0 || !before_response {
            return None;
        }
        // The failed connection says nothing about its server: it may be
        // chosen again (on a fresh connection).
        if let Some((_, server)) = self.rec.upstream {
            self.tried &= !(1 << (server % 64));
        }
        self.last_upstream = Some(cause);
        self.replay.retried = true;
        self.replay.uncounted = true;
        self.state = State::WaitUpstream;
        self.deadline_us = 0;
        self.sent_at_us = 0;
        self.scanned = 0;
        Some(Step::NeedUpstream { group: self.group })
    }

    /// Waiting for the fresh upstream of a replay (the lost one was released).
    pub(super) fn replay_due(&self) -> bool {
        self.replay.retried && self.replay.held > 0
    }

    /// The current request was retried: its next upstream must be a new
    /// connection, not a pooled one.
    pub fn wants_fresh(&self) -> bool {
        self.replay.retried
    }

    /// A retry happened since the last call (for the engine's counter), once.
    pub fn take_retry(&mut self) -> bool {
        std::mem::take(&mut self.replay.uncounted)
    }
}
